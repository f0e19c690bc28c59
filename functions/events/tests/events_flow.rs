//! The events router end to end: signed requests in, store and fake Slack
//! behind, on both repositories (embedded SQLite + local key file; DynamoDB +
//! KMS on the emulator, which needs `AWS_ENDPOINT_URL`, see infra/test.sh).
//!
//! Every request here, and every sample in `events/`, is signed with the TEST
//! signing secret `tokenkeep-test-signing-secret`. It belongs to no real Slack app.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use tokenkeep_events::{
    Ack, AuthorizedEvent, CountingMetrics, EventHandler, EventSource, EventsState, HandlerError,
    MentionReplier, Metric, router_with_metrics,
};
use tokenkeep_installations::testing::{
    CountingRepository, FaultyRepository, ManualClock, RepoFault, emulator_kms_key,
    emulator_repository, local_keys,
};
use tokenkeep_installations::{
    AuditRecord, Clock, CountingStoreMetrics, EmbeddedRepository, Expect, Installation,
    InstallationStore, Outcome, RecordKey, Repository, StoreConfig, StoreMetric, TenantKey,
    VerifiedTenant,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, sign_request};
use tokenkeep_slack_api::{AccessToken, RequestVerifier, SigningSecret, SlackOAuth as _};

/// TEST value; see the module doc.
const SIGNING_SECRET: &str = "tokenkeep-test-signing-secret";
/// The samples' `X-Slack-Request-Timestamp` (2026-01-01T00:00:00Z).
const SAMPLE_TS: i64 = 1_767_225_600;
const APP_ID: &str = "A0001";
const JSON: &str = "application/json";
const FORM: &str = "application/x-www-form-urlencoded";

// ---- doubles -----------------------------------------------------------------

/// What a handler call saw, without the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    tenant: TenantKey,
    token_fingerprint: String,
    source: EventSource,
    event_type: String,
    event_id: Option<String>,
    request_id: String,
}

/// Records each call, then runs the example [`MentionReplier`] (so mentions
/// reach the fake Slack), or fails when told to.
#[derive(Debug)]
struct RecordingHandler {
    inner: MentionReplier,
    seen: Mutex<Vec<Seen>>,
    events: Mutex<Vec<Value>>,
    fail: AtomicBool,
}

impl RecordingHandler {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventHandler for RecordingHandler {
    async fn handle(&self, ctx: AuthorizedEvent) -> Result<Ack, HandlerError> {
        self.seen.lock().unwrap().push(Seen {
            tenant: ctx.tenant.key().clone(),
            token_fingerprint: ctx.bot_token.fingerprint(),
            source: ctx.source,
            event_type: ctx.event_type.clone(),
            event_id: ctx.event_id.clone(),
            request_id: ctx.request_id.clone(),
        });
        self.events.lock().unwrap().push(ctx.event.clone());
        if self.fail.load(Ordering::SeqCst) {
            return Err(HandlerError::MalformedEvent("injected failure"));
        }
        self.inner.handle(ctx).await
    }
}

// ---- harness -----------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Dynamo,
}

struct Harness {
    router: Router,
    store: Arc<InstallationStore>,
    repo: Arc<CountingRepository>,
    /// Between `repo` and the real one: injects a store outage.
    faults: Arc<FaultyRepository>,
    clock: Arc<ManualClock>,
    slack: FakeSlack,
    handler: Arc<RecordingHandler>,
    metrics: Arc<CountingMetrics>,
    store_metrics: Arc<CountingStoreMetrics>,
    _keys_dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn new(backend: Backend) -> Self {
        Self::with_verifier(
            backend,
            RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
        )
        .await
    }

