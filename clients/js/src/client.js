'use strict';
// The token service's HTTP client.
//
// In AWS the routes sit behind the HTTP API's IAM authorizer, so every request
// is SigV4-signed (service `execute-api`) with the AWS SDK for JavaScript v3
// signer and the default credential chain; locally, `tokenkeep dev` wants its
// generated key (`Authorization: Bearer`). Requests time out; only failures that
// reached no decision (network errors, timeouts, 429, 502-504) are retried, a
// bounded number of times with backoff. Errors carry the service's error code,
// HTTP status and request id: never a token, never a response body.

const fs = require('node:fs');

const RETRY_STATUS = new Set([429, 502, 503, 504]);

class TokenkeepError extends Error {
  constructor(operation, code, status, requestId) {
    super(`tokenkeep ${operation}: ${code} (HTTP ${status ?? '-'}, request ${requestId ?? '-'})`);
    this.name = 'TokenkeepError';
    this.operation = operation;
    this.code = code;
    this.status = status;
    this.requestId = requestId;
  }
}

/** tokenkeep holds no installation for the tenant (never installed, uninstalled, or needs reinstall). */
class NotInstalledError extends TokenkeepError {
  constructor(operation, status, requestId) {
    super(operation, 'not_installed', status, requestId);
    this.name = 'NotInstalledError';
  }
}

class TokenkeepClient {
  /**
   * @param {string} url the token service (`http://127.0.0.1:3000` or the HTTP API's URL)
   * @param {{devKey?: string, awsRegion?: string, timeoutMs?: number, maxAttempts?: number}} options
   */
  constructor(url, { devKey, awsRegion, timeoutMs = 5000, maxAttempts = 3 } = {}) {
    if (devKey === undefined && awsRegion === undefined) {
      throw new Error('TokenkeepClient needs devKey (tokenkeep dev) or awsRegion (SigV4 in AWS)');
    }
    this.url = url.replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
    this.maxAttempts = Math.max(1, maxAttempts);
    this.awsRegion = awsRegion;
    // Not an enumerable property: util.inspect / JSON.stringify of the client never show it.
    Object.defineProperty(this, 'devKey', { value: devKey, enumerable: false });
    if (devKey === undefined) {
      const { SignatureV4 } = require('@smithy/signature-v4');
      const { Sha256 } = require('@aws-crypto/sha256-js');
      const { defaultProvider } = require('@aws-sdk/credential-provider-node');
      this.signer = new SignatureV4({ service: 'execute-api', region: awsRegion, credentials: defaultProvider(), sha256: Sha256 });
    }
  }

  /** `TOKENKEEP_URL`; then `TOKENKEEP_DEV_KEY_FILE` (or `TOKENKEEP_DEV_KEY`) for tokenkeep dev, else SigV4 in `AWS_REGION`. */
  static fromEnv(options = {}) {
    const url = process.env.TOKENKEEP_URL;
    if (!url) throw new Error('TOKENKEEP_URL is not set');
    let devKey = process.env.TOKENKEEP_DEV_KEY;
    if (devKey === undefined && process.env.TOKENKEEP_DEV_KEY_FILE) {
      devKey = fs.readFileSync(process.env.TOKENKEEP_DEV_KEY_FILE, 'ascii').trim();
    }
    if (devKey !== undefined) return new TokenkeepClient(url, { ...options, devKey });
    return new TokenkeepClient(url, { ...options, awsRegion: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION });
  }

  toJSON() {
    return { url: this.url, auth: this.devKey !== undefined ? 'dev-key' : `sigv4:${this.awsRegion}` };
  }

  authorize(raw) {
    return this.call('authorize', '/tokens/authorize', { body: raw.body, timestamp: raw.timestamp, signature: raw.signature });
  }

  storeInstallation(wire) {
    return this.call('storeInstallation', '/tokens/installations', wire);
  }

  async findInstallation(query) {
    return (await this.call('findInstallation', '/tokens/installations/find', query)).installation;
  }

  async findBot(query) {
    return (await this.call('findBot', '/tokens/bots/find', query)).installation;
  }

  async delete(query) {
    return (await this.call('delete', '/tokens/installations/delete', query)).deleted;
  }

  async headers(path, data) {
    const headers = { 'content-type': 'application/json', accept: 'application/json' };
    if (this.devKey !== undefined) return { ...headers, authorization: `Bearer ${this.devKey}` };
    const target = new URL(this.url + path);
    const signed = await this.signer.sign({
      method: 'POST',
      protocol: target.protocol,
      hostname: target.hostname,
      port: target.port ? Number(target.port) : undefined,
      path: target.pathname,
      headers: { ...headers, host: target.host },
      body: data,
    });
    return signed.headers;
  }

  async call(operation, path, payload) {
    const data = JSON.stringify(payload);
    let last;
    for (let attempt = 1; attempt <= this.maxAttempts; attempt += 1) {
      let retry = false;
      try {
        // Signed per attempt: a SigV4 signature carries its time.
        const response = await fetch(this.url + path, {
          method: 'POST',
          headers: await this.headers(path, data),
          body: data,
          signal: AbortSignal.timeout(this.timeoutMs),
        });
        let answer = {};
        try {
          answer = await response.json();
        } catch {
          answer = {};
        }
        if (response.ok && answer.ok === true) return answer;
        const code = typeof answer.error === 'string' ? answer.error : 'http_error';
        last = code === 'not_installed'
          ? new NotInstalledError(operation, response.status, answer.request_id)
          : new TokenkeepError(operation, code, response.status, answer.request_id);
        retry = RETRY_STATUS.has(response.status);
      } catch (e) {
        // The name says what failed (TimeoutError, TypeError for network), never a payload.
        last = new TokenkeepError(operation, `unreachable: ${e && e.name ? e.name : 'error'}`);
        retry = true;
      }
      if (!retry || attempt === this.maxAttempts) break;
      const backoff = Math.min(2000, 100 * 2 ** (attempt - 1)) * (0.5 + Math.random());
      await new Promise((resolve) => setTimeout(resolve, backoff));
    }
    throw last;
  }
}

module.exports = { TokenkeepClient, TokenkeepError, NotInstalledError };
