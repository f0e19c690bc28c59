//! The OAuth install lifecycle: `GET /slack/install` and `GET /slack/oauth_redirect`.
//!
//! [`router`] is what the Lambda `main`, `tokenkeep dev` and the tests mount.
//! Handlers stay thin: check the browser-bound state, exchange the code, hand
//! the answer to the [`InstallationStore`], and answer with a generic page.
//!
//! Security decisions, and what they defend against:
//! - The state is single-use (stored with a 10-minute TTL, consumed with a
//!   conditional delete) *and* bound to the browser that started the install by
//!   an HttpOnly cookie, compared in constant time. Together they stop login
//!   CSRF (a victim completing an attacker's install) and replays.
//! - The state is consumed only after the cookie matched, so someone who knows
//!   a victim's state value but not their cookie cannot burn it.
//! - The tenant comes only from Slack's `oauth.v2.access` answer
//!   ([`VerifiedTenant::from_oauth_grant`]), never from the query string.
//! - Every failure page is the same generic text plus a request id; the cause
//!   goes to the log. No token or code is logged; a state at most by an 8-char prefix.
//! - The only redirect target is the configured authorize URL; the success page
//!   links only to Slack, built from validated Slack ids.

mod hooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use subtle::ConstantTimeEq as _;
use tokenkeep_installations::{
    Installation, InstallationStore, StoreError, TenantKey, VerifiedTenant,
};
use tokenkeep_slack_api::{SlackError, SlackErrorCode, SlackOAuth};

pub use hooks::{HookError, InstallHooks, Installed};

/// Name of the cookie that binds an OAuth state to the browser that asked for it.
pub const STATE_COOKIE: &str = "tokenkeep_oauth_state";
/// Matches the store's state TTL (`schema::STATE_TTL_SECS`, 10 minutes).
pub const STATE_COOKIE_MAX_AGE_SECS: u32 = 600;
/// Longest accepted `code`, `state`, `error` or cookie value. Slack's codes and
/// our states are far shorter; anything longer is not from Slack.
pub const MAX_PARAM_LEN: usize = 256;
/// Longest accepted query string on the redirect.
const MAX_QUERY_LEN: usize = 2048;
/// How much of a state value may appear in a log line.
const STATE_LOG_PREFIX: usize = 8;

/// Everything the two routes need. Built once per cold start.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub store: Arc<InstallationStore>,
    pub slack: Arc<dyn SlackOAuth>,
    /// The Slack app's client id (public; goes into the authorize URL).
    pub client_id: String,
    /// Bot scopes, comma-separated as Slack spells them.
    pub scopes: String,
    /// User scopes, comma-separated; empty for none.
    pub user_scopes: String,
    /// `SLACK_AUTHORIZE_URL`, normally `https://slack.com/oauth/v2/authorize`.
    pub authorize_url: String,
    /// Sent to Slack on authorize and on the exchange if set (they must match).
    pub redirect_uri: Option<String>,
    /// The Web API client hooks get, bound to the new bot token.
    pub bot_client: Option<tokenkeep_slack_api::SlackClient>,
}

impl OAuthState {
    /// The state every binary builds, from the app's wiring.
    pub fn from_app(app: &tokenkeep_runtime::App) -> Self {
        let config = &app.config;
        Self {
            store: Arc::clone(&app.store),
            slack: Arc::new(app.slack.clone()),
            client_id: config.slack_client_id.clone(),
            scopes: config.slack_scopes.clone(),
            user_scopes: config.slack_user_scopes.clone(),
            authorize_url: config.slack_authorize_url.clone(),
            redirect_uri: config.slack_redirect_uri.clone(),
            bot_client: Some(app.slack.clone()),
        }
    }
}

/// The two routes, with their state.
pub fn router(state: OAuthState) -> Router {
    router_with_hooks(state, None)
}

