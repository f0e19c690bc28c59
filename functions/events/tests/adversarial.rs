//! Hostile input on `POST /slack/events`, beyond the cases of
//! `events_flow.rs` (`bad_inputs_never_reach_the_store` already covers a
//! missing signature or timestamp, another secret, one changed body byte,
//! timestamps 6 min old/ahead, oversized bodies, malformed JSON and forms, and
//! `an_event_for_tenant_a_never_reads_tenant_b` a signed body with the tenant
//! swapped). Every refused request must cost nothing: no store call at all
//! (counted by `CountingRepository`), no audit record, no handler call and no
//! call to Slack. Also: failure responses carry no secret, and an audit outage
//! means no token reaches the handler.
//!
//! Requests are signed with the TEST secret of `events_flow.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use tokenkeep_envelope::testing::{Fault, FaultyKeyProvider};
use tokenkeep_envelope::{CacheLimits, CachingKeyProvider, KeyProvider, LocalKeyProvider};
use tokenkeep_events::{
    Ack, AuthorizedEvent, EventHandler, EventsState, HandlerError, MentionReplier, Metric,
    MetricsSink, router_with_metrics,
};
use tokenkeep_installations::testing::{
    CountingRepository, FaultyRepository, ManualClock, RepoFault,
};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, ReadContext, Repository as _,
    StoreConfig, TenantKey, VerifiedTenant,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, sign_request};
use tokenkeep_slack_api::{RequestVerifier, SigningSecret, SlackOAuth as _};

/// TEST value; see `events_flow.rs`.
const SIGNING_SECRET: &str = "tokenkeep-test-signing-secret";
const NOW: i64 = 1_767_225_600;
const APP_ID: &str = "A0001";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

#[derive(Debug, Default)]
struct Handled {
    calls: AtomicU64,
    fingerprints: Mutex<Vec<String>>,
    fail: std::sync::atomic::AtomicBool,
}

/// Counts calls, then replies through the example handler (so a wrongly
/// accepted mention would show in the fake Slack's counters).
#[derive(Debug)]
struct CountingHandler {
    seen: Arc<Handled>,
    inner: MentionReplier,
}

#[async_trait]
impl EventHandler for CountingHandler {
    async fn handle(&self, ctx: AuthorizedEvent) -> Result<Ack, HandlerError> {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .fingerprints
            .lock()
            .unwrap()
            .push(ctx.bot_token.fingerprint());
        if self.seen.fail.load(Ordering::SeqCst) {
            return Err(HandlerError::MalformedEvent("injected failure"));
        }
        self.inner.handle(ctx).await
    }
}

#[derive(Debug, Default)]
struct NoMetrics;
impl MetricsSink for NoMetrics {
    fn count(&self, _: Metric) {}
}

/// What an install put in the store, to search responses for.
struct Secrets {
    all: Vec<String>,
}

