//! Slack request signature verification (v0).
//!
//! Every request to `/slack/events` must pass here before anything reads its
//! body: this is what turns "someone POSTed JSON claiming to be team T" into a
//! [`VerifiedRequest`]. The checks run cheapest first (body size, timestamp
//! window, then HMAC), the MAC is compared in constant time, and no error
//! carries the given or computed MAC, so logs and responses teach an attacker
//! nothing.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::SigningSecret;

type HmacSha256 = Hmac<Sha256>;

/// Default body limit: 1 MiB.
///
/// Most Slack payloads are a few KB, but message events may carry up to
/// 40,000 characters of text plus blocks repeating it, and interaction
/// payloads carry whole modal views (up to 100 blocks); with JSON escaping
/// these reach a few hundred KB. Rejecting a genuine event is costly (Slack
/// retries, then disables the subscription when failures pile up), while a
/// generous cap costs little: Lambda has already buffered the body (API
/// Gateway caps it near 6 MB) and HMAC-SHA256 over 1 MiB takes about a
/// millisecond. The cap exists to bound unauthenticated work, not memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Slack's replay window: a request older or newer than this is refused.
pub const MAX_SKEW_SECS: i64 = 300;

const TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";
const SIGNATURE_HEADER: &str = "x-slack-signature";

/// Why a request was refused. Deliberately coarse: the variant names the
/// header at fault but never echoes a value or a MAC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("request timestamp outside the allowed window")]
    Stale,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request signature does not match")]
    BadSignature,
}

/// Checks Slack's `X-Slack-Signature` over the raw body with the app's signing secret.
#[derive(Clone)]
pub struct RequestVerifier {
    secret: SigningSecret,
    max_body: usize,
}

impl std::fmt::Debug for RequestVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestVerifier")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

impl RequestVerifier {
    /// A verifier with [`DEFAULT_MAX_BODY_BYTES`].
    pub fn new(secret: SigningSecret) -> Self {
        Self {
            secret,
            max_body: DEFAULT_MAX_BODY_BYTES,
        }
    }

    /// Overrides the body limit (e.g. lower for an endpoint that only takes slash commands).
    pub fn with_max_body(mut self, n: usize) -> Self {
        self.max_body = n;
        self
    }

    /// The body limit in bytes; handlers use it to cap how much they read.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Verifies a request at `now_unix` (seconds). `timestamp` and `signature`
    /// are the raw `X-Slack-Request-Timestamp` and `X-Slack-Signature` values.
    ///
    /// The timestamp is signed exactly as sent, so it is used verbatim in the
    /// base string; it must be plain ASCII digits.
    pub fn verify_at(
        &self,
        now_unix: i64,
        timestamp: Option<&str>,
        signature: Option<&str>,
        body: Bytes,
    ) -> Result<VerifiedRequest, VerifyError> {
        if body.len() > self.max_body {
            return Err(VerifyError::BodyTooLarge);
        }

        let ts_text = timestamp.ok_or(VerifyError::MissingHeader(TIMESTAMP_HEADER))?;
        let ts = parse_timestamp(ts_text).ok_or(VerifyError::MalformedHeader(TIMESTAMP_HEADER))?;
        if now_unix.abs_diff(ts) > MAX_SKEW_SECS.unsigned_abs() {
            return Err(VerifyError::Stale);
        }

        let sig_text = signature.ok_or(VerifyError::MissingHeader(SIGNATURE_HEADER))?;
        let given =
            parse_signature(sig_text).ok_or(VerifyError::MalformedHeader(SIGNATURE_HEADER))?;

        // verify_slice compares in constant time and consumes the MAC state;
        // only a yes/no leaves this line.
        self.mac(ts_text, &body)
            .verify_slice(&given)
            .map_err(|_| VerifyError::BadSignature)?;

        Ok(VerifiedRequest {
            body,
            timestamp: ts,
        })
    }

