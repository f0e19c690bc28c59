//! Slack Web API client, secret token types and request signature verification.
//!
//! - [`SlackClient`] / [`SlackOAuth`]: oauth.v2.access (code exchange, refresh),
//!   auth.test, auth.revoke, chat.postMessage, with the retry rules single-use
//!   credentials demand (see [`client`]).
//! - [`RequestVerifier`]: the v0 signature check that every inbound Slack
//!   request passes before its body is trusted.
//! - [`secrets`]: newtypes that keep tokens out of logs.
//! - `fake` (feature `test-util`): an in-process fake Slack for tests.

pub mod client;
pub mod error;
pub mod secrets;
pub mod types;
pub mod verify;

#[cfg(feature = "test-util")]
pub mod fake;

pub use client::{SlackClient, SlackClientConfig, SlackOAuth};
pub use error::{SlackError, SlackErrorCode};
pub use secrets::{AccessToken, ClientSecret, RefreshToken, SigningSecret, WebhookUrl};
pub use types::{AuthTestResponse, AuthedUser, Enterprise, IncomingWebhook, OAuthV2Response, Team};
pub use verify::{
    DEFAULT_MAX_BODY_BYTES, MAX_SKEW_SECS, RequestVerifier, VerifiedRequest, VerifyError,
};

#[cfg(any(test, feature = "test-util"))]
pub use verify::sign_request;
