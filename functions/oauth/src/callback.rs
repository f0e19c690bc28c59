//! `GET /slack/oauth_redirect`: check the browser-bound state, exchange the
//! code, store the installation.

use http::header::HeaderMap;
use subtle::ConstantTimeEq as _;
use tokenkeep_installations::{Installation, VerifiedTenant};

use crate::state_cookie::{state_cookie, state_prefix};
use crate::{Installed, MAX_PARAM_LEN, MAX_QUERY_LEN, OAuthError, OAuthState};

/// The parameters Slack sends back. Unknown parameters are ignored.
#[derive(Debug, Default)]
pub(crate) struct Callback {
    pub(crate) code: Option<String>,
    pub(crate) state: Option<String>,
    pub(crate) error: Option<String>,
}

pub(crate) fn parse_callback(raw: Option<&str>) -> Result<Callback, OAuthError> {
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
/// What the callback ended in, short of a failure.
pub(crate) enum Outcome {
    Installed(Installed),
    Cancelled,
}

pub(crate) async fn complete_install(
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

    // Taken before the exchange: the store refuses the install if the tenant
    // was uninstalled at or after this moment (the uninstall overtook it).
    let started_ms = state.store.clock().now_millis();
    let grant = state
        .slack
        .exchange_code(&code, state.redirect_uri.as_deref())
        .await
        .map_err(OAuthError::from_exchange)?;
    let tenant = VerifiedTenant::from_oauth_grant(&grant)
        .map_err(|e| OAuthError::BadInstallation(e.to_string()))?;
    let app_id = grant.app_id.clone();
    let installer_user_id = grant.authed_user.as_ref().map(|u| u.id.clone());
    let bot_token = grant
        .access_token
        .clone()
        .filter(|_| grant.token_type.as_deref() != Some("user"));
    let now = started_ms.div_euclid(1000);
    let mut installation = Installation::from_oauth_response(grant, now)
        .map_err(|e| OAuthError::BadInstallation(e.to_string()))?;
    installation.exchange_started_ms = started_ms;
    state
        .store
        .store_installation(&tenant, &installation)
        .await
        .map_err(OAuthError::Store)?;
    let client =
        bot_token.and_then(|token| state.bot_client.as_ref().map(|slack| slack.bind(token)));
    Ok(Outcome::Installed(Installed {
        tenant: tenant.key().clone(),
        app_id,
        installer_user_id,
        client,
        request_id: request_id.to_owned(),
    }))
}
