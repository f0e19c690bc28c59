//! `POST /slack/events`: Events API, interactivity and slash commands, verified
//! and authorized before the app's [`EventHandler`] sees them.
//!
//! Per request, in this order (each step runs only if the one before passed):
//!
//! 1. **Size**: the body is read up to the verifier's limit; beyond it, 413.
//! 2. **Signature** (v0 HMAC, 5-minute window, at the injected [`Clock`]): on
//!    failure 401 with a generic body. Until this passes nothing in the body is
//!    parsed, looked up or logged except its length: an unsigned body is
//!    attacker-controlled, and parsing it would widen what an attacker reaches.
//! 3. **Parse**, once, where the verifier lives ([`tokenkeep_slack_api::VerifiedRequest::parse`]):
//!    kind, tenant ids and payload by content type (JSON: Events API; form:
//!    `payload=` for interactivity, else a slash command). Tenant resolution and
//!    dispatch both read that one result. Malformed after a valid signature: 400.
//! 4. `url_verification` is answered with its challenge.
//! 5. **Lifecycle**: `app_uninstalled` purges the tenant (tombstone);
//!    `tokens_revoked` deletes the named user installations, and the bot
//!    installation when `tokens.bot` is non-empty. Idempotent and order-free;
//!    an event older than the installation it names (`event_time` before the
//!    reinstall) or already applied (`event_id`) changes nothing
//!    ([`InstallationStore::apply_app_uninstalled`]).
//! 6. **Route**: the handler names the listener that takes the request
//!    ([`EventHandler::route`]); none matches: 200, counted `Unhandled`, no
//!    token read.
//! 7. **Authorize**: the tenant comes from the signed body
//!    ([`VerifiedTenant::from_signed_request`]); its bot token is read through
//!    the store (audited, reason = the listener's name). No installation: 200 without
//!    processing, plus an `UnknownTenant` metric. Any other store error: 500,
//!    so Slack retries.
//! 8. **Dedupe** by `event_id`, in the same write as the token read's audit
//!    record ([`InstallationStore::bot_token_for_event`]): a retry of an event
//!    already claimed is acknowledged and not processed again.
//! 9. **Dispatch** to the handler; its [`Ack`] is the answer (empty, or the
//!    JSON body Slack expects). A handler error or panic is logged, counted
//!    (`HandlerFailed`) and acknowledged with an empty 200 (see [`EventHandler`]);
//!    a listener whose lazy work could not be queued still has its answer
//!    sent, counted as `LazyNotQueued`.
//!
//! Why dedupe comes with the token read's audit write rather than right after
//! parsing: the repository can record an event id but not forget one, so a
//! claim made before a step that then fails with a transient error would turn
//! Slack's retry into a silent drop. Folding the claim into the audit write
//! (one `TransactWriteItems` on DynamoDB) keeps that property and makes an
//! authorized event two sequential round trips (the record read, then the
//! audit + claim write) instead of three; a failed read claims nothing, so a
//! 500 is always followed by a real second attempt. Lifecycle events need no
//! claim because repeating them changes nothing.
//!
//! Responses are generic (`{"ok":false}` plus the request id); causes go to the log.

pub mod ack;
mod handler;
pub mod inputs;
pub mod lazy;
mod listeners;
pub mod metrics;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use futures::FutureExt as _;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tokenkeep_installations::{
    Clock, InstallationStore, LifecycleEvent, ReadContext, StoreError, VerifiedTenant,
};
use tokenkeep_slack_api::{EventsEnvelope, Payload, RequestVerifier, SignedPayload, VerifyError};

pub use ack::{Ack, CommandAck, OptionsAck, ViewAck};
pub use handler::{
    AuthorizedEvent, EventHandler, EventSource, HandlerError, MentionReplier, Route,
    mention_reply_text,
};
pub use lazy::{JobError, JobOutcome, LazyJob, QueueError, run_job};
pub use listeners::{Context, IdMatch, LazyQueue, ListenerError, ListenerHandler, Listeners};
pub use metrics::{CountingMetrics, EmfStdout, Metric, MetricsSink};

/// The route every Slack request arrives on.
pub const EVENTS_PATH: &str = "/slack/events";

/// Who token reads from this function are attributed to in the audit log.
pub const AUDIT_ACTOR: &str = "events";

/// Everything the events router needs; built once per cold start.
pub struct EventsState {
    pub store: Arc<InstallationStore>,
    pub verifier: RequestVerifier,
    pub handler: Arc<dyn EventHandler>,
    /// The verifier's notion of "now" (tests pin it to a sample's timestamp).
    pub clock: Arc<dyn Clock>,
}

