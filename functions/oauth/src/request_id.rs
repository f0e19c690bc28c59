//! The request id that joins a page with its log lines.
//!
//! The router's layers settle it before any handler runs: an incoming
//! `x-request-id` that is not a plain token is dropped ([`drop_unsafe`]),
//! tower-http's `SetRequestIdLayer` fills a missing one ([`LambdaOrRandom`])
//! and copies it to the response; handlers read it with [`RequestId`].
//! So it is always safe to put in HTML and logs.

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderValue, Request};
use tower_http::request_id::MakeRequestId;

const HEADER: &str = "x-request-id";

/// The request's id, as the router's layers settled it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub(crate) fn plain_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Drops an incoming `x-request-id` that is not a plain token, so the one
/// made in its place is what the page, the log and the response carry.
pub(crate) fn drop_unsafe<B>(mut req: Request<B>) -> Request<B> {
    let unsafe_id = req
        .headers()
        .get_all(HEADER)
        .iter()
        .any(|v| !v.to_str().is_ok_and(plain_id));
    if unsafe_id || req.headers().get_all(HEADER).iter().count() > 1 {
        req.headers_mut().remove(HEADER);
    }
    req
}

/// The Lambda request id when there is one, else random hex.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LambdaOrRandom;

impl MakeRequestId for LambdaOrRandom {
    fn make_request_id<B>(
        &mut self,
        req: &Request<B>,
    ) -> Option<tower_http::request_id::RequestId> {
        let id = req
            .extensions()
            .get::<lambda_http::Context>()
            .map(|c| c.request_id.clone())
            .filter(|s| plain_id(s))
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
        HeaderValue::from_str(&id)
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Plain by construction behind the router's layers; checked again so
        // the handlers stay safe if mounted without them.
        let id = parts
            .headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| plain_id(s));
        Ok(RequestId(match id {
            Some(id) => id.to_owned(),
            None => hex::encode(rand::random::<[u8; 8]>()),
        }))
    }
}