    async fn with_verifier(backend: Backend, verifier: RequestVerifier) -> Self {
        let (inner, keys, keys_dir): (
            Arc<dyn Repository>,
            Arc<dyn tokenkeep_envelope::KeyProvider>,
            _,
        ) = match backend {
            Backend::Embedded => {
                let (keys, dir) = local_keys();
                (
                    Arc::new(EmbeddedRepository::in_memory().unwrap()),
                    keys,
                    Some(dir),
                )
            }
            Backend::Dynamo => {
                let (repo, ..) = emulator_repository().await;
                let (kms, key_arn) = emulator_kms_key().await;
                (
                    Arc::new(repo),
                    Arc::new(tokenkeep_envelope::KmsKeyProvider::new(kms, key_arn)),
                    None,
                )
            }
        };
        let faults = Arc::new(FaultyRepository::new(inner));
        let repo = Arc::new(CountingRepository::new(faults.clone()));
        let clock = Arc::new(ManualClock::at_secs(SAMPLE_TS));
        let store_metrics = Arc::new(CountingStoreMetrics::default());
        let store = Arc::new(
            InstallationStore::new(repo.clone(), keys, StoreConfig::new(APP_ID))
                .with_clock(clock.clone())
                .with_metrics(store_metrics.clone()),
        );
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let handler = Arc::new(RecordingHandler {
            inner: MentionReplier {
                slack: slack.client(),
            },
            seen: Mutex::default(),
            events: Mutex::default(),
            fail: AtomicBool::new(false),
        });
        let metrics = Arc::new(CountingMetrics::default());
        let router = router_with_metrics(
            EventsState {
                store: store.clone(),
                verifier,
                handler: handler.clone(),
                clock: clock.clone(),
            },
            metrics.clone(),
        );
        Self {
            router,
            store,
            repo,
            faults,
            clock,
            slack,
            handler,
            metrics,
            store_metrics,
            _keys_dir: keys_dir,
        }
    }

    /// Installs `spec` the way the OAuth callback does; returns the bot token.
    async fn install(&self, spec: InstallSpec) -> AccessToken {
        let code = format!("code-{}", rand_suffix());
        self.slack.add_install(&code, spec);
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        let token = resp.access_token.clone().expect("bot token");
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let installation = Installation::from_oauth_response(resp, self.clock.now_secs()).unwrap();
        self.store
            .store_installation(&tenant, &installation)
            .await
            .unwrap();
        token
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Vec<u8>) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, body.to_vec())
    }

    async fn audit_of(&self, team: &str) -> Vec<AuditRecord> {
        let pk = TenantKey::new(None, Some(team)).unwrap().pk();
        self.store
            .repository()
            .query_audit(Some(&pk), 0, 1000)
            .await
            .unwrap()
    }

    async fn records_of(&self, team: &str) -> usize {
        self.store
            .repository()
            .list_tenant(&TenantKey::new(None, Some(team)).unwrap().pk())
            .await
            .unwrap()
            .len()
    }
}

fn rand_suffix() -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

fn workspace_with_user(team: &str, user: &str) -> InstallSpec {
    InstallSpec {
        user_id: user.to_owned(),
        with_user_token: true,
        ..InstallSpec::workspace(team)
    }
}

/// A request Slack would send: signed at `ts` with the test secret.
fn signed_at(ts: i64, content_type: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
    let body = body.into();
    let sig = sign_request(&SigningSecret::new(SIGNING_SECRET), ts, &body);
    Request::post("/slack/events")
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header("x-slack-signature", sig)
        .body(Body::from(body))
        .unwrap()
}

fn signed(content_type: &str, body: impl Into<Vec<u8>>) -> Request<Body> {
    signed_at(SAMPLE_TS, content_type, body)
}

/// An Events API `event_callback` for workspace `team`.
fn callback(team: &str, event_id: &str, event: Value) -> String {
    json!({
        "token": "unused-verification-token",
        "team_id": team,
        "api_app_id": APP_ID,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": SAMPLE_TS,
        "event": event,
        "authorizations": [{ "enterprise_id": null, "team_id": team, "user_id": "UBOT", "is_bot": true, "is_enterprise_install": false }],
    })
    .to_string()
}

fn mention(channel: &str, ts: &str) -> Value {
    json!({ "type": "app_mention", "user": "U0FROM", "text": "<@UBOT> hi", "ts": ts, "channel": channel, "event_ts": ts })
}

fn uninstalled(team: &str, event_id: &str) -> Request<Body> {
    signed(
        JSON,
        callback(team, event_id, json!({ "type": "app_uninstalled" })),
    )
}

fn revoked(team: &str, event_id: &str, users: &[&str], bots: &[&str]) -> Request<Body> {
    signed(
        JSON,
        callback(
            team,
            event_id,
            json!({ "type": "tokens_revoked", "tokens": { "oauth": users, "bot": bots } }),
        ),
    )
}

// ---- scenarios -----------------------------------------------------------------