impl EventsState {
    /// The state every binary builds: the app's wiring, and its handler
    /// (normally [`ListenerHandler`] over the app's [`Listeners`]). Fails when
    /// the app was built without the signing secret.
    pub fn new(
        app: &tokenkeep_runtime::App,
        handler: Arc<dyn EventHandler>,
    ) -> Result<Self, tokenkeep_runtime::ConfigError> {
        Ok(Self {
            store: Arc::clone(&app.store),
            verifier: app.verifier()?.clone(),
            handler,
            clock: Arc::new(tokenkeep_installations::SystemClock),
        })
    }

    /// [`new`](Self::new) with the app's listeners, lazy work going to `lazy`.
    pub fn with_listeners(
        app: &tokenkeep_runtime::App,
        listeners: Listeners,
        lazy: Option<Arc<dyn LazyQueue>>,
    ) -> Result<Self, tokenkeep_runtime::ConfigError> {
        let mut handler =
            ListenerHandler::new(listeners, app.slack.clone(), Arc::clone(&app.store));
        if let Some(queue) = lazy {
            handler = handler.with_lazy_queue(queue);
        }
        Self::new(app, Arc::new(handler))
    }
}

impl std::fmt::Debug for EventsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsState")
            .field("store", &self.store)
            .field("verifier", &self.verifier)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Shared {
    state: EventsState,
    metrics: Arc<dyn MetricsSink>,
}

/// The events router, with metrics written as EMF lines to stdout.
pub fn router(state: EventsState) -> axum::Router {
    router_with_metrics(state, Arc::new(EmfStdout))
}

/// The events router with a chosen metrics sink (tests count through it).
pub fn router_with_metrics(state: EventsState, metrics: Arc<dyn MetricsSink>) -> axum::Router {
    axum::Router::new()
        .route(EVENTS_PATH, post(slack_events))
        .with_state(Arc::new(Shared { state, metrics }))
}

// ---- responses -------------------------------------------------------------

fn refuse(status: StatusCode, request_id: &str) -> Response {
    (
        status,
        Json(json!({ "ok": false, "request_id": request_id })),
    )
        .into_response()
}

fn internal_error(request_id: &str) -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(json!({ "ok": false, "error": "internal error", "request_id": request_id })),
    )
        .into_response()
}

/// Slack only needs a 2xx; an empty body also keeps slash commands silent.
fn ack() -> Response {
    StatusCode::OK.into_response()
}

fn ack_with(answer: Ack) -> Response {
    match answer {
        Ack::Empty => ack(),
        Ack::Json(body) => (StatusCode::OK, Json(body)).into_response(),
    }
}

// ---- the flow --------------------------------------------------------------

async fn slack_events(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let request_id = request_id_of(&req);
    let deadline = invocation_deadline(&req);
    let (parts, body) = req.into_parts();

    // 1. Size, while reading.
    let body = match read_limited(&parts.headers, body, shared.state.verifier.max_body()).await {
        Ok(body) => body,
        Err(status) => {
            tracing::warn!(%request_id, status = status.as_u16(), "request body refused before verification");
            return refuse(status, &request_id);
        }
    };
    let body_bytes = body.len();

    // 2. Signature.
    let now = shared.state.clock.now_secs();
    let verified = match shared
        .state
        .verifier
        .verify_headers_at(now, &parts.headers, body)
    {
        Ok(verified) => verified,
        Err(VerifyError::BodyTooLarge) => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, &request_id);
        }
        Err(e) => {
            // The error names a header at most; the body is reported by size only.
            tracing::warn!(%request_id, body_bytes, reason = %e, "slack signature check failed");
            return refuse(StatusCode::UNAUTHORIZED, &request_id);
        }
    };

    // 3. Parse, once: kind, tenant ids and payload come from this one result.
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let signed = match verified.parse(content_type) {
        Ok(signed) => signed,
        Err(what) => {
            tracing::warn!(%request_id, body_bytes, what = %what, "signed request is malformed");
            return refuse(StatusCode::BAD_REQUEST, &request_id);
        }
    };
    let retry_num = parts
        .headers
        .get("x-slack-retry-num")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let flow = Flow {
        shared: &shared,
        signed: &signed,
        request_id: &request_id,
        deadline,
    };

    match signed.payload().clone() {
        Payload::Events(envelope) => flow.events_api(envelope, retry_num).await,
        Payload::Interactivity(payload) => {
            let event_type = payload
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("interactivity")
                .to_owned();
            flow.dispatch(EventSource::Interactivity, event_type, payload, None)
                .await
        }
        Payload::SlashCommand(fields) => {
            flow.dispatch(
                EventSource::SlashCommand,
                "slash_command".to_owned(),
                fields,
                None,
            )
            .await
        }
    }
}

