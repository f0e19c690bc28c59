//! The cookie that binds an OAuth state to the browser that started the
//! install, built and parsed with the `cookie` crate.

use axum::response::Response;
use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};

use crate::{MAX_PARAM_LEN, OAuthError, STATE_COOKIE, STATE_LOG_PREFIX};

/// `Set-Cookie` for the state: HttpOnly (no script reads it), Secure,
/// `SameSite=Lax` (sent on Slack's top-level redirect back to us, not on
/// cross-site subrequests), scoped to `/slack`. An empty value with
/// `max_age` 0 clears it.
pub(crate) fn cookie(value: &str, max_age_secs: u32) -> HeaderValue {
    let c = Cookie::build((STATE_COOKIE, value))
        .http_only(true)
        .secure(true)
        .same_site(SameSite::Lax)
        .path("/slack")
        .max_age(cookie::time::Duration::seconds(i64::from(max_age_secs)))
        .build();
    // The value is our own hex state (or empty), so this cannot fail.
    HeaderValue::from_str(&c.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("tokenkeep_oauth_state=; Max-Age=0"))
}

pub(crate) fn with_cleared_cookie(mut resp: Response) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, cookie("", 0));
    resp
}

pub(crate) fn state_prefix(state: &str) -> &str {
    state.get(..STATE_LOG_PREFIX).unwrap_or("")
}

/// The state cookie's value. Exactly one must be present: two (a second one
/// planted by a sibling subdomain, say) are refused as none would be, since
/// we cannot tell which the browser meant.
pub(crate) fn state_cookie(headers: &HeaderMap) -> Result<String, OAuthError> {
    let mut found: Option<String> = None;
    let pairs = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok);
    for c in pairs {
        if c.name() != STATE_COOKIE {
            continue;
        }
        if found.replace(c.value().to_owned()).is_some() {
            return Err(OAuthError::CookieMissing);
        }
    }
    match found {
        Some(v) if !v.is_empty() && v.len() <= MAX_PARAM_LEN => Ok(v),
        _ => Err(OAuthError::CookieMissing),
    }
}