    /// Like [`verify_at`](Self::verify_at), reading the two headers from a map.
    /// A header sent twice is malformed: which copy was signed is ambiguous.
    pub fn verify_headers_at(
        &self,
        now_unix: i64,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> Result<VerifiedRequest, VerifyError> {
        if body.len() > self.max_body {
            return Err(VerifyError::BodyTooLarge);
        }
        let timestamp = single_header(headers, TIMESTAMP_HEADER)?;
        let signature = single_header(headers, SIGNATURE_HEADER)?;
        self.verify_at(now_unix, timestamp, signature, body)
    }

    /// [`verify_headers_at`](Self::verify_headers_at) at the system clock; for handlers.
    pub fn verify_headers(
        &self,
        headers: &http::HeaderMap,
        body: Bytes,
    ) -> Result<VerifiedRequest, VerifyError> {
        self.verify_headers_at(unix_now(), headers, body)
    }

    fn mac(&self, ts_text: &str, body: &[u8]) -> HmacSha256 {
        signing_mac(&self.secret, ts_text, body)
    }
}

/// Only this module can build one: proof that the body was signed by Slack within the window.
#[derive(Debug, Clone)]
pub struct VerifiedRequest {
    body: Bytes,
    timestamp: i64,
}

impl VerifiedRequest {
    /// The raw body exactly as signed.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The raw body as a cheaply clonable buffer.
    pub fn bytes(&self) -> &Bytes {
        &self.body
    }

    /// The signed request timestamp (unix seconds).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }
}

fn signing_mac(secret: &SigningSecret, ts_text: &str, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret.expose_secret().as_bytes())
        .expect("hmac takes any key length");
    mac.update(b"v0:");
    mac.update(ts_text.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac
}

fn single_header<'a>(
    headers: &'a http::HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, VerifyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(VerifyError::MalformedHeader(name));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| VerifyError::MalformedHeader(name))
}

/// ASCII digits only: `str::parse` would also take `+`, which Slack never sends.
fn parse_timestamp(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `v0=` followed by exactly 64 lowercase hex digits, decoded on the stack.
/// Uppercase is refused so that each signature has one spelling: a changed
/// byte can never still verify.
fn parse_signature(s: &str) -> Option<[u8; 32]> {
    let hex = s.strip_prefix("v0=")?.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = (lower_hex_digit(pair[0])? << 4) | lower_hex_digit(pair[1])?;
    }
    Some(out)
}