/// The two routes, with the app's install hooks.
pub fn router_with_hooks(state: OAuthState, hooks: Option<Arc<dyn InstallHooks>>) -> Router {
    Router::new()
        .route("/slack/install", get(install))
        .route("/slack/oauth_redirect", get(oauth_redirect))
        .with_state(Routes { state, hooks })
}

#[derive(Debug, Clone)]
struct Routes {
    state: OAuthState,
    hooks: Option<Arc<dyn InstallHooks>>,
}

// ---- errors -----------------------------------------------------------------

/// Why an install did not complete. The `Display` text goes to the log only
/// (never to the browser) and carries no token, code or full state.
///
/// Add a variant only when it needs its own status code or log handling.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// The query string is malformed, oversize, repeats a parameter or lacks one.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// No (or more than one) state cookie: the browser did not start this install.
    #[error("state cookie missing or ambiguous")]
    CookieMissing,
    /// The cookie holds another state: the link was started in another browser.
    #[error("state cookie does not match the state parameter")]
    CookieMismatch,
    /// The state is unknown, expired or already used.
    #[error("state unknown, expired or already used")]
    StateRejected,
    /// Slack refused the code as invalid or used (`invalid_code`).
    #[error("slack refused the code: {0}")]
    CodeRejected(#[source] SlackError),
    /// Slack refused the exchange for a reason that is our configuration's
    /// fault (client id or secret, redirect URI).
    #[error("slack refused the exchange: {0}")]
    SlackRefused(#[source] SlackError),
    /// Slack did not answer usably (5xx, timeout, transport, rate limit, decode).
    #[error("slack unavailable: {0}")]
    SlackUnavailable(#[source] SlackError),
    /// Slack's answer does not describe an installation we can store.
    #[error("slack answer is not a storable installation: {0}")]
    BadInstallation(String),
    /// Our own configuration is unusable (e.g. the authorize URL).
    #[error("misconfigured: {0}")]
    Config(&'static str),
    /// The store failed (issuing or consuming the state, or the write).
    #[error("installation store failed: {0}")]
    Store(#[source] StoreError),
}

impl OAuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            OAuthError::BadRequest(_)
            | OAuthError::CookieMissing
            | OAuthError::CookieMismatch
            | OAuthError::StateRejected
            | OAuthError::CodeRejected(_) => StatusCode::BAD_REQUEST,
            OAuthError::SlackUnavailable(_) | OAuthError::BadInstallation(_) => {
                StatusCode::BAD_GATEWAY
            }
            OAuthError::SlackRefused(_) | OAuthError::Config(_) | OAuthError::Store(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn from_exchange(e: SlackError) -> Self {
        match e.code() {
            Some(SlackErrorCode::InvalidCode) => OAuthError::CodeRejected(e),
            Some(_) => OAuthError::SlackRefused(e),
            None => OAuthError::SlackUnavailable(e),
        }
    }
}

// ---- request id ---------------------------------------------------------------

/// Joins a failure page with its log lines. Taken from `x-request-id` when it
/// is a plain token, else the Lambda request id, else random; so it is always
/// safe to put in HTML and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|s| plain_id(s));
        let lambda = parts
            .extensions
            .get::<lambda_http::Context>()
            .map(|c| c.request_id.as_str())
            .filter(|s| plain_id(s));
        Ok(RequestId(match header.or(lambda) {
            Some(id) => id.to_owned(),
            None => hex::encode(rand::random::<[u8; 8]>()),
        }))
    }
}

// ---- pages ----------------------------------------------------------------------

/// A small HTML page. Only static text and validated values reach `body_html`.
fn page(status: StatusCode, request_id: &str, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body_html}<p><small>Request id: {request_id}</small></p></body></html>"
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page's URL carries the code and state: keep it out of caches and Referer headers.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

fn failure_page(e: &OAuthError, request_id: &str) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(request_id, error = %e, "oauth install failed");
    } else {
        tracing::warn!(request_id, error = %e, "oauth install refused");
    }
    page(
        status,
        request_id,
        "Installation failed",
        "<p>The app could not be installed. Please start the installation again.</p>",
    )
}

