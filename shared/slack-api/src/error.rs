//! The one error type of this crate.
//!
//! Callers act on three questions, so the variants are shaped around them:
//! is the grant dead ([`SlackError::is_revoked`]: mark the installation
//! `needs_reinstall`), may Slack have acted although we saw no answer
//! ([`SlackError::is_ambiguous`]: never assume a refresh did or did not happen),
//! and should we back off ([`SlackError::RateLimited`]). Add a variant only when
//! a caller needs to act differently on it; everything else is `Api(Other)`.
//!
//! No variant's `Display` (nor its source chain) carries a token or secret:
//! Slack error codes are sanitized to `[a-z0-9_]` and decode errors are
//! rebuilt without the offending JSON value.

use std::fmt;

/// Why a Slack call failed.
#[derive(Debug, thiserror::Error)]
pub enum SlackError {
    /// Slack answered `{"ok": false, "error": code}`: it understood and refused.
    #[error("slack api error: {0}")]
    Api(SlackErrorCode),
    /// HTTP 429. `retry_after_secs` comes from the `Retry-After` header.
    #[error("rate limited, retry after {retry_after_secs}s")]
    RateLimited { retry_after_secs: u64 },
    /// A non-2xx status other than 429.
    #[error("slack answered http {0}")]
    Http(u16),
    /// No complete answer within the configured timeout.
    #[error("slack call timed out")]
    Timeout,
    /// Connection, TLS or protocol failure.
    #[error("transport error")]
    Transport(#[source] reqwest::Error),
    /// A 2xx answer that is not the JSON we expect.
    #[error("unexpected slack response")]
    Decode(#[source] serde_json::Error),
    /// A `response_url` that does not point at Slack; nothing was sent.
    #[error("response_url is not a slack url")]
    ResponseUrl,
}

impl SlackError {
    /// The grant behind the token is dead: retrying or refreshing cannot help,
    /// the installation needs a reinstall.
    pub fn is_revoked(&self) -> bool {
        matches!(
            self,
            SlackError::Api(
                SlackErrorCode::InvalidRefreshToken
                    | SlackErrorCode::TokenRevoked
                    | SlackErrorCode::InvalidAuth
                    | SlackErrorCode::AccountInactive
            )
        )
    }

    /// Slack may or may not have performed the call (the request may have
    /// arrived while the answer got lost). For a refresh this means the stored
    /// refresh token must stay the one to try next, and the caller must not
    /// conclude the grant is dead.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            SlackError::Timeout | SlackError::Transport(_) | SlackError::Decode(_) => true,
            SlackError::Http(status) => (500..=599).contains(status),
            SlackError::Api(_) | SlackError::RateLimited { .. } | SlackError::ResponseUrl => false,
        }
    }

    /// The Slack error code, if Slack answered `ok: false`.
    pub fn code(&self) -> Option<&SlackErrorCode> {
        match self {
            SlackError::Api(code) => Some(code),
            _ => None,
        }
    }

    /// Maps a reqwest failure; timeouts get their own variant because callers
    /// treat them as ambiguous without inspecting the source.
    pub(crate) fn from_reqwest(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            SlackError::Timeout
        } else {
            SlackError::Transport(e)
        }
    }

    /// serde_json's messages quote the value that failed to decode, which for
    /// a misplaced field could be a token. Keep only the category and position
    /// (and "missing field `x`", which names our own field).
    pub(crate) fn from_json(e: serde_json::Error) -> Self {
        use serde::de::Error as _;
        let msg = e.to_string();
        let safe = if msg.starts_with("missing field") {
            msg
        } else {
            format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            )
        };
        SlackError::Decode(serde_json::Error::custom(safe))
    }
}

/// The `error` string of an `ok: false` answer; the codes callers branch on
/// are variants, the rest land in `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlackErrorCode {
    InvalidCode,
    InvalidRefreshToken,
    TokenRevoked,
    TokenExpired,
    InvalidAuth,
    AccountInactive,
    InvalidClientId,
    BadClientSecret,
    Ratelimited,
    /// Any other code, sanitized (see [`SlackErrorCode::from_slack`]).
    Other(String),
}

