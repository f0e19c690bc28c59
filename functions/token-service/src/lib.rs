//! The token service: the routes a Bolt app (Python or JavaScript, through
//! the adapters in `clients/`) calls instead of keeping tokens itself.
//!
//! | route | who may call | what |
//! |---|---|---|
//! | `POST /tokens/authorize` | any caller | the tokens of the tenant a Slack-signed request speaks for |
//! | `POST /tokens/installations` | any caller | store an installation Bolt's OAuth flow produced (sealed on arrival) |
//! | `POST /tokens/installations/find` | any caller: metadata; named-tenant callers: also the token | Bolt's `find_installation` |
//! | `POST /tokens/bots/find` | as above | Bolt's `find_bot` |
//! | `POST /tokens/installations/delete` | named-tenant callers | Bolt's `delete_installation` / `delete_bot` / `delete_all` |
//!
//! **Strict scoping.** `authorize` takes the raw request (body, timestamp,
//! signature), verifies it with the app's signing secret (5-minute window,
//! constant-time MAC) and takes the tenant from the signed body, so a service
//! obtains only the token of a tenant that just sent it a fresh signed
//! request. A lifecycle event in that request (`app_uninstalled`,
//! `tokens_revoked`) is applied first, exactly as `/slack/events` applies it,
//! so the Bolt app needs no uninstall listener. Storing proves the tenant
//! through Slack's `auth.test` for the installation's own token. Naming a
//! tenant directly (workers, cron jobs) is the separate named-tenant
//! permission, off by default ([`caller`]), and audited with reason
//! `named_tenant`.
//!
//! Every token read is audited by the store with actor
//! `token-service:<caller ARN or dev key name>`. Tokens expiring soon are
//! refreshed by the store (single-flight); callers never refresh.
//!
//! Answers: `{"ok":true,…}`; refusals are `{"ok":false,"error":CODE}` with
//! `unauthorized` (401), `forbidden` (403), `invalid_request` (400, also for an
//! unsigned or tenant-less Slack body), `invalid_slack_signature` (401: forged,
//! stale or replayed outside the window), `token_refused` (400),
//! `tenant_mismatch` (400), `not_installed` (404), `too_large` (413),
//! `internal_error` / `unavailable` (500 / 503). Bodies never carry an error's
//! detail; the log does.

mod backend;
pub mod caller;
pub mod wire;

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokenkeep_installations::{ReadContext, StoreError, TenantKey, VerifiedTenant};

pub use backend::{Authorized, Backend, BackendError};
pub use caller::{Caller, CallerAuth};
use wire::{DeleteRequest, DeleteScope, InstallationIn, SignedRequest, TenantQuery};

pub const AUTHORIZE_PATH: &str = "/tokens/authorize";
pub const INSTALLATIONS_PATH: &str = "/tokens/installations";
pub const FIND_INSTALLATION_PATH: &str = "/tokens/installations/find";
pub const FIND_BOT_PATH: &str = "/tokens/bots/find";
pub const DELETE_PATH: &str = "/tokens/installations/delete";

/// JSON bodies other than `authorize` are small; `authorize` carries a Slack
/// body up to the verifier's limit, escaped as a JSON string (up to 6×).
const MAX_JSON_BYTES: usize = 64 * 1024;

/// Everything the router needs; built once per cold start.
#[derive(Debug)]
pub struct TokenServiceState {
    pub backend: Backend,
    pub auth: CallerAuth,
}

pub fn router(state: TokenServiceState) -> axum::Router {
    axum::Router::new()
        .route(AUTHORIZE_PATH, post(authorize))
        .route(INSTALLATIONS_PATH, post(store_installation))
        .route(FIND_INSTALLATION_PATH, post(find_installation))
        .route(FIND_BOT_PATH, post(find_bot))
        .route(DELETE_PATH, post(delete))
        .with_state(Arc::new(state))
}

type Shared = State<Arc<TokenServiceState>>;

// ---- responses -------------------------------------------------------------

fn refuse(status: StatusCode, error: &'static str, request_id: &str) -> Response {
    (
        status,
        Json(json!({ "ok": false, "error": error, "request_id": request_id })),
    )
        .into_response()
}