fn cookie(value: &str, max_age: u32) -> HeaderValue {
    let s = format!(
        "{STATE_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/slack; Max-Age={max_age}"
    );
    // The value is our own hex state (or empty), so this cannot fail.
    HeaderValue::from_str(&s)
        .unwrap_or_else(|_| HeaderValue::from_static("tokenkeep_oauth_state=; Max-Age=0"))
}

fn with_cleared_cookie(mut resp: Response) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, cookie("", 0));
    resp
}

fn state_prefix(state: &str) -> &str {
    state.get(..STATE_LOG_PREFIX).unwrap_or("")
}

// ---- GET /slack/install ----------------------------------------------------------

async fn install(State(Routes { state, .. }): State<Routes>, RequestId(request_id): RequestId) -> Response {
    let nonce = match state.store.issue_state().await {
        Ok(nonce) => nonce,
        Err(e) => return failure_page(&OAuthError::Store(e), &request_id),
    };
    let mut params: Vec<(&str, &str)> =
        vec![("client_id", &state.client_id), ("scope", &state.scopes)];
    if !state.user_scopes.is_empty() {
        params.push(("user_scope", &state.user_scopes));
    }
    params.push(("state", &nonce));
    if let Some(uri) = &state.redirect_uri {
        params.push(("redirect_uri", uri));
    }
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    let sep = if state.authorize_url.contains('?') {
        '&'
    } else {
        '?'
    };
    let location = format!("{}{sep}{query}", state.authorize_url);
    let Ok(location) = HeaderValue::from_str(&location) else {
        return failure_page(
            &OAuthError::Config("authorize url is not a valid header value"),
            &request_id,
        );
    };
    tracing::info!(
        request_id,
        state = state_prefix(&nonce),
        "oauth install started"
    );

    let mut resp = StatusCode::FOUND.into_response();
    let h = resp.headers_mut();
    h.insert(header::LOCATION, location);
    h.insert(
        header::SET_COOKIE,
        cookie(&nonce, STATE_COOKIE_MAX_AGE_SECS),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

// ---- GET /slack/oauth_redirect -----------------------------------------------------

/// The parameters Slack sends back. Unknown parameters are ignored.
#[derive(Debug, Default)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn parse_callback(raw: Option<&str>) -> Result<Callback, OAuthError> {
    let raw = raw.unwrap_or("");
    if raw.len() > MAX_QUERY_LEN {
        return Err(OAuthError::BadRequest("query string too long"));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
        .map_err(|_| OAuthError::BadRequest("malformed query string"))?;
    let mut cb = Callback::default();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "code" => &mut cb.code,
            "state" => &mut cb.state,
            "error" => &mut cb.error,
            _ => continue,
        };
        if value.len() > MAX_PARAM_LEN {
            return Err(OAuthError::BadRequest("parameter too long"));
        }
        // A repeated parameter means someone is probing which copy we read.
        if slot.replace(value).is_some() {
            return Err(OAuthError::BadRequest("repeated parameter"));
        }
    }
    Ok(cb)
}

/// The state cookie's value. Exactly one cookie of that name must be present:
/// with two (one tossed in from a sibling domain, say) we can't tell which the
/// browser got from us.
fn state_cookie(headers: &HeaderMap) -> Result<String, OAuthError> {
    let mut found: Option<&str> = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let Some((name, v)) = pair.trim().split_once('=') else {
                continue;
            };
            if name.trim() != STATE_COOKIE {
                continue;
            }
            if found.replace(v.trim()).is_some() {
                return Err(OAuthError::CookieMissing);
            }
        }
    }
    match found {
        Some(v) if !v.is_empty() && v.len() <= MAX_PARAM_LEN => Ok(v.to_owned()),
        _ => Err(OAuthError::CookieMissing),
    }
}

