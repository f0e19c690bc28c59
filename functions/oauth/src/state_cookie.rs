//! The cookie that binds an OAuth state to the browser that started the install.

use axum::response::Response;
use http::header::{self, HeaderMap, HeaderValue};

use crate::{MAX_PARAM_LEN, OAuthError, STATE_COOKIE, STATE_LOG_PREFIX};

pub(crate) fn cookie(value: &str, max_age: u32) -> HeaderValue {
    let s = format!(
        "{STATE_COOKIE}={value}; HttpOnly; Secure; SameSite=Lax; Path=/slack; Max-Age={max_age}"
    );
    // The value is our own hex state (or empty), so this cannot fail.
    HeaderValue::from_str(&s)
        .unwrap_or_else(|_| HeaderValue::from_static("tokenkeep_oauth_state=; Max-Age=0"))
}

pub(crate) fn with_cleared_cookie(mut resp: Response) -> Response {
    resp.headers_mut().append(header::SET_COOKIE, cookie("", 0));
    resp
}

pub(crate) fn state_prefix(state: &str) -> &str {
    state.get(..STATE_LOG_PREFIX).unwrap_or("")
}

pub(crate) fn state_cookie(headers: &HeaderMap) -> Result<String, OAuthError> {
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
