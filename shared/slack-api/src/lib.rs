//! Slack Web API client, secret token types and request signature verification.
//!
//! - [`SlackClient`] / [`SlackOAuth`]: oauth.v2.access (code exchange, refresh),
//!   auth.test, auth.revoke, chat.postMessage, with the retry rules single-use
//!   credentials demand (see [`client`]).
//! - [`BoundClient`] ([`web`]): the Web API methods listeners call, bound to one
//!   tenant's token; `response_url` posts.
//! - [`SignedPayload`] ([`inbound`]): a verified body parsed once (kind, tenant ids, payload).
//! - [`RequestVerifier`]: the v0 signature check that every inbound Slack
//!   request passes before its body is trusted.
//! - [`secrets`]: newtypes that keep tokens out of logs.
//! - `fake` (feature `test-util`): an in-process fake Slack for tests.

pub mod client;
pub mod error;
pub mod inbound;
pub mod secrets;
pub mod types;
pub mod verify;
pub mod web;

#[cfg(feature = "test-util")]
pub mod fake;

pub use client::{SlackClient, SlackClientConfig, SlackOAuth};
pub use error::{SlackError, SlackErrorCode};
pub use inbound::{EventsEnvelope, ParseError, Payload, SignedPayload, TenantIds};
pub use secrets::{AccessToken, ClientSecret, RefreshToken, SigningSecret, WebhookUrl};
pub use types::{
    AuthTestResponse, AuthedUser, Enterprise, IncomingWebhook, OAuthGrant, OAuthV2Response, Team,
};
pub use verify::{
    DEFAULT_MAX_BODY_BYTES, MAX_SKEW_SECS, RequestVerifier, VerifiedRequest, VerifyError,
};
pub use web::{BoundClient, Message, MessageRef, Response, ViewRef};

#[cfg(any(test, feature = "test-util"))]
pub use verify::sign_request;
