'use strict';
// Bolt for JavaScript (@slack/bolt + @slack/oauth from npm) on tokenkeep: the
// real framework and its HTTPReceiver on a loopback port, the real `tokenkeep
// dev` binary and the fake Slack. Listeners answer with `say`, i.e.
// chat.postMessage on the fake Slack, which records whose token each post used.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');
const { App, HTTPReceiver, LogLevel } = require('@slack/bolt');

const {
  TokenkeepClient,
  TokenkeepError,
  NotInstalledError,
  captureRawRequest,
  wrapReceiver,
  tokenkeepAuthorize,
  tokenkeepInstallationStore,
} = require('..');
const s = require('./stack');

const ROTATING_TEAM = 'TJROT1';
let stack;
let rotatingInstalledAt;
const apps = [];

const client = (key) => new TokenkeepClient(stack.url, { devKey: key ?? stack.devKey, timeoutMs: 5000, maxAttempts: 2 });
const quiet = { debug() {}, info() {}, warn() {}, error() {}, setLevel() {}, getLevel() { return LogLevel.ERROR; }, setName() {} };

/** A Bolt app on its own port; `verify: false` turns Bolt's own signature check off (tokenkeep's still holds). */
async function boltApp({ verify = true, installationStore } = {}) {
  const port = await s.freePort();
  const saved = [];
  const installer = installationStore
    ? {
        clientId: s.CLIENT_ID,
        clientSecret: s.CLIENT_SECRET,
        stateSecret: 'state-secret-for-tests',
        scopes: ['chat:write', 'app_mentions:read'],
        installationStore: {
          async storeInstallation(i, l) {
            saved.push(i);
            return installationStore.storeInstallation(i, l);
          },
          fetchInstallation: (q, l) => installationStore.fetchInstallation(q, l),
          deleteInstallation: (q, l) => installationStore.deleteInstallation(q, l),
        },
        installerOptions: { directInstall: true, clientOptions: { slackApiUrl: `${stack.apiUrl}/` } },
      }
    : {};
  const tk = client();
  const receiver = new HTTPReceiver({
    signingSecret: s.SIGNING_SECRET,
    signatureVerification: verify,
    processBeforeResponse: true,
    customPropertiesExtractor: captureRawRequest,
    logger: quiet,
    ...installer,
  });
  const app = new App({
    receiver: wrapReceiver(receiver, tk, quiet),
    authorize: tokenkeepAuthorize(tk),
    clientOptions: { slackApiUrl: `${stack.apiUrl}/` },
    logger: quiet,
  });
  app.event('app_mention', async ({ say, context }) => {
    await say(`hi from ${context.teamId}`);
  });
  app.event('app_uninstalled', async () => {});
  await app.start(port);
  apps.push(app);
  return { url: `http://127.0.0.1:${port}`, saved };
}

async function deliver(app, body, headers = s.sign(body)) {
  const res = await fetch(`${app.url}/slack/events`, { method: 'POST', headers, body });
  await res.text();
  return res.status;
}

before(async () => {
  stack = await s.Stack.start();
  // Installed first so its token is due when the rotation test (last) runs.
  await stack.installViaTokenkeep(ROTATING_TEAM);
  rotatingInstalledAt = Date.now();
});

after(async () => {
  for (const app of apps) await app.stop();
  await stack.close();
});

test('an app_mention is answered with the tenant\'s token from tokenkeep', async () => {
  await stack.installViaTokenkeep('TJMEN1');
  const app = await boltApp();
  assert.equal(await deliver(app, s.mention('TJMEN1')), 200);
  const posts = await stack.posts('TJMEN1');
  assert.equal(posts.length, 1);
  assert.equal(posts[0].text, 'hi from TJMEN1');
});