/// Each bad input is refused with a generic body, and neither the store nor
/// the handler is reached.
async fn bad_inputs_never_reach_the_store(backend: Backend) {
    // Given an installed tenant, so a wrongly accepted request would read its token
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0BAD")).await;
    let body = callback("T0BAD", "Ev0BAD", mention("C1", "1.0"));
    let secret = SigningSecret::new(SIGNING_SECRET);
    let good_sig = sign_request(&secret, SAMPLE_TS, body.as_bytes());
    let base = || {
        Request::post("/slack/events")
            .header("content-type", JSON)
            .header("x-slack-request-timestamp", SAMPLE_TS.to_string())
    };
    let mut one_byte_changed = body.clone().into_bytes();
    let at = one_byte_changed.iter().position(|b| *b == b'h').unwrap();
    one_byte_changed[at] = b'H';
    let oversized = vec![b' '; tokenkeep_slack_api::DEFAULT_MAX_BODY_BYTES + 1];
    let oversized_sig = sign_request(&secret, SAMPLE_TS, &oversized);

    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "missing signature",
            base().body(Body::from(body.clone())).unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "missing timestamp",
            Request::post("/slack/events")
                .header("content-type", JSON)
                .header("x-slack-signature", &good_sig)
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed with another secret",
            base()
                .header(
                    "x-slack-signature",
                    sign_request(
                        &SigningSecret::new("not-the-secret"),
                        SAMPLE_TS,
                        body.as_bytes(),
                    ),
                )
                .body(Body::from(body.clone()))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "body changed by one byte",
            base()
                .header("x-slack-signature", &good_sig)
                .body(Body::from(one_byte_changed))
                .unwrap(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed 6 min in the past",
            signed_at(SAMPLE_TS - 360, JSON, body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "signed 6 min in the future",
            signed_at(SAMPLE_TS + 360, JSON, body.clone()),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "oversized, declared",
            base()
                .header("x-slack-signature", &oversized_sig)
                .header("content-length", oversized.len().to_string())
                .body(Body::from(oversized.clone()))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "oversized, undeclared (streamed)",
            base()
                .header("x-slack-signature", &oversized_sig)
                .body(Body::from_stream(futures::stream::iter(
                    oversized
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
                        .collect::<Vec<_>>(),
                )))
                .unwrap(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "malformed JSON, validly signed",
            signed(JSON, "{\"type\":\"event_callback\",".to_owned()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "event_callback without event_id",
            signed(
                JSON,
                json!({"type":"event_callback","team_id":"T0BAD","event":{"type":"app_mention"}})
                    .to_string(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "form that is neither payload nor command",
            signed(FORM, "team_id=T0BAD&text=hi".to_owned()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "form with a repeated field",
            signed(
                FORM,
                "team_id=T0OTHER&team_id=T0BAD&command=%2Fx".to_owned(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unsupported content type",
            signed("text/plain", body.clone()),
            StatusCode::BAD_REQUEST,
        ),
    ];

    let before = h.repo.total();
    for (name, req, expected) in cases {
        // When the request is sent
        let (status, resp_body) = h.send(req).await;
        // Then it is refused with the expected status and a generic body
        assert_eq!(status, expected, "{name}");
        let resp: Value =
            serde_json::from_slice(&resp_body).unwrap_or_else(|_| panic!("{name}: json body"));
        assert_eq!(resp["ok"], false, "{name}");
        assert!(resp["request_id"].is_string(), "{name}");
        assert!(
            !String::from_utf8_lossy(&resp_body).contains("T0BAD"),
            "{name}: echoes the body"
        );
    }
    // And the store saw no call at all, and the handler none
    assert_eq!(
        h.repo.total(),
        before,
        "a refused request reached the store"
    );
    assert!(h.handler.seen().is_empty());
    assert!(h.audit_of("T0BAD").await.is_empty());
}

async fn url_verification_answers_the_challenge(backend: Backend) {
    // Given the router, when Slack's handshake arrives signed
    let h = Harness::new(backend).await;
    let before = h.repo.total();
    let (status, body) = h
        .send(signed(
            JSON,
            json!({"token":"x","challenge":"ch4ll3nge","type":"url_verification"}).to_string(),
        ))
        .await;
    // Then the challenge comes back, and nothing was looked up
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({ "challenge": "ch4ll3nge" })
    );
    assert_eq!(h.repo.total(), before);
}

async fn app_mention_replies_with_the_tenants_token(backend: Backend) {
    // Given an installed workspace
    let h = Harness::new(backend).await;
    let token = h.install(InstallSpec::workspace("T0MENTION")).await;

    // When a top-level mention and a mention inside a thread arrive
    let (s1, b1) = h
        .send(signed(
            JSON,
            callback("T0MENTION", "Ev0M1", mention("C0CHAN", "1767225500.000100")),
        ))
        .await;
    let mut threaded = mention("C0CHAN", "1767225501.000200");
    threaded["thread_ts"] = json!("1767225400.000001");
    let (s2, _) = h
        .send(signed(JSON, callback("T0MENTION", "Ev0M2", threaded)))
        .await;

    // Then both are acknowledged with an empty body
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert!(b1.is_empty());
    // And the handler got this tenant's token, the event type and id
    let seen = h.handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].tenant,
        TenantKey::new(None, Some("T0MENTION")).unwrap()
    );
    assert_eq!(seen[0].token_fingerprint, token.fingerprint());
    assert_eq!(
        (seen[0].source, seen[0].event_type.as_str()),
        (EventSource::EventsApi, "app_mention")
    );
    assert_eq!(seen[0].event_id.as_deref(), Some("Ev0M1"));
    // And the replies hit Slack with that token, in the right threads
    let posts = h.slack.posts();
    assert_eq!(posts.len(), 2);
    for p in &posts {
        assert_eq!(
            (p.team_id.as_str(), p.channel.as_str()),
            ("T0MENTION", "C0CHAN")
        );
        assert_eq!(p.token_fingerprint, token.fingerprint());
        assert!(p.text.contains("<@U0FROM>"), "{}", p.text);
    }
    assert_eq!(posts[0].thread_ts.as_deref(), Some("1767225500.000100"));
    assert_eq!(posts[1].thread_ts.as_deref(), Some("1767225400.000001"));
    // And each read was audited with the event type as reason and the request id
    let audit = h.audit_of("T0MENTION").await;
    assert_eq!(audit.len(), 2);
    assert!(
        audit
            .iter()
            .all(|a| a.actor == "events" && a.reason == "app_mention" && a.outcome == Outcome::Ok)
    );
    // (audit records of one millisecond sort by request id, not arrival)
    let mut audited: Vec<&str> = audit.iter().map(|a| a.request_id.as_str()).collect();
    let mut handled: Vec<&str> = seen.iter().map(|s| s.request_id.as_str()).collect();
    audited.sort_unstable();
    handled.sort_unstable();
    assert_eq!(audited, handled);
}

async fn an_event_for_tenant_a_never_reads_tenant_b(backend: Backend) {
    // Given two installed workspaces
    let h = Harness::new(backend).await;
    let token_a = h.install(InstallSpec::workspace("T0AAA")).await;
    let token_b = h.install(InstallSpec::workspace("T0BBB")).await;

    // When A's installation receives a Slack Connect event whose top-level
    // team_id is B (authorizations name the installation the event is for)
    let mut body: Value =
        serde_json::from_str(&callback("T0AAA", "Ev0ISO1", mention("C0SHARED", "1.1"))).unwrap();
    body["team_id"] = json!("T0BBB");
    let (status, _) = h.send(signed(JSON, body.to_string())).await;
    // Then A's token answers it
    assert_eq!(status, StatusCode::OK);

    // And when a genuinely signed A event is replayed with B's ids swapped in
    let original = callback("T0AAA", "Ev0ISO2", mention("C0A", "1.2"));
    let sig = sign_request(
        &SigningSecret::new(SIGNING_SECRET),
        SAMPLE_TS,
        original.as_bytes(),
    );
    let forged = original.replace("T0AAA", "T0BBB");
    let req = Request::post("/slack/events")
        .header("content-type", JSON)
        .header("x-slack-request-timestamp", SAMPLE_TS.to_string())
        .header("x-slack-signature", sig)
        .body(Body::from(forged))
        .unwrap();
    let (forged_status, _) = h.send(req).await;
    // Then it is refused
    assert_eq!(forged_status, StatusCode::UNAUTHORIZED);

    // And B's token was never read nor used; A's was used once
    assert!(
        h.audit_of("T0BBB").await.is_empty(),
        "tenant B's token was read"
    );
    assert_eq!(h.audit_of("T0AAA").await.len(), 1);
    let seen = h.handler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token_fingerprint, token_a.fingerprint());
    assert!(
        h.slack
            .posts()
            .iter()
            .all(|p| p.token_fingerprint != token_b.fingerprint() && p.team_id == "T0AAA")
    );
}

async fn unknown_tenant_is_acked_counted_and_not_processed(backend: Backend) {
    // Given no installation for T0GHOST
    let h = Harness::new(backend).await;
    // When an event for it arrives
    let (status, _) = h
        .send(signed(
            JSON,
            callback("T0GHOST", "Ev0GHOST", mention("C1", "1.0")),
        ))
        .await;
    // Then it is acknowledged, counted, audited as not installed, and not handled
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.metrics.count_of(Metric::UnknownTenant), 1);
    assert!(h.handler.seen().is_empty());
    let audit = h.audit_of("T0GHOST").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].outcome, Outcome::NotInstalled);
}