/// What the callback ended in, short of a failure.
enum Outcome {
    Installed(Installed),
    Cancelled,
}

async fn oauth_redirect(
    State(Routes { state, hooks }): State<Routes>,
    RequestId(request_id): RequestId,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let outcome = complete_install(&state, &request_id, &headers, query.as_deref()).await;
    match (&outcome, &hooks) {
        (Err(e), Some(hooks)) => hooks.on_install_failed(e, &request_id).await,
        (Ok(Outcome::Installed(_)), _) | (Ok(Outcome::Cancelled), _) | (Err(_), None) => {}
    }
    match outcome {
        Ok(Outcome::Installed(installed)) => {
            let tenant = installed.tenant.clone();
            let app_id = installed.app_id.clone();
            tracing::info!(request_id, tenant = %tenant, "slack app installed");
            if let Some(hooks) = &hooks {
                // The installation is stored; a failing hook must not undo it
                // nor turn the page into a failure.
                let run = std::panic::AssertUnwindSafe(hooks.on_installed(installed));
                match futures::FutureExt::catch_unwind(run).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(request_id, tenant = %tenant, error = %e, "on_installed hook failed; install kept"),
                    Err(_) => tracing::error!(request_id, tenant = %tenant, "on_installed hook panicked; install kept"),
                }
            }
            let link = slack_link(&tenant, app_id.as_deref());
            let body =
                format!("<p>The app was installed.</p><p><a href=\"{link}\">Open Slack</a></p>");
            with_cleared_cookie(page(
                StatusCode::OK,
                &request_id,
                "Installation complete",
                &body,
            ))
        }
        Ok(Outcome::Cancelled) => with_cleared_cookie(page(
            StatusCode::OK,
            &request_id,
            "Installation cancelled",
            "<p>The installation was cancelled; nothing was installed.</p>",
        )),
        // Before the state is consumed the cookie may belong to an install
        // still in flight in another tab: leave it alone.
        Err(
            e
            @ (OAuthError::BadRequest(_) | OAuthError::CookieMissing | OAuthError::CookieMismatch),
        ) => failure_page(&e, &request_id),
        Err(e) => with_cleared_cookie(failure_page(&e, &request_id)),
    }
}

async fn complete_install(
    state: &OAuthState,
    request_id: &str,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Outcome, OAuthError> {
    let cb = parse_callback(query)?;
    let nonce = cb.state.ok_or(OAuthError::BadRequest("missing state"))?;
    let cookie = state_cookie(headers)?;
    if !bool::from(cookie.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(OAuthError::CookieMismatch);
    }
    if !state
        .store
        .consume_state(&nonce)
        .await
        .map_err(OAuthError::Store)?
    {
        return Err(OAuthError::StateRejected);
    }
    tracing::debug!(
        request_id,
        state = state_prefix(&nonce),
        "oauth state consumed"
    );

    if let Some(error) = cb.error {
        // Slack's codes are short snake_case words; anything else is not logged.
        let error =
            if error.len() <= 64 && error.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                error
            } else {
                "unrecognized".to_owned()
            };
        tracing::info!(request_id, slack_error = %error, "oauth install cancelled at slack");
        return Ok(Outcome::Cancelled);
    }
    let code = cb
        .code
        .filter(|c| !c.is_empty())
        .ok_or(OAuthError::BadRequest("missing code"))?;

    let grant = state
        .slack
        .exchange_code(&code, state.redirect_uri.as_deref())
        .await
        .map_err(OAuthError::from_exchange)?;
    let tenant = VerifiedTenant::from_oauth_grant(&grant)
        .map_err(|e| OAuthError::BadInstallation(e.to_string()))?;
    let app_id = grant.app_id.clone();
    let installer_user_id = grant.authed_user.as_ref().map(|u| u.id.clone());
    let bot_token = grant.access_token.clone().filter(|_| grant.token_type.as_deref() != Some("user"));
    let now = state.store.clock().now_secs();
    let installation = Installation::from_oauth_response(grant, now)
        .map_err(|e| OAuthError::BadInstallation(e.to_string()))?;
    state
        .store
        .store_installation(&tenant, &installation)
        .await
        .map_err(OAuthError::Store)?;
    let client = bot_token.and_then(|token| state.bot_client.as_ref().map(|slack| slack.bind(token)));
    Ok(Outcome::Installed(Installed {
        tenant: tenant.key().clone(),
        app_id,
        installer_user_id,
        client,
        request_id: request_id.to_owned(),
    }))
}