test('a request signed for tenant A cannot obtain B\'s token', async () => {
  await stack.installViaTokenkeep('TJA1');
  await stack.installViaTokenkeep('TJB1');
  const app = await boltApp({ verify: false });
  const body = s.mention('TJA1');
  const headers = s.sign(body);
  const moved = body.replaceAll('"TJA1"', '"TJB1"');
  await deliver(app, moved, headers);
  assert.deepEqual(await stack.posts('TJB1'), [], 'no post with B\'s token');
  await assert.rejects(
    client().authorize({ body: moved, timestamp: headers['x-slack-request-timestamp'], signature: headers['x-slack-signature'] }),
    (e) => e instanceof TokenkeepError && e.code === 'invalid_slack_signature',
  );
  await deliver(app, body, headers);
  assert.deepEqual((await stack.posts('TJA1')).map((p) => p.text), ['hi from TJA1']);
});

test('forged, stale or replayed requests obtain nothing', async () => {
  await stack.installViaTokenkeep('TJFORGE1');
  const app = await boltApp({ verify: false });
  const body = s.mention('TJFORGE1');
  const now = Math.floor(Date.now() / 1000);
  for (const [what, headers] of [
    ['forged', s.sign(body, { secret: 'not-the-signing-secret' })],
    ['stale', s.sign(body, { timestamp: now - 360 })],
    ['replayed outside the window', s.sign(body, { timestamp: now + 360 })],
  ]) {
    await deliver(app, body, headers);
    assert.deepEqual(await stack.posts('TJFORGE1'), [], what);
    await assert.rejects(
      client().authorize({ body, timestamp: headers['x-slack-request-timestamp'], signature: headers['x-slack-signature'] }),
      (e) => e.code === 'invalid_slack_signature' && !/xox/.test(e.message),
      what,
    );
  }
});

test('an unknown tenant gets Bolt\'s own no-installation behaviour', async () => {
  const app = await boltApp();
  // Bolt's HTTPReceiver answers an AuthorizationError with 401 and runs no listener.
  assert.equal(await deliver(app, s.mention('TJNOPE1')), 401);
  assert.deepEqual(await stack.posts('TJNOPE1'), []);
  const body = s.mention('TJNOPE1');
  const h = s.sign(body);
  await assert.rejects(
    client().authorize({ body, timestamp: h['x-slack-request-timestamp'], signature: h['x-slack-signature'] }),
    NotInstalledError,
  );
  await assert.rejects(
    tokenkeepInstallationStore(client(stack.jobsKey), { namedTenant: true }).fetchInstallation({ teamId: 'TJNOPE1' }),
    NotInstalledError,
  );
});

test('unauthenticated calls are refused and write nothing', async () => {
  const stranger = new TokenkeepClient(stack.url, { devKey: '0'.repeat(64), maxAttempts: 1 });
  const body = s.mention(ROTATING_TEAM);
  const h = s.sign(body);
  await assert.rejects(
    stranger.authorize({ body, timestamp: h['x-slack-request-timestamp'], signature: h['x-slack-signature'] }),
    (e) => e.status === 401 && e.code === 'unauthorized',
  );
  const store = tokenkeepInstallationStore(stranger);
  await assert.rejects(
    store.storeInstallation({ team: { id: 'TJSTRANGE1' }, bot: { token: 'xoxb-stranger', scopes: ['chat:write'] } }),
    (e) => e.status === 401 && !/xoxb-stranger/.test(e.message + util.inspect(e)),
  );
  await assert.rejects(
    tokenkeepInstallationStore(client(stack.jobsKey), { namedTenant: true }).fetchInstallation({ teamId: 'TJSTRANGE1' }),
    NotInstalledError,
  );
  assert.ok(!util.inspect(stranger).includes('0'.repeat(64)), 'the key is not in the client\'s inspect output');
});

test('after app_uninstalled the Bolt app gets no token', async () => {
  await stack.installViaTokenkeep('TJUN1');
  const app = await boltApp();
  await deliver(app, s.mention('TJUN1'));
  assert.equal((await stack.posts('TJUN1')).length, 1);
  assert.equal(await deliver(app, s.uninstalled('TJUN1')), 200);
  await deliver(app, s.mention('TJUN1'));
  assert.equal((await stack.posts('TJUN1')).length, 1, 'no token after app_uninstalled');
});