/// Slack retries an `app_uninstalled` it saw no answer to for minutes, and a
/// `tokens_revoked` may come after it. A user who reinstalled meanwhile keeps
/// the new installation: the retry (same body, new signature) is recognised
/// by its event id, the late revocation by its `event_time`.
async fn a_late_uninstall_retry_keeps_the_reinstall(backend: Backend) {
    // Given a workspace that was uninstalled, then reinstalled two seconds later
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0LATE")).await;
    let body = callback("T0LATE", "Ev0LATEU", json!({ "type": "app_uninstalled" }));
    let (status, _) = h.send(signed(JSON, body.clone())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.records_of("T0LATE").await, 0, "the uninstall purged");
    h.clock.advance_secs(2);
    let fresh = h.install(InstallSpec::workspace("T0LATE")).await;

    // When Slack retries the uninstall (signed anew) and a late tokens_revoked arrives
    let mut retry = signed_at(SAMPLE_TS + 2, JSON, body);
    retry
        .headers_mut()
        .insert("x-slack-retry-num", http::HeaderValue::from_static("1"));
    let (retried, _) = h.send(retry).await;
    let (late, _) = h.send(revoked("T0LATE", "Ev0LATER", &[], &["UBOT"])).await;

    // Then both are acknowledged, and the reinstall is intact and serving
    assert_eq!((retried, late), (StatusCode::OK, StatusCode::OK));
    assert_eq!(h.records_of("T0LATE").await, 1);
    assert_eq!(
        h.store.stale_lifecycle_events(),
        1,
        "the late revocation is counted"
    );
    h.send(signed_at(
        SAMPLE_TS + 2,
        JSON,
        callback("T0LATE", "Ev0LATEM", mention("C1", "4.0")),
    ))
    .await;
    let seen = h.handler.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].token_fingerprint, fresh.fingerprint());
}

