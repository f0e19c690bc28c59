//! Its own test binary: tracing caches per-callsite interest process-wide, so
//! a thread-local capture is only reliable when no other test runs beside it.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{assert_no_plaintext, ctx, embedded_store, install, oauth_response};
use tokenkeep_installations::{Installation, RecordKey, StoreError, VerifiedTenant};

/// A `MakeWriter` that appends everything to a shared buffer.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn no_token_in_logs_or_debug_output() {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(capture.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (store, _d, _k) = embedded_store().await;
    let tenant = install(&store, "TL", 7).await;
    let token = store.bot_token(&tenant, &ctx()).await.unwrap();
    let user = store.user_token(&tenant, "U1", &ctx()).await.unwrap();
    let hook = store.incoming_webhook_url(&tenant, &ctx()).await.unwrap();
    assert_eq!(user.expose_secret(), "xoxp-user-TL-7");
    assert!(hook.expose_secret().starts_with("https://hooks.slack.com/"));
    // A failed read logs too.
    let missing = VerifiedTenant::from_oauth_response(&oauth_response("TNONE", 0)).unwrap();
    assert!(matches!(
        store.bot_token(&missing, &ctx()).await,
        Err(StoreError::NotInstalled)
    ));

    let debug = format!(
        "{token:?} {user:?} {hook:?} {store:?} {:?} {:?}",
        Installation::from_oauth_response(oauth_response("TL", 7), 0).unwrap(),
        store
            .repository()
            .get(&RecordKey::bot(tenant.key().clone()))
            .await
            .unwrap()
    );
    assert_no_plaintext(&debug, "Debug output");

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("token read"),
        "the audit log line was captured: {logs}"
    );
    assert!(logs.contains("not_installed"));
    assert_no_plaintext(&logs, "captured TRACE logs");
}
