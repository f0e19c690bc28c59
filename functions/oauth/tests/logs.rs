//! Logs are checked in their own test binary: tracing caches per-callsite
//! interest process-wide, so a thread-scoped capturing subscriber misses
//! events when other tests run in parallel without one.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use http::StatusCode;
use tokenkeep_slack_api::fake::InstallSpec;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_no_token_code_or_full_state() {
    // Given every log line of this thread captured, at every level
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let h = harness(Backend::Embedded).await;
    // When an install succeeds, a replay fails and a bad code fails
    h.slack
        .add_install("code-secret-1", full_spec(InstallSpec::workspace("T1")));
    let ok = h.start_install().await;
    let (status, _, _) = h
        .redirect(
            &format!("code=code-secret-1&state={}", ok.state),
            Some(&ok.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = h
        .redirect(
            &format!("code=code-secret-1&state={}", ok.state),
            Some(&ok.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let bad = h.start_install().await;
    let (status, _, _) = h
        .redirect(
            &format!("code=code-secret-2&state={}", bad.state),
            Some(&bad.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Then the log shows the flow (state prefixes, outcomes) but no secret
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("slack app installed") && log.contains(&ok.state[..8]),
        "{log}"
    );
    assert!(log.contains("invalid_code"), "the cause is logged: {log}");
    for secret in [
        ok.state.as_str(),
        bad.state.as_str(),
        "code-secret",
        "xox",
        "hooks.slack.com",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}