/// Reads the body, refusing (413) as soon as it passes `limit`; a declared
/// `Content-Length` over the limit is refused without reading at all. (The
/// limit itself is http-body-util's, via axum; not tower-http's layer, whose
/// 413 carries its own text where every refusal here is the generic JSON
/// with a request id.)
async fn read_limited(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, StatusCode> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(err) = source {
            if err.is::<http_body_util::LengthLimitError>() {
                return StatusCode::PAYLOAD_TOO_LARGE;
            }
            source = err.source();
        }
        StatusCode::BAD_REQUEST
    })
}

/// The API Gateway request id (what API Gateway's access log shows), else the
/// Lambda invocation id, else a random one (local runs and tests).
fn request_id_of(req: &Request) -> String {
    use lambda_http::RequestExt as _;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequestContext;
    use lambda_http::request::RequestContext;
    if let Some(RequestContext::ApiGatewayV2(ApiGatewayV2httpRequestContext {
        request_id: Some(id),
        ..
    })) = req.request_context_ref()
    {
        return id.clone();
    }
    if let Some(ctx) = req.lambda_context_ref() {
        return ctx.request_id.clone();
    }
    hex::encode(rand::random::<[u8; 8]>())
}

/// When the Lambda invocation ends: token reads that would refresh are
/// bounded by it (see `ReadContext::with_deadline`). `None` outside Lambda.
fn invocation_deadline(req: &Request) -> Option<std::time::Instant> {
    use lambda_http::RequestExt as _;
    let deadline_ms = req.lambda_context_ref()?.deadline;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    Some(
        std::time::Instant::now()
            + std::time::Duration::from_millis(deadline_ms.saturating_sub(now_ms)),
    )
}

/// One verified request on its way through steps 4–8.
struct Flow<'a> {
    shared: &'a Shared,
    signed: &'a SignedPayload,
    request_id: &'a str,
    deadline: Option<std::time::Instant>,
}