fn failed(e: &BackendError, request_id: &str) -> Response {
    match e {
        BackendError::Signature(v) => {
            tracing::warn!(%request_id, reason = %v, "authorize: slack signature check failed");
            refuse(
                StatusCode::UNAUTHORIZED,
                "invalid_slack_signature",
                request_id,
            )
        }
        BackendError::NoTenant => refuse(StatusCode::BAD_REQUEST, "invalid_request", request_id),
        BackendError::TokenRefused => refuse(StatusCode::BAD_REQUEST, "token_refused", request_id),
        BackendError::TenantMismatch => {
            refuse(StatusCode::BAD_REQUEST, "tenant_mismatch", request_id)
        }
        BackendError::Store(StoreError::NotInstalled | StoreError::NeedsReinstall) => {
            refuse(StatusCode::NOT_FOUND, "not_installed", request_id)
        }
        BackendError::Store(StoreError::Invalid(why)) => {
            tracing::warn!(%request_id, why, "invalid request");
            refuse(StatusCode::BAD_REQUEST, "invalid_request", request_id)
        }
        BackendError::Slack(err) => {
            tracing::error!(%request_id, error = %err, "slack unavailable");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", request_id)
        }
        BackendError::Store(err) => {
            tracing::error!(%request_id, error = %err, "store call failed");
            refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                request_id,
            )
        }
    }
}

fn not_installed(request_id: &str) -> Response {
    refuse(StatusCode::NOT_FOUND, "not_installed", request_id)
}

// ---- request plumbing --------------------------------------------------------

/// The API Gateway request id, else the Lambda invocation id, else a random one.
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

/// One authenticated request: caller, request id and the parsed JSON body.
/// Authentication comes first: an unauthenticated body is never read.
struct Call<T> {
    caller: Caller,
    request_id: String,
    body: T,
}

async fn accept<T: DeserializeOwned>(
    state: &TokenServiceState,
    req: Request,
    limit: usize,
) -> Result<Call<T>, Response> {
    let request_id = request_id_of(&req);
    let Some(caller) = state.auth.authenticate(&req) else {
        tracing::warn!(%request_id, path = req.uri().path(), "token service: unauthenticated call refused");
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            &request_id,
        ));
    };
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            &request_id,
        ));
    }
    let bytes = match axum::body::to_bytes(req.into_body(), limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Err(refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &request_id,
            ));
        }
    };
    match serde_json::from_slice::<T>(&bytes) {
        Ok(body) => Ok(Call {
            caller,
            request_id,
            body,
        }),
        Err(e) => {
            // serde's message names a field or position, never a value.
            tracing::warn!(%request_id, principal = %caller.principal, error = %e, "token service: malformed body");
            Err(refuse(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &request_id,
            ))
        }
    }
}

fn actor(caller: &Caller) -> String {
    format!("token-service:{}", caller.principal)
}

/// A caller-named tenant; only for callers with the named-tenant permission.
async fn named_tenant(
    state: &TokenServiceState,
    caller: &Caller,
    enterprise_id: Option<&str>,
    team_id: Option<&str>,
    is_enterprise_install: bool,
    request_id: &str,
) -> Result<VerifiedTenant, Response> {
    if !caller.named_tenant {
        tracing::warn!(%request_id, principal = %caller.principal, "named-tenant call without the permission");
        return Err(refuse(StatusCode::FORBIDDEN, "forbidden", request_id));
    }
    let key = TenantKey::for_lookup(enterprise_id, team_id, is_enterprise_install)
        .map_err(|_| refuse(StatusCode::BAD_REQUEST, "invalid_request", request_id))?;
    match state.backend.named_tenant(&key).await {
        Ok(Some(tenant)) => Ok(tenant),
        Ok(None) => Err(not_installed(request_id)),
        Err(e) => Err(failed(&e, request_id)),
    }
}

// ---- routes ------------------------------------------------------------------

async fn authorize(State(state): Shared, req: Request<Body>) -> Response {
    // The Slack body inside is limited again by the verifier.
    let limit = state.backend.verifier_max_body() * 6 + 4096;
    let call = match accept::<SignedRequest>(&state, req, limit).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let Call {
        caller,
        request_id,
        body,
    } = call;
    let ctx = ReadContext::new(actor(&caller), &request_id, "authorize");
    let found = match state
        .backend
        .authorize(body.body, &body.timestamp, &body.signature, &ctx)
        .await
    {
        Ok(found) => found,
        Err(e) => return failed(&e, &request_id),
    };
    let Authorized { tenant, bot, user } = found;
    if bot.is_none() && user.is_none() {
        tracing::info!(%request_id, tenant = %tenant.key(), principal = %caller.principal, "authorize: not installed");
        return not_installed(&request_id);
    }
    let key = tenant.key();
    let (bot_meta, bot_token) = match &bot {
        Some((info, token)) => (Some(&info.meta), Some(token.expose_secret())),
        None => (None, None),
    };
    let (user_id, user_scopes, user_token) = match &user {
        Some((info, token)) => (
            info.meta.user_id.as_deref(),
            Some(&info.meta.user_scopes),
            Some(token.expose_secret()),
        ),
        None => (None, None, None),
    };
    let meta = bot.as_ref().or(user.as_ref()).map(|(info, _)| &info.meta);
    // The one place tokens go on the wire.
    Json(json!({
        "ok": true,
        "enterprise_id": key.enterprise_id().or(meta.and_then(|m| m.enterprise_id.as_deref())),
        "team_id": key.team_id().or(meta.and_then(|m| m.team_id.as_deref())),
        "is_enterprise_install": meta.is_some_and(|m| m.is_enterprise_install),
        "team_name": meta.and_then(|m| m.team_name.as_deref()),
        "bot_token": bot_token,
        "bot_id": bot_meta.and_then(|m| m.bot_id.as_deref()),
        "bot_user_id": bot_meta.and_then(|m| m.bot_user_id.as_deref()),
        "bot_scopes": bot_meta.map(|m| &m.bot_scopes),
        "user_id": user_id,
        "user_token": user_token,
        "user_scopes": user_scopes,
    }))
    .into_response()
}