/// `tokens_revoked` then `app_uninstalled`, or the reverse, each delivered
/// twice: every delivery is acknowledged, and nothing of the tenant remains.
async fn uninstall_and_revoke_in_both_orders_repeated(backend: Backend) {
    let h = Harness::new(backend).await;
    for (team, revoke_first) in [("T0ORDERA", true), ("T0ORDERB", false)] {
        // Given a workspace with a bot and a user installation
        h.install(workspace_with_user(team, "U0USER")).await;
        assert_eq!(h.records_of(team).await, 2);
        // When both lifecycle events arrive in this order, each twice
        for round in 0..2 {
            let revoke = || revoked(team, &format!("Ev0R{team}"), &["U0USER"], &["UBOT"]);
            let uninstall = || uninstalled(team, &format!("Ev0U{team}"));
            let order = if revoke_first {
                [revoke(), uninstall()]
            } else {
                [uninstall(), revoke()]
            };
            for req in order {
                let (status, _) = h.send(req).await;
                // Then each delivery is acknowledged
                assert_eq!(status, StatusCode::OK, "{team} round {round}");
            }
        }
        // And no record is left, and a later event finds no installation
        assert_eq!(h.records_of(team).await, 0, "{team}");
        let (status, _) = h
            .send(signed(
                JSON,
                callback(team, &format!("Ev0AFTER{team}"), mention("C1", "1.0")),
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(h.handler.seen().is_empty());
    assert_eq!(h.metrics.count_of(Metric::UnknownTenant), 2);
}

async fn revoking_only_a_user_keeps_the_bot(backend: Backend) {
    // Given a workspace with bot + user
    let h = Harness::new(backend).await;
    let token = h.install(workspace_with_user("T0KEEP", "U0GONE")).await;
    // When only the user's tokens are revoked
    let (status, _) = h.send(revoked("T0KEEP", "Ev0RU", &["U0GONE"], &[])).await;
    assert_eq!(status, StatusCode::OK);
    // Then the bot record remains and still serves events
    assert_eq!(h.records_of("T0KEEP").await, 1);
    h.send(signed(
        JSON,
        callback("T0KEEP", "Ev0RU2", mention("C1", "2.0")),
    ))
    .await;
    assert_eq!(h.handler.seen()[0].token_fingerprint, token.fingerprint());
    // And when the bot is revoked, then nothing serves events any more
    h.send(revoked("T0KEEP", "Ev0RB", &[], &["UBOT"])).await;
    assert_eq!(h.records_of("T0KEEP").await, 0);
}

/// Uninstall racing with token reads: every request is answered, no read
/// hands out another tenant's token, and nothing survives the purge.
async fn uninstall_racing_with_token_reads(backend: Backend) {
    // Given an installed workspace
    let h = Harness::new(backend).await;
    let token = h.install(InstallSpec::workspace("T0RACE")).await;
    // When mentions and the uninstall arrive together
    let mut requests: Vec<Request<Body>> = (0..12)
        .map(|i| {
            signed(
                JSON,
                callback(
                    "T0RACE",
                    &format!("Ev0RACE{i}"),
                    mention("C1", &format!("3.{i}")),
                ),
            )
        })
        .collect();
    requests.insert(6, uninstalled("T0RACE", "Ev0RACEU"));
    requests.push(revoked("T0RACE", "Ev0RACER", &[], &["UBOT"]));
    let statuses = futures::future::join_all(requests.into_iter().map(|r| h.send(r))).await;
    // Then every request is acknowledged (no 5xx for Slack to retry)
    assert!(
        statuses.iter().all(|(s, _)| *s == StatusCode::OK),
        "{statuses:?}"
    );
    // And every handled event got this tenant's token, and nothing is left
    assert!(
        h.handler
            .seen()
            .iter()
            .all(|s| s.token_fingerprint == token.fingerprint())
    );
    assert_eq!(h.records_of("T0RACE").await, 0);
    // And reads that lost the race were counted as unknown-tenant, not handled
    assert_eq!(
        h.handler.seen().len() + h.metrics.count_of(Metric::UnknownTenant),
        12
    );
}

async fn retries_are_handled_once(backend: Backend) {
    // Given an installed workspace
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0RETRY")).await;
    let body = callback("T0RETRY", "Ev0ONCE", mention("C1", "4.0"));
    // When the event arrives, then again as Slack's retry, then twice at once
    let (s1, _) = h.send(signed(JSON, body.clone())).await;
    let mut retry = signed(JSON, body.clone());
    retry
        .headers_mut()
        .insert("x-slack-retry-num", "1".parse().unwrap());
    retry
        .headers_mut()
        .insert("x-slack-retry-reason", "http_timeout".parse().unwrap());
    let (s2, _) = h.send(retry).await;
    let concurrent =
        futures::future::join_all((0..3).map(|_| h.send(signed(JSON, body.clone())))).await;
    // Then every delivery is acknowledged, and the handler ran once, one reply posted
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert!(concurrent.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(h.handler.seen().len(), 1);
    assert_eq!(h.slack.posts().len(), 1);
    // And only the token handed to the handler was audited (a duplicate's
    // token never leaves the store)
    let handed_out = h
        .audit_of("T0RETRY")
        .await
        .into_iter()
        .filter(|a| a.outcome == Outcome::Ok)
        .count();
    assert_eq!(handed_out, 1);
}

async fn a_tampered_record_fails_closed_and_is_counted(backend: Backend) {
    // Given an installed workspace whose bot record is then edited in the
    // table: its version bumped without re-sealing (a replayed or forged item)
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0TAMPER")).await;
    let key = RecordKey::bot(TenantKey::new(None, Some("T0TAMPER")).unwrap());
    let repo = h.store.repository();
    let current = repo.get(&key).await.unwrap().unwrap();
    let mut edited = current.clone();
    edited.version += 1;
    repo.put(
        &edited,
        Expect::Version {
            version: current.version,
            generation: current.generation,
        },
    )
    .await
    .unwrap();
    // When an event for it arrives through the router
    let (status, _) = h
        .send(signed(
            JSON,
            callback("T0TAMPER", "Ev0TAMPER", mention("C1", "7.0")),
        ))
        .await;
    // Then it fails closed (Slack retries), no listener ran, and the store
    // counted the failed decrypt (the DecryptFailed alarm's metric)
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(h.handler.seen().is_empty());
    assert_eq!(h.store_metrics.count_of(StoreMetric::DecryptFailed), 1);
    assert!(h.slack.posts().is_empty());
}

async fn an_authorized_event_is_one_read_and_one_write(backend: Backend) {
    // Given an installed workspace
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0TRIPS")).await;
    let from = h.repo.methods_since(0).len();
    // When an event arrives for it
    let (status, _) = h
        .send(signed(
            JSON,
            callback("T0TRIPS", "Ev0TRIPS", mention("C1", "6.0")),
        ))
        .await;
    // Then the store made two calls in sequence: the record (with its tenant
    // item) and one write holding the audit record and the dedupe claim
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.handler.seen().len(), 1);
    assert_eq!(
        h.repo.methods_since(from),
        ["get_with_tenant", "append_audit_claiming"]
    );
}

async fn store_outage_is_500_and_the_retry_is_processed(backend: Backend) {
    // Given an installed workspace whose store then becomes unavailable
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0OUTAGE")).await;
    h.faults.set_fault(RepoFault::Throttle);
    let body = callback("T0OUTAGE", "Ev0OUT", mention("C1", "5.0"));
    // When the event arrives
    let (status, resp) = h.send(signed(JSON, body.clone())).await;
    // Then Slack is told to retry, with a generic body
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let resp: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(resp["error"], "internal error");
    assert!(resp["request_id"].is_string());
    assert_eq!(resp.as_object().unwrap().len(), 3, "{resp}");
    // And when the store recovers and Slack retries, then the event is processed (not dropped as a duplicate)
    h.faults.set_fault(RepoFault::None);
    let mut retry = signed(JSON, body);
    retry
        .headers_mut()
        .insert("x-slack-retry-num", "1".parse().unwrap());
    let (status, _) = h.send(retry).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.handler.seen().len(), 1);
}

async fn handler_failure_is_acked_and_counted(backend: Backend) {
    // Given an installed workspace and a handler that fails
    let h = Harness::new(backend).await;
    h.install(InstallSpec::workspace("T0FAIL")).await;
    h.handler.fail.store(true, Ordering::SeqCst);
    // When an event arrives
    let (status, _) = h
        .send(signed(
            JSON,
            callback("T0FAIL", "Ev0FAIL", mention("C1", "6.0")),
        ))
        .await;
    // Then it is acknowledged (Slack must not retry forever), and counted
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h.handler.seen().len(), 1);
    assert_eq!(h.metrics.count_of(Metric::HandlerFailed), 1);
}

async fn slash_commands_and_interactivity_are_dispatched(backend: Backend) {
    // Given an installed workspace
    let h = Harness::new(backend).await;
    let token = h.install(InstallSpec::workspace("T0FORMS")).await;
    // When a slash command and a block action arrive
    let (s1, b1) = h
        .send(signed(
            FORM,
            "team_id=T0FORMS&user_id=U1&command=%2Ftk&text=status&channel_id=C1".to_owned(),
        ))
        .await;
    let payload = json!({ "type": "block_actions", "team": { "id": "T0FORMS" }, "enterprise": null, "actions": [] });
    let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
    let (s2, b2) = h.send(signed(FORM, form)).await;
    // Then both are acknowledged with an empty body
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert!(b1.is_empty() && b2.is_empty());
    // And the handler saw each with this tenant's token and no event id
    let seen = h.handler.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].source, seen[0].event_type.as_str()),
        (EventSource::SlashCommand, "slash_command")
    );
    assert_eq!(
        (seen[1].source, seen[1].event_type.as_str()),
        (EventSource::Interactivity, "block_actions")
    );
    assert!(
        seen.iter()
            .all(|s| s.token_fingerprint == token.fingerprint() && s.event_id.is_none())
    );
    assert_eq!(h.handler.events.lock().unwrap()[0]["text"], "status");
    // And the reads were audited under the surface's name
    let mut reasons: Vec<String> = h
        .audit_of("T0FORMS")
        .await
        .into_iter()
        .map(|a| a.reason)
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["interactivity", "slash_command"]);
}

