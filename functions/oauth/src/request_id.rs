//! The request id that joins a page with its log lines.

use axum::extract::FromRequestParts;
use http::request::Parts;

/// Joins a failure page with its log lines. Taken from `x-request-id` when it
/// is a plain token, else the Lambda request id, else random; so it is always
/// safe to put in HTML and logs.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub(crate) fn plain_id(s: &str) -> bool {
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