async fn store_installation(State(state): Shared, req: Request<Body>) -> Response {
    let call = match accept::<InstallationIn>(&state, req, MAX_JSON_BYTES).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    match state.backend.store_installation(call.body).await {
        Ok(key) => {
            tracing::info!(request_id = %call.request_id, tenant = %key, principal = %call.caller.principal, "installation stored through the token service");
            Json(json!({ "ok": true, "enterprise_id": key.enterprise_id(), "team_id": key.team_id() })).into_response()
        }
        Err(e) => failed(&e, &call.request_id),
    }
}

async fn find_installation(State(state): Shared, req: Request<Body>) -> Response {
    find(state, req, false).await
}

async fn find_bot(State(state): Shared, req: Request<Body>) -> Response {
    find(state, req, true).await
}

async fn find(state: Arc<TokenServiceState>, req: Request<Body>, bot_only: bool) -> Response {
    let call = match accept::<TenantQuery>(&state, req, MAX_JSON_BYTES).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let Call {
        caller,
        request_id,
        body: q,
    } = call;
    // Metadata needs no named-tenant permission; a token does.
    let tenant = if q.include_tokens {
        match named_tenant(
            &state,
            &caller,
            q.enterprise_id.as_deref(),
            q.team_id.as_deref(),
            q.is_enterprise_install,
            &request_id,
        )
        .await
        {
            Ok(tenant) => tenant,
            Err(refused) => return refused,
        }
    } else {
        let key = match TenantKey::for_lookup(
            q.enterprise_id.as_deref(),
            q.team_id.as_deref(),
            q.is_enterprise_install,
        ) {
            Ok(key) => key,
            Err(_) => return refuse(StatusCode::BAD_REQUEST, "invalid_request", &request_id),
        };
        match state.backend.named_tenant(&key).await {
            Ok(Some(tenant)) => tenant,
            Ok(None) => return not_installed(&request_id),
            Err(e) => return failed(&e, &request_id),
        }
    };
    let ctx = ReadContext::new(actor(&caller), &request_id, "named_tenant");
    let token_ctx = q.include_tokens.then_some(&ctx);
    match state
        .backend
        .fetch(&tenant, q.user_id.as_deref(), bot_only, token_ctx)
        .await
    {
        Ok(Some((info, token))) => Json(
            json!({ "ok": true, "installation": wire::installation_out(&info, token.as_ref()) }),
        )
        .into_response(),
        Ok(None) => not_installed(&request_id),
        Err(e) => failed(&e, &request_id),
    }
}

async fn delete(State(state): Shared, req: Request<Body>) -> Response {
    let call = match accept::<DeleteRequest>(&state, req, MAX_JSON_BYTES).await {
        Ok(call) => call,
        Err(refused) => return refused,
    };
    let Call {
        caller,
        request_id,
        body: d,
    } = call;
    let tenant = match named_tenant(
        &state,
        &caller,
        d.enterprise_id.as_deref(),
        d.team_id.as_deref(),
        d.is_enterprise_install,
        &request_id,
    )
    .await
    {
        Ok(tenant) => tenant,
        // Deleting what isn't there is done.
        Err(refused) if refused.status() == StatusCode::NOT_FOUND => {
            return Json(json!({ "ok": true, "deleted": 0 })).into_response();
        }
        Err(refused) => return refused,
    };
    let result = match (d.scope, d.user_id.as_deref()) {
        (DeleteScope::User, Some(user)) => state
            .backend
            .delete_user(&tenant, user)
            .await
            .map(usize::from),
        (DeleteScope::User, None) => {
            return refuse(StatusCode::BAD_REQUEST, "invalid_request", &request_id);
        }
        (DeleteScope::Bot, _) => state.backend.delete_bot(&tenant).await.map(usize::from),
        (DeleteScope::All, _) => state.backend.purge(&tenant).await,
    };
    match result {
        Ok(deleted) => {
            tracing::info!(%request_id, tenant = %tenant.key(), principal = %caller.principal, scope = ?d.scope, deleted, "named-tenant delete");
            Json(json!({ "ok": true, "deleted": deleted })).into_response()
        }
        Err(e) => failed(&e, &request_id),
    }
}