/// Each file in `events/` goes through the router as Lambda would deliver it.
async fn sample_events_drive_the_router(backend: Backend) {
    // Given the sample workspace installed with its user
    let h = Harness::new(backend).await;
    let token = h
        .install(workspace_with_user("T0TKSAMPLE", "U0TKUSER1"))
        .await;
    let sample = |name: &str| {
        let path = format!(
            "{}/../../events/events-{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let req = lambda_http::request::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(
            req.headers()["x-slack-request-timestamp"],
            SAMPLE_TS.to_string().as_str()
        );
        req.map(|body| Body::from(body.to_vec()))
    };
    let send = |name: &'static str| {
        let req = sample(name);
        let router = h.router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            (
                status,
                axum::body::to_bytes(resp.into_body(), usize::MAX)
                    .await
                    .unwrap(),
            )
        }
    };

    // When each sample is sent, then:
    let (status, body) = send("url-verification").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["challenge"],
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"
    );

    assert_eq!(send("app-mention").await.0, StatusCode::OK);
    let posts = h.slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        (posts[0].team_id.as_str(), posts[0].channel.as_str()),
        ("T0TKSAMPLE", "C0TKCHAN1")
    );
    assert_eq!(posts[0].token_fingerprint, token.fingerprint());
    // (the request id is API Gateway's, from the sample's requestContext)
    assert_eq!(h.handler.seen()[0].request_id, "tk-sample-app-mention");

    assert_eq!(send("slash-command").await.0, StatusCode::OK);
    assert_eq!(send("interactivity").await.0, StatusCode::OK);
    let kinds: Vec<String> = h.handler.seen().into_iter().map(|s| s.event_type).collect();
    assert_eq!(kinds, ["app_mention", "slash_command", "block_actions"]);

    assert_eq!(send("tokens-revoked").await.0, StatusCode::OK);
    assert_eq!(h.records_of("T0TKSAMPLE").await, 0);
    assert_eq!(send("app-uninstalled").await.0, StatusCode::OK);
    assert_eq!(h.records_of("T0TKSAMPLE").await, 0);
    let state = h
        .store
        .repository()
        .tenant_state(&TenantKey::new(None, Some("T0TKSAMPLE")).unwrap().pk())
        .await
        .unwrap();
    assert!(
        state.is_some_and(|s| s.purged),
        "uninstall leaves a tombstone"
    );

    // And a sample replayed 6 minutes later is stale
    h.clock.advance_secs(360);
    assert_eq!(send("app-mention").await.0, StatusCode::UNAUTHORIZED);
}