struct Harness {
    router: Router,
    store: Arc<InstallationStore>,
    /// The storage under the decorators: what tests inspect without being counted.
    raw: Arc<EmbeddedRepository>,
    counting: Arc<CountingRepository>,
    faults: Arc<FaultyRepository>,
    kms: Arc<FaultyKeyProvider<LocalKeyProvider>>,
    verifier_clock: Arc<ManualClock>,
    slack: FakeSlack,
    handled: Arc<Handled>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(EmbeddedRepository::in_memory().unwrap());
        let faults = Arc::new(
            FaultyRepository::new(raw.clone()).with_timeout(std::time::Duration::from_millis(50)),
        );
        let counting = Arc::new(CountingRepository::new(faults.clone()));
        let kms = Arc::new(FaultyKeyProvider::new(
            LocalKeyProvider::open(dir.path(), "test").unwrap(),
        ));
        let keys: Arc<dyn KeyProvider> = Arc::new(CachingKeyProvider::new(
            kms.clone(),
            CacheLimits::disabled(),
        ));
        let verifier_clock = Arc::new(ManualClock::at_secs(NOW));
        let store = Arc::new(
            InstallationStore::new(counting.clone(), keys, StoreConfig::new(APP_ID))
                .with_clock(Arc::new(ManualClock::at_secs(NOW))),
        );
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let handled = Arc::new(Handled::default());
        let handler = Arc::new(CountingHandler {
            seen: handled.clone(),
            inner: MentionReplier {
                slack: slack.client(),
            },
        });
        let state = EventsState {
            store: store.clone(),
            verifier: RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
            handler,
            clock: verifier_clock.clone() as Arc<dyn Clock>,
        };
        let router = router_with_metrics(state, Arc::new(NoMetrics));
        Self {
            router,
            store,
            raw,
            counting,
            faults,
            kms,
            verifier_clock,
            slack,
            handled,
            _dir: dir,
        }
    }

    /// Installs `team` (bot token, refresh token, user token, webhook); returns every secret Slack issued.
    async fn install(&self, team: &str) -> Secrets {
        let code = format!("code-{team}");
        let spec = InstallSpec {
            with_user_token: true,
            with_webhook: true,
            ..InstallSpec::workspace(team)
        };
        self.slack.add_install(&code, spec);
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        let mut all = vec![];
        all.extend(
            resp.access_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
        );
        all.extend(
            resp.refresh_token
                .as_ref()
                .map(|t| t.expose_secret().to_owned()),
        );
        if let Some(user) = &resp.authed_user {
            all.extend(
                user.access_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
            );
            all.extend(
                user.refresh_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_owned()),
            );
        }
        all.extend(
            resp.incoming_webhook
                .as_ref()
                .map(|w| w.url.expose_secret().to_owned()),
        );
        assert!(
            all.len() >= 4,
            "the fake issued the secrets this test searches for"
        );
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let inst = Installation::from_oauth_response(resp, NOW).unwrap();
        self.store.store_installation(&tenant, &inst).await.unwrap();
        all.push(SIGNING_SECRET.to_owned());
        all.push(
            FakeSlackConfig::default()
                .client_secret
                .expose_secret()
                .to_owned(),
        );
        Secrets { all }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, String, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = format!("{:?}", resp.headers());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, body.to_vec())
    }

    async fn audit_count(&self) -> usize {
        self.raw.query_audit(None, 0, 100_000).await.unwrap().len()
    }

    /// Everything a request could have cost: store calls, audit records, handler calls, Slack calls.
    async fn cost(&self) -> (u64, usize, u64, u64) {
        let slack_calls =
            self.slack.calls("chat.postMessage") + self.slack.calls("oauth.v2.access");
        let audit = self.audit_count().await;
        (
            self.counting.total(),
            audit,
            self.handled.calls.load(Ordering::SeqCst),
            slack_calls,
        )
    }
}

fn callback(team: &str, event_id: &str) -> String {
    json!({
        "token": "unused", "team_id": team, "api_app_id": APP_ID, "type": "event_callback",
        "event_id": event_id, "event_time": NOW,
        "event": { "type": "app_mention", "user": "U0FROM", "text": "<@UBOT> hi", "ts": "1.0", "channel": "C1", "event_ts": "1.0" },
        "authorizations": [{ "enterprise_id": null, "team_id": team, "user_id": "UBOT", "is_bot": true, "is_enterprise_install": false }],
    })
    .to_string()
}

fn sig(ts: i64, body: &[u8]) -> String {
    sign_request(&SigningSecret::new(SIGNING_SECRET), ts, body)
}

/// A request with exactly these headers, in this order (duplicates kept).
fn raw(headers: &[(&str, &[u8])], body: impl Into<Body>) -> Request<Body> {
    let mut req = Request::post("/slack/events");
    for (name, value) in headers {
        req = req.header(*name, http::HeaderValue::from_bytes(value).unwrap());
    }
    req.body(body.into()).unwrap()
}

fn signed_at(ts: i64, content_type: &str, body: Vec<u8>) -> Request<Body> {
    let s = sig(ts, &body);
    raw(
        &[
            ("content-type", content_type.as_bytes()),
            ("x-slack-request-timestamp", ts.to_string().as_bytes()),
            ("x-slack-signature", s.as_bytes()),
        ],
        body,
    )
}

fn signed(content_type: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
    signed_at(NOW, content_type, body.into())
}

fn assert_generic(name: &str, body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!(
            "{name}: generic JSON body, got {:?}",
            String::from_utf8_lossy(body)
        )
    });
    assert_eq!(v["ok"], false, "{name}");
    assert!(
        v.as_object()
            .unwrap()
            .keys()
            .all(|k| ["ok", "request_id", "error"].contains(&k.as_str())),
        "{name}: {v}"
    );
}

/// A JSON value nested `depth` times: `[[[...]]]`.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

// ---- cases -------------------------------------------------------------------

