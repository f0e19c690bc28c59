//! Why an install did not complete, and the status each cause answers with.

use http::StatusCode;
use tokenkeep_installations::StoreError;
use tokenkeep_slack_api::{SlackError, SlackErrorCode};

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

    pub(crate) fn from_exchange(e: SlackError) -> Self {
        match e.code() {
            Some(SlackErrorCode::InvalidCode) => OAuthError::CodeRejected(e),
            Some(_) => OAuthError::SlackRefused(e),
            None => OAuthError::SlackUnavailable(e),
        }
    }
}
