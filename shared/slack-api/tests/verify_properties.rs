//! The verifier accepts exactly the validly signed requests: its answer is
//! compared with an independent oracle (HMAC-SHA256 over `v0:{ts}:{body}`,
//! computed here) over generated secrets, bodies, timestamp texts, clocks and
//! signature texts, most of them near-misses of a valid one. The unit
//! proptests in `src/verify.rs` cover single-byte changes and the window.

use bytes::Bytes;
use hmac::{Hmac, Mac};
use proptest::prelude::*;
use sha2::Sha256;
use tokenkeep_slack_api::{MAX_SKEW_SECS, RequestVerifier, SigningSecret};

/// Slack's rule, written from its documentation, not from our code.
fn oracle(
    secret: &str,
    ts_text: &str,
    sig_text: &str,
    body: &[u8],
    now: i64,
    max_body: usize,
) -> bool {
    if body.len() > max_body {
        return false;
    }
    if ts_text.is_empty() || ts_text.len() > 18 || !ts_text.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let ts: i64 = ts_text.parse().unwrap();
    if (now - ts).abs() > MAX_SKEW_SECS {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts_text}:").as_bytes());
    mac.update(body);
    sig_text == format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac_text(secret: &str, ts_text: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("v0:{ts_text}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Timestamp texts: canonical, leading zeros, signs, spaces, junk.
fn ts_text(ts: i64) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(ts.to_string()),
        1 => Just(format!("0{ts}")),
        1 => Just(format!("+{ts}")),
        1 => Just(format!(" {ts}")),
        1 => Just(format!("{ts}.5")),
        1 => "[0-9]{0,22}",
        1 => "[ -~]{0,12}",
    ]
}

#[derive(Debug, Clone)]
enum SigKind {
    Valid,
    OtherSecret,
    OtherBody,
    OtherTimestamp,
    Upper,
    Truncated,
    Extended,
    V1,
    RandomHex(String),
    Junk(String),
}

fn sig_kind() -> impl Strategy<Value = SigKind> {
    prop_oneof![
        6 => Just(SigKind::Valid),
        1 => Just(SigKind::OtherSecret),
        1 => Just(SigKind::OtherBody),
        1 => Just(SigKind::OtherTimestamp),
        1 => Just(SigKind::Upper),
        1 => Just(SigKind::Truncated),
        1 => Just(SigKind::Extended),
        1 => Just(SigKind::V1),
        1 => "[0-9a-f]{64}".prop_map(SigKind::RandomHex),
        1 => "[ -~]{0,80}".prop_map(SigKind::Junk),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn verifier_accepts_exactly_what_the_oracle_accepts(
        secret in "[ -~]{1,48}",
        body in proptest::collection::vec(any::<u8>(), 0..600),
        ts in 0i64..4_000_000_000,
        skew in -(2 * MAX_SKEW_SECS)..=(2 * MAX_SKEW_SECS),
        ts_text in (0i64..4_000_000_000).prop_flat_map(ts_text),
        use_generated_ts in any::<bool>(),
        kind in sig_kind(),
        max_body in prop_oneof![Just(1024 * 1024usize), 0usize..700],
    ) {
        let ts_text = if use_generated_ts { ts_text } else { ts.to_string() };
        let now = ts + skew;
        let valid = mac_text(&secret, &ts_text, &body);
        let sig_text = match &kind {
            SigKind::Valid => valid.clone(),
            SigKind::OtherSecret => mac_text(&format!("{secret}x"), &ts_text, &body),
            SigKind::OtherBody => { let mut b = body.clone(); b.push(b'x'); mac_text(&secret, &ts_text, &b) }
            SigKind::OtherTimestamp => mac_text(&secret, &format!("{}", ts + 1), &body),
            SigKind::Upper => format!("v0={}", valid[3..].to_uppercase()),
            SigKind::Truncated => valid[..valid.len() - 1].to_owned(),
            SigKind::Extended => format!("{valid}0"),
            SigKind::V1 => valid.replacen("v0=", "v1=", 1),
            SigKind::RandomHex(h) => format!("v0={h}"),
            SigKind::Junk(j) => j.clone(),
        };
        let expected = oracle(&secret, &ts_text, &sig_text, &body, now, max_body);
        let verifier = RequestVerifier::new(SigningSecret::new(secret.clone())).with_max_body(max_body);
        let got = verifier.verify_at(now, Some(&ts_text), Some(&sig_text), Bytes::from(body.clone()));
        prop_assert_eq!(got.is_ok(), expected, "kind {:?} ts {:?} now {} got {:?}", kind, ts_text, now, got.as_ref().err());
        if let Ok(v) = got {
            prop_assert_eq!(v.body(), &body[..]);
        }
    }

    /// Through a header map: exactly one of each header, and the same answer as the oracle.
    #[test]
    fn header_map_verification_matches_the_oracle_and_refuses_duplicates(
        secret in "[a-z0-9]{8,32}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        ts in 1_600_000_000i64..1_900_000_000,
        skew in -(2 * MAX_SKEW_SECS)..=(2 * MAX_SKEW_SECS),
        duplicate in 0u8..3,
    ) {
        let ts_text = ts.to_string();
        let sig = mac_text(&secret, &ts_text, &body);
        let mut headers = http::HeaderMap::new();
        headers.append("x-slack-request-timestamp", ts_text.parse().unwrap());
        headers.append("x-slack-signature", sig.parse().unwrap());
        match duplicate {
            1 => { headers.append("x-slack-signature", sig.parse().unwrap()); }
            2 => { headers.append("x-slack-request-timestamp", ts_text.parse().unwrap()); }
            _ => {}
        }
        let verifier = RequestVerifier::new(SigningSecret::new(secret.clone()));
        let got = verifier.verify_headers_at(ts + skew, &headers, Bytes::from(body.clone())).is_ok();
        let expected = duplicate == 0 && oracle(&secret, &ts_text, &sig, &body, ts + skew, usize::MAX);
        prop_assert_eq!(got, expected);
    }
}