impl Flow<'_> {
    fn store(&self) -> &InstallationStore {
        &self.shared.state.store
    }

    fn count(&self, metric: Metric) {
        self.shared.metrics.count(metric);
    }

    /// The tenant the signed body speaks for; `None` (logged) when it names none.
    fn tenant(&self) -> Option<VerifiedTenant> {
        VerifiedTenant::from_signed_request(self.signed)
            .map_err(|e| tracing::warn!(request_id = %self.request_id, error = %e, "signed request names no valid tenant"))
            .ok()
    }

    fn store_failed(&self, what: &'static str, e: &StoreError) -> Response {
        tracing::error!(request_id = %self.request_id, error = %e, what, "store call failed; asking Slack to retry");
        internal_error(self.request_id)
    }

    async fn events_api(&self, envelope: EventsEnvelope, retry_num: &str) -> Response {
        match envelope.kind.as_str() {
            "url_verification" => match envelope.challenge {
                Some(challenge) => Json(json!({ "challenge": challenge })).into_response(),
                None => refuse(StatusCode::BAD_REQUEST, self.request_id),
            },
            "event_callback" => {
                let (Some(event_id), Some(event)) = (envelope.event_id, envelope.event) else {
                    tracing::warn!(request_id = %self.request_id, "event_callback without event_id or event");
                    return refuse(StatusCode::BAD_REQUEST, self.request_id);
                };
                let Some(event_type) = event.get("type").and_then(Value::as_str).map(str::to_owned)
                else {
                    tracing::warn!(request_id = %self.request_id, %event_id, "event without a type");
                    return refuse(StatusCode::BAD_REQUEST, self.request_id);
                };
                // Debug, not info: the read's audit line ("token read", same
                // request id) is the one line an authorized event logs by default.
                tracing::debug!(request_id = %self.request_id, %event_id, %event_type, retry_num, "event received");
                // Slack always sends event_time; without one an event can't be judged stale, so it applies.
                let lifecycle = LifecycleEvent {
                    event_id: &event_id,
                    event_time: envelope.event_time.unwrap_or(i64::MAX),
                };
                match event_type.as_str() {
                    "app_uninstalled" => self.uninstalled(&lifecycle).await,
                    "tokens_revoked" => self.tokens_revoked(&event, &lifecycle).await,
                    _ => {
                        self.dispatch(EventSource::EventsApi, event_type, event, Some(event_id))
                            .await
                    }
                }
            }
            other => {
                // app_rate_limited and any future envelope type: nothing to do, and
                // a non-2xx would only make Slack retry.
                tracing::info!(request_id = %self.request_id, envelope_type = other, "envelope acknowledged without processing");
                ack()
            }
        }
    }

    async fn uninstalled(&self, lifecycle: &LifecycleEvent<'_>) -> Response {
        let Some(tenant) = self.tenant() else {
            return refuse(StatusCode::BAD_REQUEST, self.request_id);
        };
        match self.store().apply_app_uninstalled(&tenant, lifecycle).await {
            Ok(outcome) => {
                tracing::info!(request_id = %self.request_id, tenant = %tenant.key(), ?outcome, "app_uninstalled handled");
                ack()
            }
            Err(e) => self.store_failed("apply_app_uninstalled", &e),
        }
    }

    /// `tokens.oauth` lists user ids, `tokens.bot` bot user ids (never tokens).
    async fn tokens_revoked(&self, event: &Value, lifecycle: &LifecycleEvent<'_>) -> Response {
        let Some(tenant) = self.tenant() else {
            return refuse(StatusCode::BAD_REQUEST, self.request_id);
        };
        let ids = |field: &str| -> Vec<String> {
            event
                .pointer(&format!("/tokens/{field}"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        };
        let (users, bots) = (ids("oauth"), ids("bot"));
        match self
            .store()
            .apply_tokens_revoked(&tenant, lifecycle, &users, !bots.is_empty())
            .await
        {
            Ok(outcome) => {
                tracing::info!(request_id = %self.request_id, tenant = %tenant.key(), ?outcome, "tokens_revoked handled");
                ack()
            }
            Err(e) => self.store_failed("apply_tokens_revoked", &e),
        }
    }

    /// Steps 6–8: tenant, listener, audited token read, dedupe (Events API
    /// only), handler. An unmatched request is acknowledged before any token
    /// is read.
    async fn dispatch(
        &self,
        source: EventSource,
        event_type: String,
        event: Value,
        event_id: Option<String>,
    ) -> Response {
        let Some(tenant) = self.tenant() else {
            return refuse(StatusCode::BAD_REQUEST, self.request_id);
        };
        let handler = &self.shared.state.handler;
        let Some(route) = handler.route(source, &event_type, &event) else {
            tracing::info!(request_id = %self.request_id, tenant = %tenant.key(), source = source.as_str(), %event_type, "no listener matched; acknowledged, not processed");
            self.count(Metric::Unhandled);
            return ack();
        };
        let mut ctx = ReadContext::new(AUDIT_ACTOR, self.request_id, &route.listener);
        if let Some(deadline) = self.deadline {
            ctx = ctx.with_deadline(deadline);
        }
        // Events API deliveries carry an event id: the read's audit record and
        // the dedupe claim are one write (see the crate doc, step 8).
        let read = match &event_id {
            Some(event_id) => {
                self.store()
                    .bot_token_for_event(&tenant, &ctx, event_id)
                    .await
            }
            None => self.store().bot_token(&tenant, &ctx).await.map(Some),
        };
        let bot_token = match read {
            Ok(Some(token)) => token,
            Ok(None) => {
                tracing::info!(request_id = %self.request_id, event_id = event_id.as_deref().unwrap_or(""), "event already handled; retry acknowledged");
                return ack();
            }
            Err(StoreError::NotInstalled) => {
                tracing::warn!(request_id = %self.request_id, tenant = %tenant.key(), %event_type, "request for a tenant with no installation; acknowledged, not processed");
                self.count(Metric::UnknownTenant);
                return ack();
            }
            Err(e) => return self.store_failed("bot_token", &e),
        };
        let tenant_key = tenant.key().clone();
        let listener = route.listener.clone();
        let ctx = AuthorizedEvent {
            tenant,
            bot_token,
            source,
            event_type,
            event,
            event_id,
            request_id: self.request_id.to_owned(),
            route,
        };
        // A panicking listener is a failed listener: logged, counted, acked.
        let outcome = std::panic::AssertUnwindSafe(handler.handle(ctx))
            .catch_unwind()
            .await;
        match outcome {
            Ok(Ok(answer)) => ack_with(answer),
            Ok(Err(HandlerError::LazyNotQueued { ack, source })) => {
                tracing::error!(request_id = %self.request_id, tenant = %tenant_key, %listener, error = %source, "lazy work not queued; the listener's answer is sent, its lazy part will not run");
                self.count(Metric::LazyNotQueued);
                ack_with(ack)
            }
            Ok(Err(e)) => {
                tracing::error!(request_id = %self.request_id, tenant = %tenant_key, %listener, error = %e, source = ?std::error::Error::source(&e).map(ToString::to_string), "handler failed; acknowledged anyway");
                self.count(Metric::HandlerFailed);
                ack()
            }
            Err(_) => {
                tracing::error!(request_id = %self.request_id, tenant = %tenant_key, %listener, "handler panicked; acknowledged anyway");
                self.count(Metric::HandlerFailed);
                ack()
            }
        }
    }
}
