'use strict';
// The stack the adapter tests run against: the fake Slack as a process
// (`fake_slack` example) and the real `tokenkeep dev` binary, on loopback, on a
// fresh data dir. Paths from TOKENKEEP_BIN / FAKE_SLACK_BIN (clients/test.sh
// sets them), else target/debug of the repository.

const { spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const SIGNING_SECRET = 'adapter-test-signing-secret';
const CLIENT_ID = '1111.2222';
const CLIENT_SECRET = 'fake-client-secret';
// Tokens live 90 s and the refresh window is 1 minute: a token is due 30 s after issue.
const TOKEN_LIFETIME_SECS = 90;
const DUE_AFTER_SECS = 30;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

function sign(body, { timestamp, secret = SIGNING_SECRET } = {}) {
  const ts = String(timestamp ?? Math.floor(Date.now() / 1000));
  const mac = crypto.createHmac('sha256', secret).update(`v0:${ts}:${body}`).digest('hex');
  return { 'x-slack-request-timestamp': ts, 'x-slack-signature': `v0=${mac}`, 'content-type': 'application/json' };
}

const fingerprint = (token) => crypto.createHash('sha256').update(token).digest('hex').slice(0, 8);

function get(url, headers = {}) {
  return new Promise((resolve, reject) => {
    http.get(url, { headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res));
    }).on('error', reject);
  });
}

async function waitForPort(port, child, logPath) {
  const deadline = Date.now() + 30000;
  for (;;) {
    const up = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.end(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (up) return;
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`tokenkeep dev did not start; see ${logPath}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

class Stack {
  static async start() {
    const stack = new Stack();
    stack.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tokenkeep-bolt-js-'));
    const fakeBin = process.env.FAKE_SLACK_BIN || path.join(ROOT, 'target', 'debug', 'examples', 'fake_slack');
    const tkBin = process.env.TOKENKEEP_BIN || path.join(ROOT, 'target', 'debug', 'tokenkeep');
    stack.fake = spawn(fakeBin, [], {
      env: { ...process.env, FAKE_SLACK_TOKEN_LIFETIME_SECS: String(TOKEN_LIFETIME_SECS) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    const line = await new Promise((resolve, reject) => {
      readline.createInterface({ input: stack.fake.stdout }).once('line', resolve);
      stack.fake.once('exit', () => reject(new Error('fake_slack exited')));
    });
    const urls = JSON.parse(line);
    stack.apiUrl = urls.api_url;
    stack.controlUrl = urls.control_url;

    const port = await freePort();
    stack.url = `http://127.0.0.1:${port}`;
    stack.logPath = path.join(stack.dataDir, 'dev.log');
    const log = fs.openSync(stack.logPath, 'w');
    // The sweep is pushed out so only requests refresh (the tests count refreshes).
    stack.dev = spawn(tkBin, ['dev', '--listen', `127.0.0.1:${port}`, '--sweep-every', '3600'], {
      env: {
        ...process.env,
        SLACK_CLIENT_ID: CLIENT_ID,
        SLACK_CLIENT_SECRET: CLIENT_SECRET,
        SLACK_SIGNING_SECRET: SIGNING_SECRET,
        SLACK_API_URL: stack.apiUrl,
        TOKENKEEP_STORE: 'embedded',
        TOKENKEEP_DATA_DIR: stack.dataDir,
        TOKENKEEP_REFRESH_WINDOW_MINUTES: '1',
        RUST_LOG: process.env.RUST_LOG || 'warn',
      },
      stdio: ['ignore', log, log],
    });
    // Whatever happens to the test run, don't leave the two processes behind.
    process.once('exit', () => {
      for (const child of [stack.dev, stack.fake]) if (child.exitCode === null) child.kill('SIGKILL');
    });
    await waitForPort(port, stack.dev, stack.logPath);
    stack.devKey = fs.readFileSync(path.join(stack.dataDir, 'token-service.key'), 'ascii').trim();
    stack.jobsKey = fs.readFileSync(path.join(stack.dataDir, 'token-service-jobs.key'), 'ascii').trim();
    return stack;
  }

  async close() {
    const exited = (child) => new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)));
    this.dev.kill('SIGTERM');
    await exited(this.dev);
    this.fake.stdin.end();
    await exited(this.fake);
    fs.rmSync(this.dataDir, { recursive: true, force: true });
  }

  async control(method, p, body) {
    const res = await fetch(this.controlUrl + p, {
      method,
      headers: { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return res.json();
  }

  addCode(code, teamId, extra = {}) {
    return this.control('POST', '/control/install', { code, team_id: teamId, ...extra });
  }

  /**
   * The Bolt app's posts only: `tokenkeep dev` runs the example app, whose
   * install hook DMs the installing user (a channel named by a user id).
   */
  async posts(teamId) {
    const { posts } = await this.control('GET', '/control/state');
    const channelPosts = posts.filter((p) => !p.channel.startsWith('U'));
    return teamId === undefined ? channelPosts : channelPosts.filter((p) => p.team_id === teamId);
  }

  async refreshes(teamId) {
    return (await this.control('GET', `/control/state?teams=${teamId}`)).refreshes_by_team[teamId];
  }

  /** Installs through tokenkeep's own OAuth (install page, then Slack's redirect back). */
  async installViaTokenkeep(teamId) {
    const code = `tk-code-${teamId}`;
    await this.addCode(code, teamId);
    const start = await get(`${this.url}/slack/install`);
    const state = new URL(start.headers.location).searchParams.get('state');
    const cookie = start.headers['set-cookie'][0].split(';')[0];
    const done = await get(`${this.url}/slack/oauth_redirect?code=${code}&state=${state}`, { cookie });
    if (done.statusCode !== 200) throw new Error(`oauth_redirect answered ${done.statusCode}`);
  }

  rawStoreBytes() {
    return Buffer.concat(
      fs.readdirSync(this.dataDir).filter((n) => n.startsWith('store.db')).map((n) => fs.readFileSync(path.join(this.dataDir, n))),
    );
  }
}

function mention(teamId, { user = 'U0001', text = 'hello' } = {}) {
  return JSON.stringify({
    type: 'event_callback',
    team_id: teamId,
    api_app_id: 'A0001',
    event_id: `Ev${process.hrtime.bigint()}`,
    event_time: Math.floor(Date.now() / 1000),
    authorizations: [{ team_id: teamId, user_id: 'UBOT', is_bot: true, is_enterprise_install: false }],
    event: { type: 'app_mention', user, text: `<@UBOT> ${text}`, channel: 'C1', ts: '1.2' },
  });
}

function uninstalled(teamId) {
  return JSON.stringify({
    type: 'event_callback',
    team_id: teamId,
    api_app_id: 'A0001',
    event_id: `EvU${process.hrtime.bigint()}`,
    event_time: Math.floor(Date.now() / 1000),
    event: { type: 'app_uninstalled' },
  });
}

module.exports = { Stack, sign, fingerprint, mention, uninstalled, freePort, get, SIGNING_SECRET, CLIENT_ID, CLIENT_SECRET, DUE_AFTER_SECS };