test('an installation from Bolt\'s own OAuth flow is sealed and served', async () => {
  const app = await boltApp({ installationStore: tokenkeepInstallationStore(client()) });
  // Bolt's install path redirects to Slack with a state and sets its cookie ...
  const start = await s.get(`${app.url}/slack/install`);
  assert.equal(start.statusCode, 302);
  const state = new URL(start.headers.location).searchParams.get('state');
  const cookie = start.headers['set-cookie'].map((c) => c.split(';')[0]).join('; ');
  // ... Slack redirects back with a code; @slack/oauth exchanges it and stores through the adapter.
  await stack.addCode('bolt-js-code-TJBOLT1', 'TJBOLT1');
  const done = await s.get(`${app.url}/slack/oauth_redirect?code=bolt-js-code-TJBOLT1&state=${state}`, { cookie });
  assert.equal(done.statusCode, 200);
  const saved = app.saved[0];
  assert.ok(saved.bot.token && saved.bot.refreshToken, 'a rotating install');

  const raw = stack.rawStoreBytes();
  assert.ok(!raw.includes(Buffer.from(saved.bot.token)), 'no plaintext token in the store');
  assert.ok(!raw.includes(Buffer.from(saved.bot.refreshToken)), 'no plaintext refresh token in the store');

  await deliver(app, s.mention('TJBOLT1'));
  const posts = await stack.posts('TJBOLT1');
  assert.equal(posts.length, 1);
  assert.equal(posts[0].token_fingerprint, s.fingerprint(saved.bot.token));

  const jobs = tokenkeepInstallationStore(client(stack.jobsKey), { namedTenant: true });
  const found = await jobs.fetchInstallation({ teamId: 'TJBOLT1' });
  assert.equal(found.bot.token, saved.bot.token);
  assert.equal(found.bot.refreshToken, undefined, 'refresh tokens never leave tokenkeep');
  const meta = await tokenkeepInstallationStore(client()).fetchInstallation({ teamId: 'TJBOLT1' });
  assert.equal(meta.bot.token, undefined, 'metadata only without the named-tenant permission');
});

test('32 concurrent requests on an expiring token cause exactly one refresh', async () => {
  // Bolt's installer (with its own token rotation) is configured, and must not rotate.
  const app = await boltApp({ installationStore: tokenkeepInstallationStore(client()) });
  const wait = rotatingInstalledAt + (s.DUE_AFTER_SECS + 1) * 1000 - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  assert.equal(await stack.refreshes(ROTATING_TEAM), 0);

  // The first request alone: its token was read before any refresh began, so its post
  // names the old token (concurrent posts reach Slack in any order).
  assert.equal(await deliver(app, s.mention(ROTATING_TEAM, { text: 'n0' })), 200);
  const oldToken = (await stack.posts(ROTATING_TEAM))[0].token_fingerprint;
  const statuses = await Promise.all(Array.from({ length: 31 }, (_, i) => deliver(app, s.mention(ROTATING_TEAM, { text: `n${i + 1}` }))));
  assert.deepEqual(statuses, Array(31).fill(200));
  const burst = (await stack.posts(ROTATING_TEAM)).map((p) => p.token_fingerprint);
  assert.equal(burst.length, 32, 'every request answered with a valid token');
  assert.ok(new Set(burst).size <= 2);

  // The token was due, not expired: the refresh runs after the answers.
  const deadline = Date.now() + 10000;
  while ((await stack.refreshes(ROTATING_TEAM)) === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  await new Promise((r) => setTimeout(r, 1000));
  assert.equal(await stack.refreshes(ROTATING_TEAM), 1, 'exactly one refresh, by tokenkeep');

  await deliver(app, s.mention(ROTATING_TEAM));
  const newest = (await stack.posts(ROTATING_TEAM)).at(-1).token_fingerprint;
  assert.notEqual(newest, oldToken, 'the refreshed token is served');
  assert.equal(await stack.refreshes(ROTATING_TEAM), 1);
});