impl SlackErrorCode {
    /// Parses Slack's `error` string. Unknown codes are kept only if they look
    /// like a Slack code (`[a-z0-9_.]`, at most 64 bytes), so that an echoed
    /// token or other junk in the field can never reach a log via `Display`.
    pub fn from_slack(code: &str) -> Self {
        match code {
            "invalid_code" => Self::InvalidCode,
            "invalid_refresh_token" => Self::InvalidRefreshToken,
            "token_revoked" => Self::TokenRevoked,
            "token_expired" => Self::TokenExpired,
            "invalid_auth" => Self::InvalidAuth,
            "account_inactive" => Self::AccountInactive,
            "invalid_client_id" => Self::InvalidClientId,
            "bad_client_secret" => Self::BadClientSecret,
            "ratelimited" => Self::Ratelimited,
            other => {
                let plausible = !other.is_empty()
                    && other.len() <= 64
                    && !other.starts_with("xox")
                    && other.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                    });
                Self::Other(if plausible {
                    other.to_owned()
                } else {
                    "unrecognized_error".to_owned()
                })
            }
        }
    }

    /// The code as Slack spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidCode => "invalid_code",
            Self::InvalidRefreshToken => "invalid_refresh_token",
            Self::TokenRevoked => "token_revoked",
            Self::TokenExpired => "token_expired",
            Self::InvalidAuth => "invalid_auth",
            Self::AccountInactive => "account_inactive",
            Self::InvalidClientId => "invalid_client_id",
            Self::BadClientSecret => "bad_client_secret",
            Self::Ratelimited => "ratelimited",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for SlackErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_codes_round_trip_through_display() {
        // Given every named code, when parsed from and printed back to Slack's spelling
        for s in [
            "invalid_code",
            "invalid_refresh_token",
            "token_revoked",
            "token_expired",
            "invalid_auth",
            "account_inactive",
            "invalid_client_id",
            "bad_client_secret",
            "ratelimited",
            "channel_not_found",
        ] {
            // Then the text is unchanged
            assert_eq!(SlackErrorCode::from_slack(s).to_string(), s);
        }
        assert_eq!(
            SlackErrorCode::from_slack("channel_not_found"),
            SlackErrorCode::Other("channel_not_found".into())
        );
    }

    #[test]
    fn a_token_in_the_error_field_never_reaches_display() {
        // Given an error field that echoes a token
        let code = SlackErrorCode::from_slack("xoxb-123-456-abc");
        // When displayed inside the error, then only a placeholder shows
        let shown = SlackError::Api(code).to_string();
        assert_eq!(shown, "slack api error: unrecognized_error");
    }

    #[test]
    fn revoked_and_ambiguous_classify_as_documented() {
        // Given each error kind, then the dead-grant and maybe-acted predicates match the contract
        for c in [
            "invalid_refresh_token",
            "token_revoked",
            "invalid_auth",
            "account_inactive",
        ] {
            let e = SlackError::Api(SlackErrorCode::from_slack(c));
            assert!(e.is_revoked() && !e.is_ambiguous(), "{c}");
        }
        for c in [
            "token_expired",
            "invalid_code",
            "ratelimited",
            "bad_client_secret",
        ] {
            assert!(
                !SlackError::Api(SlackErrorCode::from_slack(c)).is_revoked(),
                "{c}"
            );
        }
        assert!(SlackError::Timeout.is_ambiguous());
        assert!(SlackError::Http(502).is_ambiguous());
        assert!(!SlackError::Http(404).is_ambiguous());
        assert!(
            !SlackError::RateLimited {
                retry_after_secs: 1
            }
            .is_ambiguous()
        );
        let decode =
            SlackError::from_json(serde_json::from_str::<u8>("\"xoxb-secret\"").unwrap_err());
        assert!(decode.is_ambiguous());
    }

    #[test]
    fn decode_errors_drop_the_offending_value() {
        // Given a decode error whose serde message quotes a token
        let raw = serde_json::from_str::<u8>("\"xoxb-secret\"").unwrap_err();
        assert!(
            raw.to_string().contains("xoxb-secret"),
            "premise: serde quotes the value"
        );
        // When mapped into a SlackError
        let e = SlackError::from_json(raw);
        // Then neither Display nor the source carries it
        let source = std::error::Error::source(&e).unwrap().to_string();
        assert!(!source.contains("xoxb"), "{source}");
        assert!(!format!("{e:?}").contains("xoxb"));
    }
}