async fn a_lower_body_limit_is_enforced(backend: Backend) {
    // Given a verifier capped at 256 bytes
    let h = Harness::with_verifier(
        backend,
        RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)).with_max_body(256),
    )
    .await;
    let before = h.repo.total();
    // When a validly signed 257-byte body arrives
    let (status, _) = h.send(signed(JSON, vec![b' '; 257])).await;
    // Then it is refused as too large before anything else
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(h.repo.total(), before);
}

macro_rules! on_both_repositories {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Embedded).await
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Backend::Dynamo).await
                }
            )*
        }
    };
}

on_both_repositories!(
    bad_inputs_never_reach_the_store,
    url_verification_answers_the_challenge,
    app_mention_replies_with_the_tenants_token,
    an_event_for_tenant_a_never_reads_tenant_b,
    unknown_tenant_is_acked_counted_and_not_processed,
    uninstall_and_revoke_in_both_orders_repeated,
    a_late_uninstall_retry_keeps_the_reinstall,
    revoking_only_a_user_keeps_the_bot,
    uninstall_racing_with_token_reads,
    retries_are_handled_once,
    an_authorized_event_is_one_read_and_one_write,
    a_tampered_record_fails_closed_and_is_counted,
    store_outage_is_500_and_the_retry_is_processed,
    handler_failure_is_acked_and_counted,
    slash_commands_and_interactivity_are_dispatched,
    sample_events_drive_the_router,
    a_lower_body_limit_is_enforced,
);