fn lower_hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The `X-Slack-Signature` value Slack would send for this body: for tests
/// that need to drive a handler with a genuinely signed request.
#[cfg(any(test, feature = "test-util"))]
pub fn sign_request(secret: &SigningSecret, timestamp: i64, body: &[u8]) -> String {
    let tag = signing_mac(secret, &timestamp.to_string(), body)
        .finalize()
        .into_bytes();
    format!("v0={}", hex::encode(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
    const TS: i64 = 1_531_420_618;
    const BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
    const SIG: &str = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

    fn verifier() -> RequestVerifier {
        RequestVerifier::new(SigningSecret::new(SECRET))
    }

    fn check(
        ts: Option<&str>,
        sig: Option<&str>,
        body: &'static str,
    ) -> Result<VerifiedRequest, VerifyError> {
        verifier().verify_at(TS, ts, sig, Bytes::from_static(body.as_bytes()))
    }

    #[test]
    fn slack_documented_vector_verifies() {
        // Given Slack's documented example, when verified at its own timestamp
        let ok = check(Some("1531420618"), Some(SIG), BODY).unwrap();
        // Then the request is accepted with its body and timestamp intact
        assert_eq!(ok.body(), BODY.as_bytes());
        assert_eq!(ok.timestamp(), TS);
    }

    #[test]
    fn sign_request_reproduces_the_vector() {
        // Given the documented secret, timestamp and body, when signed, then Slack's value comes out
        assert_eq!(
            sign_request(&SigningSecret::new(SECRET), TS, BODY.as_bytes()),
            SIG
        );
    }

    #[test]
    fn each_verify_error_is_reachable() {
        // Given a well-formed request, when one thing at a time is wrong, then the matching error
        assert_eq!(
            check(None, Some(SIG), BODY).unwrap_err(),
            VerifyError::MissingHeader(TIMESTAMP_HEADER)
        );
        assert_eq!(
            check(Some("1531420618"), None, BODY).unwrap_err(),
            VerifyError::MissingHeader(SIGNATURE_HEADER)
        );
        for bad_ts in [
            "",
            "+1531420618",
            "-5",
            " 1531420618",
            "15314x0618",
            "99999999999999999999",
        ] {
            assert_eq!(
                check(Some(bad_ts), Some(SIG), BODY).unwrap_err(),
                VerifyError::MalformedHeader(TIMESTAMP_HEADER),
                "{bad_ts:?}"
            );
        }
        let upper = SIG.to_uppercase().replace("V0=", "v0=");
        let v1 = SIG.replace("v0=", "v1=");
        let short = &SIG[..SIG.len() - 2];
        for bad_sig in [
            "",
            "v0=",
            short,
            v1.as_str(),
            upper.as_str(),
            &format!("{SIG}00"),
        ] {
            assert_eq!(
                check(Some("1531420618"), Some(bad_sig), BODY).unwrap_err(),
                VerifyError::MalformedHeader(SIGNATURE_HEADER),
                "{bad_sig:?}"
            );
        }
        assert_eq!(
            check(Some("1531420619"), Some(SIG), BODY).unwrap_err(),
            VerifyError::BadSignature
        );
        assert_eq!(
            check(Some("1531420000"), Some(SIG), BODY).unwrap_err(),
            VerifyError::Stale
        );
        let small = verifier().with_max_body(BODY.len() - 1);
        assert_eq!(small.max_body(), BODY.len() - 1);
        assert_eq!(
            small
                .verify_at(
                    TS,
                    Some("1531420618"),
                    Some(SIG),
                    Bytes::from_static(BODY.as_bytes())
                )
                .unwrap_err(),
            VerifyError::BodyTooLarge
        );
    }

    #[test]
    fn size_is_checked_before_timestamp_and_timestamp_before_signature() {
        // Given a request wrong in every way, when verified with a tiny limit, then size is reported
        let tiny = verifier().with_max_body(1);
        assert_eq!(
            tiny.verify_at(0, None, None, Bytes::from_static(b"xx"))
                .unwrap_err(),
            VerifyError::BodyTooLarge
        );
        // And given a stale request with a bad signature, then staleness is reported first
        assert_eq!(
            check(Some("1"), Some("garbage"), BODY).unwrap_err(),
            VerifyError::Stale
        );
    }

    #[test]
    fn window_edges_are_inclusive() {
        // Given the vector, when checked exactly 300s before and after, then it passes; at 301s it fails
        let v = verifier();
        let body = || Bytes::from_static(BODY.as_bytes());
        for now in [TS - MAX_SKEW_SECS, TS + MAX_SKEW_SECS] {
            assert!(
                v.verify_at(now, Some("1531420618"), Some(SIG), body())
                    .is_ok(),
                "{now}"
            );
        }
        for now in [
            TS - MAX_SKEW_SECS - 1,
            TS + MAX_SKEW_SECS + 1,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                v.verify_at(now, Some("1531420618"), Some(SIG), body())
                    .unwrap_err(),
                VerifyError::Stale
            );
        }
    }

    #[test]
    fn headers_map_variant_reads_and_rejects_duplicates() {
        // Given a header map carrying the vector's headers
        let mut headers = http::HeaderMap::new();
        headers.insert(TIMESTAMP_HEADER, "1531420618".parse().unwrap());
        headers.insert("X-Slack-Signature", SIG.parse().unwrap());
        let body = || Bytes::from_static(BODY.as_bytes());
        // When verified, then it passes
        assert!(verifier().verify_headers_at(TS, &headers, body()).is_ok());
        // And when a second signature value is appended, then it is malformed
        headers.append(SIGNATURE_HEADER, SIG.parse().unwrap());
        assert_eq!(
            verifier()
                .verify_headers_at(TS, &headers, body())
                .unwrap_err(),
            VerifyError::MalformedHeader(SIGNATURE_HEADER)
        );
        // And a non-UTF-8 timestamp value is malformed, a missing one is missing
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TIMESTAMP_HEADER,
            http::HeaderValue::from_bytes(b"15\xff").unwrap(),
        );
        assert_eq!(
            verifier()
                .verify_headers_at(TS, &headers, body())
                .unwrap_err(),
            VerifyError::MalformedHeader(TIMESTAMP_HEADER)
        );
        assert_eq!(
            verifier()
                .verify_headers_at(TS, &http::HeaderMap::new(), body())
                .unwrap_err(),
            VerifyError::MissingHeader(TIMESTAMP_HEADER)
        );
    }

    #[test]
    fn debug_and_errors_never_show_secret_or_mac() {
        // Given a verifier and a failed verification
        let v = verifier();
        let err = check(Some("1531420619"), Some(SIG), BODY).unwrap_err();
        // When formatted, then neither the secret nor any MAC digits appear
        let shown = format!("{v:?} {err} {err:?}");
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&SIG[3..13]), "{shown}");
    }

    proptest! {
        #[test]
        fn correctly_signed_requests_verify(
            secret in "[ -~]{1,64}",
            body in proptest::collection::vec(any::<u8>(), 0..2048),
            ts in 0i64..4_000_000_000,
            skew in -MAX_SKEW_SECS..=MAX_SKEW_SECS,
        ) {
            // Given any secret, body and timestamp signed as Slack would
            let secret = SigningSecret::new(secret);
            let sig = sign_request(&secret, ts, &body);
            // When verified within the window, then it is accepted with the same body
            let ok = RequestVerifier::new(secret)
                .verify_at(ts + skew, Some(&ts.to_string()), Some(&sig), Bytes::from(body.clone()))
                .unwrap();
            prop_assert_eq!(ok.body(), &body[..]);
        }

        #[test]
        fn any_single_byte_change_of_body_fails(
            body in proptest::collection::vec(any::<u8>(), 1..1024),
            pos in any::<prop::sample::Index>(),
            flip in 1u8..=255,
        ) {
            // Given a correctly signed body
            let secret = SigningSecret::new(SECRET);
            let sig = sign_request(&secret, TS, &body);
            // When one byte of it changes
            let mut tampered = body.clone();
            let i = pos.index(tampered.len());
            tampered[i] ^= flip;
            // Then the signature no longer matches
            let r = RequestVerifier::new(secret).verify_at(TS, Some("1531420618"), Some(&sig), Bytes::from(tampered));
            prop_assert_eq!(r.unwrap_err(), VerifyError::BadSignature);
        }

        #[test]
        fn any_single_byte_change_of_signature_fails(
            pos in 0usize..SIG.len(),
            flip in 1u8..=127,
        ) {
            // Given the documented vector, when one (ASCII) byte of its signature changes
            let mut sig = SIG.as_bytes().to_vec();
            sig[pos] ^= flip;
            let sig = String::from_utf8(sig).unwrap();
            // Then it is refused, as malformed or as a bad signature
            let r = check(Some("1531420618"), Some(&sig), BODY);
            prop_assert!(
                matches!(r, Err(VerifyError::BadSignature | VerifyError::MalformedHeader(SIGNATURE_HEADER))),
                "{:?}", r
            );
        }

        #[test]
        fn timestamps_outside_the_window_fail(
            ts in 0i64..4_000_000_000,
            beyond in 1i64..1_000_000,
            later in any::<bool>(),
        ) {
            // Given a correctly signed request
            let secret = SigningSecret::new(SECRET);
            let sig = sign_request(&secret, ts, b"{}");
            // When checked more than 300s before or after its timestamp
            let now = if later { ts + MAX_SKEW_SECS + beyond } else { ts - MAX_SKEW_SECS - beyond };
            let r = RequestVerifier::new(secret).verify_at(now, Some(&ts.to_string()), Some(&sig), Bytes::from_static(b"{}"));
            // Then it is stale
            prop_assert_eq!(r.unwrap_err(), VerifyError::Stale);
        }
    }
}
