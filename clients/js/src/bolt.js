'use strict';
// Bolt's `authorize` with strict scoping.
//
// Bolt for JavaScript hands `authorize` only ids it parsed from the body, which
// proves nothing to a service that holds every tenant's tokens, and no way to
// reach the raw request. So the receiver keeps it: `captureRawRequest` is the
// HTTPReceiver's `customPropertiesExtractor` (it sees the buffered raw body and
// headers), and `wrapReceiver` runs each `app.processEvent` with that raw
// request in an AsyncLocalStorage, where `tokenkeepAuthorize` finds it and hands
// exactly that to tokenkeep, which verifies the signature and resolves the
// tenant itself.
//
// Bolt skips `authorize` for `app_uninstalled` and `tokens_revoked`; the
// wrapper forwards those signed requests to tokenkeep itself, which applies them
// (purge / delete) as its own `/slack/events` does.

const { AsyncLocalStorage } = require('node:async_hooks');
const { NotInstalledError, TokenkeepError } = require('./client');

const RAW_REQUEST_KEY = 'tokenkeepRawRequest';
const LIFECYCLE_EVENTS = new Set(['app_uninstalled', 'tokens_revoked']);
const current = new AsyncLocalStorage();

function single(headers, name) {
  const value = headers[name];
  // A repeated signed header is ambiguous: which copy was signed?
  return typeof value === 'string' ? value : '';
}

/** HTTPReceiver `customPropertiesExtractor`: the raw signed request, for `tokenkeepAuthorize`. */
function captureRawRequest(req) {
  const raw = {
    body: Buffer.isBuffer(req.rawBody) ? req.rawBody.toString('utf8') : String(req.rawBody ?? ''),
    timestamp: single(req.headers, 'x-slack-request-timestamp'),
    signature: single(req.headers, 'x-slack-signature'),
  };
  // Not enumerable: Bolt spreads customProperties into every listener context, and
  // the raw body has no business there (the wrapper reads it from the event).
  const props = {};
  Object.defineProperty(props, RAW_REQUEST_KEY, { value: raw, enumerable: false });
  return props;
}

function lifecycleEvent(body) {
  return body && body.type === 'event_callback' && body.event && LIFECYCLE_EVENTS.has(body.event.type)
    ? body.event.type
    : undefined;
}

/**
 * Wraps a Bolt receiver (an HTTPReceiver built with `customPropertiesExtractor: captureRawRequest`)
 * so that `tokenkeepAuthorize` can reach the raw request of the event it authorizes.
 */
function wrapReceiver(inner, client, logger = console) {
  return {
    init(app) {
      const proxy = Object.create(app);
      proxy.processEvent = async (event) => {
        const raw = event.customProperties ? event.customProperties[RAW_REQUEST_KEY] : undefined;
        const lifecycle = lifecycleEvent(event.body);
        if (raw && lifecycle) {
          try {
            await client.authorize(raw);
          } catch (e) {
            if (!(e instanceof NotInstalledError)) {
              logger.error(`tokenkeep could not apply ${lifecycle}: ${e.message}`);
              // The receiver answers 500 and Slack retries, so the purge is not lost.
              if (!(e instanceof TokenkeepError) || e.status === undefined || e.status >= 500) throw e;
            }
          }
        }
        return current.run(raw, () => app.processEvent(event));
      };
      inner.init(proxy);
    },
    start(...args) {
      return inner.start(...args);
    },
    stop(...args) {
      return inner.stop(...args);
    },
  };
}

/** Bolt's `authorize`: the tokens tokenkeep gives for the raw signed request being processed. */
function tokenkeepAuthorize(client) {
  return async (source) => {
    const raw = current.getStore();
    if (!raw) {
      throw new Error('tokenkeep authorize: no raw request; build the receiver with wrapReceiver and captureRawRequest');
    }
    const answer = await client.authorize(raw);
    return {
      enterpriseId: answer.enterprise_id ?? undefined,
      teamId: answer.team_id ?? undefined,
      botToken: answer.bot_token ?? undefined,
      botId: answer.bot_id ?? undefined,
      botUserId: answer.bot_user_id ?? undefined,
      userId: answer.user_id ?? source.userId,
      userToken: answer.user_token ?? undefined,
    };
  };
}

module.exports = { RAW_REQUEST_KEY, captureRawRequest, wrapReceiver, tokenkeepAuthorize };