/// Where the success page sends the user: the app in Slack for a workspace
/// install, the org's app management page for an org-wide one (where the admin
/// picks workspaces). Ids are Slack-validated (`TenantKey`) or checked here,
/// so nothing user-controlled reaches the HTML.
fn slack_link(tenant: &TenantKey, app_id: Option<&str>) -> String {
    let app_id = app_id.filter(|a| {
        !a.is_empty()
            && a.len() <= 32
            && a.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    match (app_id, tenant.team_id(), tenant.enterprise_id()) {
        (Some(app), Some(team), _) => {
            format!("https://slack.com/app_redirect?app={app}&amp;team={team}")
        }
        (Some(app), None, Some(enterprise)) => {
            format!(
                "https://app.slack.com/manage/{enterprise}/integrations/profile/{app}/workspaces/add"
            )
        }
        _ => "slack://open".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_query_is_validated() {
        // Given well-formed, oversize, repeated and malformed queries
        let ok = parse_callback(Some("code=abc&state=def&extra=1")).unwrap();
        assert_eq!(
            (ok.code.as_deref(), ok.state.as_deref()),
            (Some("abc"), Some("def"))
        );
        let long = format!("code={}&state=x", "a".repeat(MAX_PARAM_LEN + 1));
        // Then only the first is accepted
        assert!(matches!(
            parse_callback(Some(&long)),
            Err(OAuthError::BadRequest(_))
        ));
        assert!(matches!(
            parse_callback(Some("state=a&state=b")),
            Err(OAuthError::BadRequest(_))
        ));
        assert!(matches!(
            parse_callback(Some(&"x".repeat(MAX_QUERY_LEN + 1))),
            Err(OAuthError::BadRequest(_))
        ));
    }

    #[test]
    fn exactly_one_state_cookie_is_accepted() {
        // Given cookie headers with none, one, and two state cookies
        let mut h = HeaderMap::new();
        assert!(matches!(state_cookie(&h), Err(OAuthError::CookieMissing)));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; tokenkeep_oauth_state=abc; b=2"),
        );
        assert_eq!(state_cookie(&h).unwrap(), "abc");
        h.append(
            header::COOKIE,
            HeaderValue::from_static("tokenkeep_oauth_state=evil"),
        );
        // Then two are as bad as none
        assert!(matches!(state_cookie(&h), Err(OAuthError::CookieMissing)));
    }

    #[test]
    fn slack_link_uses_only_validated_ids() {
        let team = TenantKey::new(None, Some("T1")).unwrap();
        let org = TenantKey::new(Some("E1"), None).unwrap();
        assert_eq!(
            slack_link(&team, Some("A1")),
            "https://slack.com/app_redirect?app=A1&amp;team=T1"
        );
        assert_eq!(
            slack_link(&org, Some("A1")),
            "https://app.slack.com/manage/E1/integrations/profile/A1/workspaces/add"
        );
        assert_eq!(slack_link(&team, Some("\"><script>")), "slack://open");
    }

    #[test]
    fn request_id_header_must_be_plain() {
        assert!(plain_id("abc-123_X"));
        assert!(!plain_id("a b"));
        assert!(!plain_id("<script>"));
        assert!(!plain_id(&"a".repeat(65)));
    }
}