/// Every request here is refused before anything is looked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_at_no_cost() {
    // Given an installed tenant, so a wrongly accepted request would read its token
    let h = Harness::new().await;
    h.install("T0ADV").await;
    let body = callback("T0ADV", "Ev0ADV1").into_bytes();
    let good = sig(NOW, &body);
    let ts = NOW.to_string();
    let ct: &[u8] = JSON.as_bytes();
    let with = |extra: &[(&str, &[u8])]| {
        let mut headers: Vec<(&str, &[u8])> = vec![("content-type", ct)];
        headers.extend_from_slice(extra);
        raw(&headers, body.clone())
    };
    let upper = good.to_uppercase().replace("V0=", "v0=");
    let v1 = good.replace("v0=", "v1=");
    let bare = good.trim_start_matches("v0=").to_owned();
    let trailing = format!("{good} ");
    let ten_mb = vec![b'['; 10 * 1024 * 1024];
    let ten_mb_sig = sig(NOW, &ten_mb);
    let bomb = nested(100_000).into_bytes();
    let bomb_in_event = format!(
        r#"{{"type":"event_callback","team_id":"T0ADV","event_id":"Ev0BOMB","event":{}}}"#,
        nested(100_000)
    )
    .into_bytes();
    let bomb_in_payload = format!(
        "payload={}",
        nested(50_000).replace('[', "%5B").replace(']', "%5D")
    )
    .into_bytes();
    let mut not_utf8 = body.clone();
    not_utf8.splice(10..10, [0xff, 0xfe, 0xc3]);
    let dup_team = r#"{"type":"event_callback","team_id":"T0OTHER","team_id":"T0ADV","event_id":"Ev0DUP","event":{"type":"app_mention"}}"#.to_owned();
    let dup_auth = r#"{"type":"event_callback","event_id":"Ev0DUP2","event":{"type":"app_mention"},"authorizations":[{"team_id":"T0OTHER","team_id":"T0ADV"}]}"#.to_owned();

    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        // Signature header forms
        (
            "signature sent twice (good + junk)",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", good.as_bytes()),
                ("x-slack-signature", b"v0=00"),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signature sent twice (both good)",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", good.as_bytes()),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "timestamp sent twice",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signature in upper-case hex",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", upper.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signature with version v1",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", v1.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signature without its version",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", bare.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signature with a trailing space",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", trailing.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "empty signature",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", b""),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-UTF-8 signature header",
            with(&[
                ("x-slack-request-timestamp", ts.as_bytes()),
                ("x-slack-signature", b"v0=\xff\xfe"),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        // Timestamp forms (the signature is over the canonical text)
        (
            "timestamp with a plus sign",
            with(&[
                ("x-slack-request-timestamp", format!("+{ts}").as_bytes()),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "timestamp with a leading zero",
            with(&[
                ("x-slack-request-timestamp", format!("0{ts}").as_bytes()),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "negative timestamp",
            with(&[
                ("x-slack-request-timestamp", b"-1"),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "timestamp past i64",
            with(&[
                ("x-slack-request-timestamp", b"99999999999999999999999"),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "fractional timestamp",
            with(&[
                ("x-slack-request-timestamp", format!("{ts}.0").as_bytes()),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-UTF-8 timestamp header",
            with(&[
                ("x-slack-request-timestamp", b"17\xff"),
                ("x-slack-signature", good.as_bytes()),
            ]),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed 10 years ahead",
            signed_at(NOW + 315_360_000, JSON, body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed at the epoch",
            signed_at(0, JSON, body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        // Bodies
        (
            "non-UTF-8 body, forged",
            raw(
                &[
                    ("content-type", ct),
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", good.as_bytes()),
                ],
                not_utf8.clone(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "non-UTF-8 JSON body, validly signed",
            signed(JSON, not_utf8.clone()),
            StatusCode::BAD_REQUEST,
        ),
        // (non-UTF-8 in a signed form's free text is Slack's to send: decoded lossily and processed)
        (
            "non-UTF-8 team id in a signed form",
            signed(FORM, b"command=%2Fx&team_id=T0AD\xff\xfeV&text=hi".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "percent-encoded non-UTF-8 team id",
            signed(FORM, b"command=%2Fx&team_id=T0AD%FF%FEV&text=hi".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "10 MB, declared",
            raw(
                &[
                    ("content-type", ct),
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", ten_mb_sig.as_bytes()),
                    ("content-length", ten_mb.len().to_string().as_bytes()),
                ],
                ten_mb.clone(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "10 MB, content-length understated",
            raw(
                &[
                    ("content-type", ct),
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", ten_mb_sig.as_bytes()),
                    ("content-length", b"2"),
                ],
                Body::from_stream(futures::stream::iter(
                    ten_mb
                        .chunks(256 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                )),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "10 MB declared, nothing sent",
            raw(
                &[
                    ("content-type", ct),
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", good.as_bytes()),
                    ("content-length", b"10485760"),
                ],
                Body::empty(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        // JSON bombs: serde_json's depth limit, no stack overflow, no token read
        (
            "100k '[' validly signed",
            signed(JSON, bomb.clone()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "100k '[' forged",
            raw(
                &[
                    ("content-type", ct),
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", good.as_bytes()),
                ],
                bomb.clone(),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "100k '[' as the event",
            signed(JSON, bomb_in_event),
            StatusCode::BAD_REQUEST,
        ),
        (
            "50k '[' as an interactivity payload",
            signed(FORM, bomb_in_payload),
            StatusCode::BAD_REQUEST,
        ),
        // Ambiguous tenants in a signed body: refused rather than guessed
        (
            "team_id twice",
            signed(JSON, dup_team),
            StatusCode::BAD_REQUEST,
        ),
        (
            "team_id twice in authorizations",
            signed(JSON, dup_auth),
            StatusCode::BAD_REQUEST,
        ),
        // No content type at all
        (
            "no content type",
            raw(
                &[
                    ("x-slack-request-timestamp", ts.as_bytes()),
                    ("x-slack-signature", good.as_bytes()),
                ],
                body.clone(),
            ),
            StatusCode::BAD_REQUEST,
        ),
    ];

    for (name, req, expected) in cases {
        let before = h.cost().await;
        // When the request is sent
        let (status, _, resp) = h.send(req).await;
        // Then it is refused with a generic body, and it cost nothing
        assert_eq!(status, expected, "{name}");
        assert_generic(name, &resp);
        assert_eq!(
            h.cost().await,
            before,
            "{name}: (store calls, audit records, handler calls, slack calls)"
        );
    }
    assert_eq!(h.slack.counters().posts, 0);
}

/// A captured, validly signed request works once; replayed inside the window
/// it is acknowledged but not processed again (the dedupe), and replayed
/// after the 5-minute window it is refused before any lookup.
#[tokio::test]
async fn a_captured_request_replayed_after_the_window_is_refused() {
    let h = Harness::new().await;
    h.install("T0RPL").await;
    let body = callback("T0RPL", "Ev0RPL").into_bytes();
    let capture = || signed(JSON, body.clone());
    // Given the genuine delivery, processed once
    let (status, _, _) = h.send(capture()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.handled.calls.load(Ordering::SeqCst), 1);
    // When the same bytes come back 5 min + 1 s later
    h.verifier_clock.advance_secs(301);
    let before = h.cost().await;
    let (status, _, resp) = h.send(capture()).await;
    // Then they are refused and cost nothing
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_generic("replay", &resp);
    assert_eq!(h.cost().await, before);
    // And a day later too
    h.verifier_clock.advance_secs(86_400);
    assert_eq!(h.send(capture()).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(h.cost().await, before);
    assert_eq!(h.slack.counters().posts, 1);
}

/// The tenant comes from the signed body only: a query string, headers or a
/// path naming another tenant change nothing.
#[tokio::test]
async fn a_query_string_or_header_cannot_name_the_tenant() {
    // Given tenants A and B
    let h = Harness::new().await;
    h.install("T0AAA").await;
    h.install("T0BBB").await;
    let body = callback("T0AAA", "Ev0QS").into_bytes();
    let s = sig(NOW, &body);
    let req = Request::post("/slack/events?team_id=T0BBB&enterprise_id=E0BBB&tenant=T%23-%23T0BBB")
        .header("content-type", JSON)
        .header("x-slack-request-timestamp", NOW.to_string())
        .header("x-slack-signature", s)
        .header("x-slack-team-id", "T0BBB")
        .header("x-tenant", "T#-#T0BBB")
        .header("x-forwarded-host", "t0bbb.example")
        .body(Body::from(body))
        .unwrap();
    // When A's signed event arrives dressed up as B's
    let (status, _, _) = h.send(req).await;
    // Then A's token answered it, and B's was never read
    assert_eq!(status, StatusCode::OK);
    let audit_of = |team: &str| {
        let pk = TenantKey::new(None, Some(team)).unwrap().pk();
        let store = h.store.clone();
        async move {
            store
                .repository()
                .query_audit(Some(&pk), 0, 100)
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!((audit_of("T0AAA").await, audit_of("T0BBB").await), (1, 0));
    assert!(h.slack.posts().iter().all(|p| p.team_id == "T0AAA"));
}

/// SECURITY.md: no unaudited reads. With the audit table down the event is
/// answered 500 (Slack retries), no handler ever holds the token, nothing is
/// posted, and the retry after recovery is processed.
#[tokio::test]
async fn audit_outage_is_500_and_no_handler_gets_a_token() {
    let h = Harness::new().await;
    h.install("T0AUD").await;
    h.faults.set_fault(RepoFault::AuditFails);
    let body = callback("T0AUD", "Ev0AUD").into_bytes();
    let (status, _, resp) = h.send(signed(JSON, body.clone())).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_generic("audit outage", &resp);
    assert_eq!(h.handled.calls.load(Ordering::SeqCst), 0);
    assert_eq!(h.slack.counters().posts, 0);
    assert_eq!(h.audit_count().await, 0);
    h.faults.set_fault(RepoFault::None);
    assert_eq!(h.send(signed(JSON, body)).await.0, StatusCode::OK);
    assert_eq!(h.handled.calls.load(Ordering::SeqCst), 1);
    assert_eq!(h.audit_count().await, 1);
}

/// Leak check: make every dependency fail in turn and search each response
/// (status line, headers, body) and each store error's Display and Debug (what
/// a log line or an `unwrap` panic would print) for any secret the tenant has,
/// the signing secret, the client secret, and the injected causes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_responses_and_errors_carry_no_secret() {
    let h = Harness::new().await;
    let secrets = h.install("T0LEAK").await;
    let tenant = VerifiedTenant::from_oauth_response(
        &serde_json::from_value(json!({"ok": true, "team": {"id": "T0LEAK"}})).unwrap(),
    )
    .unwrap();
    let mut forbidden = secrets.all.clone();
    forbidden.extend([
        "xox".to_owned(),
        "hooks.slack.com".to_owned(),
        "injected".to_owned(),
        "Unavailable".to_owned(),
    ]);

    type Setup = Box<dyn Fn(&Harness)>;
    let scenarios: Vec<(&str, Setup)> = vec![
        (
            "kms unavailable",
            Box::new(|h: &Harness| h.kms.set_fault(Fault::Unavailable)),
        ),
        (
            "kms denies",
            Box::new(|h: &Harness| h.kms.set_fault(Fault::AccessDenied)),
        ),
        (
            "dynamodb throttled",
            Box::new(|h: &Harness| h.faults.set_fault(RepoFault::Throttle)),
        ),
        (
            "dynamodb timing out",
            Box::new(|h: &Harness| h.faults.set_fault(RepoFault::Timeout)),
        ),
        (
            "audit table down",
            Box::new(|h: &Harness| h.faults.set_fault(RepoFault::AuditFails)),
        ),
        (
            "handler fails",
            Box::new(|h: &Harness| h.handled.fail.store(true, Ordering::SeqCst)),
        ),
    ];
    let mut seen_statuses = vec![];
    for (i, (name, setup)) in scenarios.iter().enumerate() {
        setup(&h);
        let (status, headers, body) = h
            .send(signed(JSON, callback("T0LEAK", &format!("Ev0LEAK{i}"))))
            .await;
        let err = h
            .store
            .bot_token(&tenant, &ReadContext::new("leak-test", "req", "leak"))
            .await
            .err();
        let shown = format!("{status} {headers} {}", String::from_utf8_lossy(&body));
        for f in &forbidden {
            assert!(
                !shown.contains(f.as_str()),
                "{name}: {f:?} leaked in the response {shown}"
            );
        }
        if let Some(e) = &err {
            // Display of the whole source chain (a log line), and Debug (an unwrap panic).
            let mut logged = format!("{e:?}");
            let mut source: Option<&dyn std::error::Error> = Some(e);
            while let Some(s) = source {
                logged.push_str(&format!(" | {s}"));
                source = s.source();
            }
            for f in secrets
                .all
                .iter()
                .map(String::as_str)
                .chain(["xox", "hooks.slack.com"])
            {
                assert!(
                    !logged.contains(f),
                    "{name}: {f:?} leaked in the error {logged}"
                );
            }
        }
        seen_statuses.push((*name, status));
        h.kms.set_fault(Fault::None);
        h.faults.set_fault(RepoFault::None);
        h.handled.fail.store(false, Ordering::SeqCst);
    }
    // The scenarios really failed (500 for dependencies, 200 for a handler error)
    let expected: Vec<StatusCode> = [500, 500, 500, 500, 500, 200]
        .into_iter()
        .map(|s| StatusCode::from_u16(s).unwrap())
        .collect();
    assert_eq!(
        seen_statuses.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
        expected,
        "{seen_statuses:?}"
    );
}
