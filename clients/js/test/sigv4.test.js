'use strict';
// The AWS path of the client: SigV4 headers from the AWS SDK v3 signer for
// execute-api; no network. The keys are placeholders, not credentials.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const util = require('node:util');
const { TokenkeepClient } = require('..');

test('requests are signed for execute-api in the region', async () => {
  Object.assign(process.env, { AWS_ACCESS_KEY_ID: 'AKIDEXAMPLE', AWS_SECRET_ACCESS_KEY: 'placeholder-secret', AWS_SESSION_TOKEN: 'placeholder-session' });
  const client = new TokenkeepClient('https://abc123.execute-api.eu-west-1.amazonaws.com', { awsRegion: 'eu-west-1' });
  const headers = await client.headers('/tokens/authorize', '{"body":""}');
  assert.match(headers.authorization, /^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=[^ ]*host/);
  assert.equal(headers['x-amz-security-token'], 'placeholder-session');
  assert.ok(!util.inspect(client).includes('placeholder-secret'));
  assert.ok(!JSON.stringify(client).includes('placeholder'));
});

test('a client needs a dev key or a region', () => {
  assert.throws(() => new TokenkeepClient('http://127.0.0.1:1'));
});
