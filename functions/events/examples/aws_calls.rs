//! AWS call accounting per authorized event (a benchmark, not a test), against
//! the DynamoDB + KMS emulator: the events router over `DynamoRepository` and
//! `KmsKeyProvider` (behind the production `CachingKeyProvider`), with counters
//! at the `Repository` and `KeyProvider` seams. N tenants installed, one warm-up
//! event each, then M `message` events round-robin; prints calls per event.
//!
//! ```sh
//! .tools/moto-venv/bin/moto_server -H 127.0.0.1 -p 5610 &
//! AWS_ENDPOINT_URL=http://127.0.0.1:5610 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 \
//!   cargo run --release -p tokenkeep-events --example aws_calls -- [tenants=100] [events=2000] [delay_ms=0]
//! ```
//! Wall time per event is the emulator's (moto, Python), not DynamoDB's. With
//! `delay_ms`, every AWS request passes a loopback proxy that holds it that
//! long before forwarding (a stand-in for the network round trip to DynamoDB
//! and KMS), so the wall time per event shows how many round trips are sequential.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use async_trait::async_trait;
use axum::body::Body;
use http::Request;
use serde_json::json;
use tower::ServiceExt as _;

use tokenkeep_envelope::testing::CountingKeyProvider;
use tokenkeep_envelope::{CacheLimits, CachingKeyProvider, KeyProvider, KmsKeyProvider};
use tokenkeep_events::{Ack, AuthorizedEvent, EventHandler, EventsState, HandlerError, router};
use tokenkeep_installations::testing::CountingRepository;
use tokenkeep_installations::testing::{
    emulator_clients_at, emulator_kms_key, emulator_repository,
};
use tokenkeep_installations::{
    Clock, DynamoRepository, Installation, InstallationStore, StoreConfig, SystemClock,
    VerifiedTenant,
};
use tokenkeep_slack_api::fake::sign_request;
use tokenkeep_slack_api::{OAuthV2Response, RequestVerifier, SigningSecret};

const SECRET: &str = "tokenkeep-test-signing-secret";

#[derive(Debug, Default)]
struct NoopHandler;

#[async_trait]
impl EventHandler for NoopHandler {
    async fn handle(&self, _ctx: AuthorizedEvent) -> Result<Ack, HandlerError> {
        Ok(Ack::Empty)
    }
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn team(i: usize) -> String {
    format!("T{i:06}")
}

/// Requests the proxy held (one per HTTP call it saw start).
static DELAYED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A loopback TCP proxy to `upstream` that holds the first bytes of each
/// request `delay` before forwarding them: one added latency per HTTP call on
/// keep-alive connections (a request starts when the client writes after the
/// previous response, or first). Returns the proxy's address.
async fn delay_proxy(upstream: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (client, _) = listener.accept().await.unwrap();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    return;
                };
                // No Nagle: a held request's header and body writes go out at once.
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let new_request = Arc::new(AtomicBool::new(true));
                let seen = new_request.clone();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match cr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if seen.swap(false, Ordering::SeqCst) {
                            DELAYED.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(delay).await;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                };
                let down = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match sr.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        new_request.store(true, Ordering::SeqCst);
                    }
                    let _ = cw.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    addr
}

#[tokio::main]
async fn main() {
    let tenants = arg(1, 100);
    let events = arg(2, 2000);
    let delay = Duration::from_millis(arg(3, 0) as u64);
    let (mut dynamo, _client, table, audit) = emulator_repository().await;
    let (mut kms, key_arn) = emulator_kms_key().await;
    if !delay.is_zero() {
        let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL: the emulator");
        let upstream = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let proxy = delay_proxy(upstream.to_owned(), delay).await;
        let (ddb, kms_client) = emulator_clients_at(&format!("http://{proxy}")).await;
        dynamo = DynamoRepository::new(ddb, &table, &audit);
        kms = kms_client;
    }
    let repo = Arc::new(CountingRepository::new(Arc::new(dynamo)));
    let kms = Arc::new(CountingKeyProvider::new(KmsKeyProvider::new(kms, key_arn)));
    let keys: Arc<dyn KeyProvider> =
        Arc::new(CachingKeyProvider::new(kms.clone(), CacheLimits::default()));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Arc::new(
        InstallationStore::new(repo.clone(), keys, StoreConfig::new("A0BENCH"))
            .with_clock(clock.clone()),
    );
    for i in 0..tenants {
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
    let app = router(EventsState {
        store,
        verifier: RequestVerifier::new(SigningSecret::new(SECRET)),
        handler: Arc::new(NoopHandler),
        clock: clock.clone(),
    });
    let secret = SigningSecret::new(SECRET);
    let send = |n: usize| {
        let team = team(n % tenants);
        let body = json!({
            "type": "event_callback", "team_id": team, "api_app_id": "A0BENCH", "event_id": format!("Ev{n:012}"),
            "event_time": 0, "event": { "type": "message", "channel": "C1", "user": "U1", "text": "hello", "ts": "1.0" },
            "authorizations": [{ "team_id": team, "is_enterprise_install": false }],
        })
        .to_string();
        let ts = clock.now_secs();
        let req = Request::post("/slack/events")
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header(
                "x-slack-signature",
                sign_request(&secret, ts, body.as_bytes()),
            )
            .body(Body::from(body))
            .unwrap();
        let app = app.clone();
        async move {
            let resp = app.oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    };

    // Warm-up: one event per tenant, so every data key has been decrypted once.
    for n in 0..tenants {
        send(n).await;
    }
    let cold_decrypts = kms.decrypts.load(Ordering::Relaxed);
    repo.reset();
    let kms_before = kms.total();
    let generates_before = kms.generates.load(Ordering::Relaxed);

    let delayed_before = DELAYED.load(Ordering::Relaxed);
    let started = Instant::now();
    for n in tenants..tenants + events {
        send(n).await;
    }
    let wall = started.elapsed();
    let per = |x: u64| x as f64 / events as f64;
    println!(
        "aws_calls: {tenants} tenants on the emulator (DynamoDB + KMS), {events} authorized message events, warm data-key cache"
    );
    println!(
        "  warm-up KMS decrypts   {cold_decrypts} ({:.2} per tenant)",
        cold_decrypts as f64 / tenants as f64
    );
    println!(
        "  DynamoDB calls         {:.3} per event",
        per(repo.total())
    );
    for (method, n) in repo.by_method() {
        println!("    {method:<20} {:.3} per event", per(n));
    }
    println!(
        "  KMS calls              {:.4} per event (decrypt {}, generate {})",
        per(kms.total() - kms_before),
        kms.decrypts.load(Ordering::Relaxed) - cold_decrypts,
        kms.generates.load(Ordering::Relaxed) - generates_before
    );
    println!(
        "  wall time              {:.2} ms per event (emulator round trips, sequential; {} ms added per AWS call)",
        wall.as_secs_f64() * 1e3 / events as f64,
        delay.as_millis()
    );
    if !delay.is_zero() {
        println!(
            "  requests through the proxy {:.3} per event",
            per(DELAYED.load(Ordering::Relaxed) - delayed_before)
        );
    }
}
