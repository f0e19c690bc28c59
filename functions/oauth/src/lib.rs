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
//! - Every response carries `Cache-Control: no-store` and `Referrer-Policy:
//!   no-referrer` (the redirect's URL holds the code and state), `nosniff` and
//!   a CSP that allows nothing to load; a request id that is not a plain token
//!   is replaced before anything reads it; the query and body are bounded.

mod callback;
mod errors;
mod hooks;
mod pages;
mod request_id;
mod state_cookie;

use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use tokenkeep_installations::InstallationStore;
use tokenkeep_slack_api::SlackOAuth;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;

pub use errors::OAuthError;
pub use hooks::{HookError, InstallHooks, Installed};
pub use request_id::RequestId;

pub use pages::{InstallPages, Page, PageError};

use callback::{Outcome, complete_install};
use state_cookie::{cookie, state_prefix, with_cleared_cookie};

/// Name of the cookie that binds an OAuth state to the browser that asked for it.
pub const STATE_COOKIE: &str = "tokenkeep_oauth_state";
/// Matches the store's state TTL (`schema::STATE_TTL_SECS`, 10 minutes).
pub const STATE_COOKIE_MAX_AGE_SECS: u32 = 600;
/// Longest accepted `code`, `state`, `error` or cookie value. Slack's codes and
/// our states are far shorter; anything longer is not from Slack.
pub const MAX_PARAM_LEN: usize = 256;
/// Longest accepted query string on the redirect.
pub(crate) const MAX_QUERY_LEN: usize = 2048;
/// How much of a state value may appear in a log line.
pub(crate) const STATE_LOG_PREFIX: usize = 8;
/// Both routes are GETs: any body beyond this is refused (413) unread.
const MAX_BODY_BYTES: usize = 1024;

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

/// The two routes, with the app's install hooks (and its pages, if the hooks
/// name any).
pub fn router_with_hooks(state: OAuthState, hooks: Option<Arc<dyn InstallHooks>>) -> Router {
    let pages = hooks.as_ref().and_then(|h| h.pages()).unwrap_or_default();
    let no_store = HeaderValue::from_static("no-store");
    Router::new()
        .route("/slack/install", get(install))
        .route("/slack/oauth_redirect", get(oauth_redirect))
        .with_state(Routes {
            state,
            hooks,
            pages,
        })
        // Outermost first: a request id is settled before anything reads it,
        // and every response, pages and redirects alike, gets the headers.
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower::util::MapRequestLayer::new(request_id::drop_unsafe))
                .layer(SetRequestIdLayer::x_request_id(request_id::LambdaOrRandom))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
                .layer(SetResponseHeaderLayer::overriding(
                    header::CACHE_CONTROL,
                    no_store,
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::overriding(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
                )),
        )
}

#[derive(Debug, Clone)]
struct Routes {
    state: OAuthState,
    hooks: Option<Arc<dyn InstallHooks>>,
    pages: InstallPages,
}

// ---- GET /slack/install ----------------------------------------------------------

async fn install(
    State(Routes { state, pages, .. }): State<Routes>,
    RequestId(request_id): RequestId,
) -> Response {
    let nonce = match state.store.issue_state().await {
        Ok(nonce) => nonce,
        Err(e) => return pages.failure(&OAuthError::Store(e), &request_id),
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
        return pages.failure(
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
    resp
}

// ---- GET /slack/oauth_redirect -----------------------------------------------------

async fn oauth_redirect(
    State(Routes {
        state,
        hooks,
        pages,
    }): State<Routes>,
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
                    Ok(Err(e)) => {
                        tracing::error!(request_id, tenant = %tenant, error = %e, "on_installed hook failed; install kept")
                    }
                    Err(_) => {
                        tracing::error!(request_id, tenant = %tenant, "on_installed hook panicked; install kept")
                    }
                }
            }
            with_cleared_cookie(pages.success(&request_id, &tenant, app_id.as_deref()))
        }
        Ok(Outcome::Cancelled) => with_cleared_cookie(pages.cancelled(&request_id)),
        // Before the state is consumed the cookie may belong to an install
        // still in flight in another tab: leave it alone.
        Err(
            e
            @ (OAuthError::BadRequest(_) | OAuthError::CookieMissing | OAuthError::CookieMismatch),
        ) => pages.failure(&e, &request_id),
        Err(e) => with_cleared_cookie(pages.failure(&e, &request_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::parse_callback;
    use crate::request_id::plain_id;
    use crate::state_cookie::state_cookie;

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
    fn request_id_header_must_be_plain() {
        assert!(plain_id("abc-123_X"));
        assert!(!plain_id("a b"));
        assert!(!plain_id("<script>"));
        assert!(!plain_id(&"a".repeat(65)));
    }
}
