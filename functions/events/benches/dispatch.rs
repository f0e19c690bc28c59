//! One Slack event through the whole router, in process: body read, signature
//! verification, parse, tenant resolution, audited bot-token read (embedded
//! store, warm `CachingKeyProvider`), event dedupe, dispatch to a no-op handler.
//! 1,000 installed tenants, visited round-robin.
//!
//! `cargo bench -p tokenkeep-events` (add `-- --quick` for a fast run).
//! Requests are signed with the TEST secret `tokenkeep-test-signing-secret`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::Request;
use serde_json::json;
use tower::ServiceExt as _;

use tokenkeep_envelope::testing::CountingKeyProvider;
use tokenkeep_envelope::{CacheLimits, CachingKeyProvider, KeyProvider, LocalKeyProvider};
use tokenkeep_events::{Ack, AuthorizedEvent, EventHandler, EventsState, HandlerError, router};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, StoreConfig, SystemClock,
    VerifiedTenant,
};
use tokenkeep_slack_api::fake::sign_request;
use tokenkeep_slack_api::{OAuthV2Response, RequestVerifier, SigningSecret};

const TENANTS: usize = 1_000;
const SECRET: &str = "tokenkeep-test-signing-secret";

#[derive(Debug, Default)]
struct NoopHandler(AtomicU64);

#[async_trait]
impl EventHandler for NoopHandler {
    async fn handle(&self, _ctx: AuthorizedEvent) -> Result<Ack, HandlerError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Ack::Empty)
    }
}

fn team(i: usize) -> String {
    format!("T{i:06}")
}

fn bench_dispatch(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kms_like = Arc::new(CountingKeyProvider::new(
        LocalKeyProvider::open(dir.path(), "bench").unwrap(),
    ));
    let keys: Arc<dyn KeyProvider> = Arc::new(CachingKeyProvider::new(
        kms_like.clone(),
        CacheLimits::default(),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(
        InstallationStore::new(
            Arc::new(EmbeddedRepository::in_memory().unwrap()),
            keys,
            StoreConfig::new("A0BENCH"),
        )
        .with_clock(clock.clone()),
    );
    rt.block_on(async {
        for i in 0..TENANTS {
            let resp: OAuthV2Response = serde_json::from_value(json!({
                "ok": true, "app_id": "A0BENCH", "token_type": "bot", "scope": "chat:write",
                "access_token": format!("xoxb-bench-{i}"), "bot_user_id": "UBOT",
                "team": { "id": team(i), "name": "bench" }, "enterprise": null,
                "is_enterprise_install": false, "authed_user": { "id": "U0INSTALLER" },
            }))
            .unwrap();
            let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
            let installation = Installation::from_oauth_response(resp, clock.now_secs()).unwrap();
            store
                .store_installation(&tenant, &installation)
                .await
                .unwrap();
        }
    });
    let handler = Arc::new(NoopHandler::default());
    let app = router(EventsState {
        store,
        verifier: RequestVerifier::new(SigningSecret::new(SECRET)),
        handler: handler.clone(),
        clock: clock.clone(),
    });

    let secret = SigningSecret::new(SECRET);
    let seq = AtomicU64::new(0);
    let signed_event = || {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let team = team(n as usize % TENANTS);
        let body = json!({
            "type": "event_callback", "team_id": team, "api_app_id": "A0BENCH", "event_id": format!("Ev{n:012}"),
            "event_time": 0, "event": { "type": "message", "channel": "C1", "user": "U1", "text": "hello", "ts": "1.0" },
            "authorizations": [{ "team_id": team, "is_enterprise_install": false }],
        })
        .to_string();
        let ts = clock.now_secs();
        Request::post("/slack/events")
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                sign_request(&secret, ts, body.as_bytes()),
            )
            .body(Body::from(body))
            .unwrap()
    };
    let send = |req: Request<Body>| {
        let resp = rt.block_on(app.clone().oneshot(req)).unwrap();
        assert!(resp.status().is_success());
    };

    // Warm the data-key cache: one request per tenant.
    for _ in 0..TENANTS {
        send(signed_event());
    }
    let warm_decrypts = kms_like.decrypts.load(Ordering::Relaxed);
    let warm_handled = handler.0.load(Ordering::Relaxed);

    c.bench_function("dispatch_1000_tenants_warm_cache", |b| {
        b.iter_batched(&signed_event, &send, BatchSize::SmallInput)
    });

    let handled = handler.0.load(Ordering::Relaxed) - warm_handled;
    let decrypts = kms_like.decrypts.load(Ordering::Relaxed) - warm_decrypts;
    println!(
        "measured requests handled: {handled}; key-provider decrypts during measurement: {decrypts}"
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_dispatch
}
criterion_main!(benches);
