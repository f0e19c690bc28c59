//! The token service through its router: real store (embedded SQLite, local
//! key file), real crypto, the fake Slack over real HTTP, requests signed with
//! the real v0 scheme. Each test: given / when / then.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokenkeep_installations::testing::{CountingRepository, local_keys};
use tokenkeep_installations::{
    EmbeddedRepository, Installation, InstallationStore, RecordKey, Repository, StoreConfig,
    SystemClock, TenantKey, VerifiedTenant,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, sign_request};
use tokenkeep_slack_api::{AccessToken, RequestVerifier, SigningSecret, SlackOAuth as _};
use tokenkeep_token_service::caller::{DEV_JOBS_PRINCIPAL, DEV_PRINCIPAL};
use tokenkeep_token_service::{Backend, CallerAuth, TokenServiceState, router};
use tower::ServiceExt as _;

const SIGNING_SECRET: &str = "test-signing-secret";
const SERVICE_KEY: &str = "service-key-0123456789abcdef0123456789abcdef";
const JOBS_KEY: &str = "jobs-key-0123456789abcdef0123456789abcdef0123";

struct Harness {
    router: axum::Router,
    store: Arc<InstallationStore>,
    repo: Arc<CountingRepository>,
    slack: FakeSlack,
    _keys: tempfile::TempDir,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn harness_with(auth: CallerAuth) -> Harness {
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let (keys, dir) = local_keys();
    let repo = Arc::new(CountingRepository::new(Arc::new(
        EmbeddedRepository::in_memory().unwrap(),
    )));
    let store = Arc::new(
        InstallationStore::new(
            repo.clone() as Arc<dyn Repository>,
            keys,
            StoreConfig::new(FakeSlackConfig::default().client_id),
        )
        .with_refresher(Arc::new(slack.client())),
    );
    let backend = Backend::new(
        Arc::clone(&store),
        RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
        slack.client(),
        Arc::new(SystemClock),
    );
    let router = router(TokenServiceState { backend, auth });
    Harness {
        router,
        store,
        repo,
        slack,
        _keys: dir,
    }
}

async fn harness() -> Harness {
    harness_with(CallerAuth::DevKeys {
        service: SecretString::from(SERVICE_KEY.to_owned()),
        jobs: SecretString::from(JOBS_KEY.to_owned()),
    })
    .await
}

impl Harness {
    /// Installs `team` through Slack's code exchange, as tokenkeep's OAuth does; returns the bot token.
    async fn install(&self, team: &str) -> AccessToken {
        let code = format!("code-{team}");
        self.slack.add_install(&code, InstallSpec::workspace(team));
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let inst = Installation::from_oauth_response(resp, now()).unwrap();
        self.store.store_installation(&tenant, &inst).await.unwrap();
        inst.bot_token.unwrap()
    }

    async fn call(
        &self,
        path: &str,
        key: Option<&str>,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let mut req = Request::post(path).header("content-type", "application/json");
        if let Some(key) = key {
            req = req.header("authorization", format!("Bearer {key}"));
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn authorize(&self, key: Option<&str>, signed: Value) -> (StatusCode, Value) {
        self.call("/tokens/authorize", key, signed.to_string())
            .await
    }

    async fn audit(&self, team: &str) -> Vec<tokenkeep_installations::AuditRecord> {
        let pk = TenantKey::new(None, Some(team)).unwrap().pk();
        self.store
            .repository()
            .query_audit(Some(&pk), 0, 100)
            .await
            .unwrap()
    }
}

fn mention(team: &str, user: &str) -> String {
    json!({
        "type": "event_callback", "team_id": team, "api_app_id": "A0001",
        "event_id": format!("Ev{}", rand_suffix()), "event_time": now(),
        "authorizations": [{ "team_id": team, "user_id": "UBOT", "is_bot": true, "is_enterprise_install": false }],
        "event": { "type": "app_mention", "user": user, "text": "<@UBOT> hi", "channel": "C1", "ts": "1.2" }
    })
    .to_string()
}

fn rand_suffix() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn signed_at(body: &str, ts: i64, secret: &str) -> Value {
    let sig = sign_request(&SigningSecret::new(secret), ts, body.as_bytes());
    json!({ "body": body, "timestamp": ts.to_string(), "signature": sig })
}

fn signed(body: &str) -> Value {
    signed_at(body, now(), SIGNING_SECRET)
}

/// Any string field of a JSON value equal to `token` (a token leaking anywhere in an answer).
fn contains_token(v: &Value, token: &AccessToken) -> bool {
    v.to_string().contains(token.expose_secret())
}

#[tokio::test]
async fn authorize_returns_the_signed_tenants_bot_token_and_audits_the_caller() {
    // Given two installed tenants.
    let h = harness().await;
    let t1 = h.install("T1").await;
    let t2 = h.install("T2").await;

    // When a request signed for T1 is authorized.
    let (status, body) = h
        .authorize(Some(SERVICE_KEY), signed(&mention("T1", "U0001")))
        .await;

    // Then T1's bot token comes back, never T2's, and the read is audited with the caller.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ok"], true);
    assert_eq!(body["team_id"], "T1");
    assert_eq!(body["bot_token"], t1.expose_secret());
    assert!(!contains_token(&body, &t2));
    let audit = h.audit("T1").await;
    assert_eq!(audit.len(), 1, "one bot-token read audited");
    assert_eq!(audit[0].actor, format!("token-service:{DEV_PRINCIPAL}"));
    assert_eq!(audit[0].reason, "authorize");
    assert!(h.audit("T2").await.is_empty(), "nothing of T2 was read");
}

#[tokio::test]
async fn a_request_signed_for_tenant_a_cannot_obtain_bs_token() {
    let h = harness().await;
    let t1 = h.install("T1").await;
    let t2 = h.install("T2").await;

    // A caller can't name the tenant next to the signed request: unknown field refused.
    let mut with_team = signed(&mention("T1", "U0001"));
    with_team["team_id"] = json!("T2");
    let (status, body) = h.authorize(Some(SERVICE_KEY), with_team).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!contains_token(&body, &t1) && !contains_token(&body, &t2));

    // A body re-pointed at T2 under T1's signature fails verification.
    let original = mention("T1", "U0001");
    let mut moved = signed(&original);
    moved["body"] = json!(original.replace("\"T1\"", "\"T2\""));
    let (status, body) = h.authorize(Some(SERVICE_KEY), moved).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_slack_signature");
    assert!(!contains_token(&body, &t2));
    assert!(h.audit("T2").await.is_empty());
}

#[tokio::test]
async fn forged_stale_and_replayed_requests_obtain_nothing() {
    let h = harness().await;
    let t1 = h.install("T1").await;
    let body = mention("T1", "U0001");
    let cases = [
        (
            "forged: wrong signing secret",
            signed_at(&body, now(), "not-the-secret"),
        ),
        (
            "stale: 6 minutes old",
            signed_at(&body, now() - 360, SIGNING_SECRET),
        ),
        (
            "replayed outside the window (future)",
            signed_at(&body, now() + 360, SIGNING_SECRET),
        ),
        (
            "garbage signature",
            json!({ "body": body, "timestamp": now().to_string(), "signature": "v0=00" }),
        ),
        (
            "non-numeric timestamp",
            json!({ "body": body, "timestamp": "yesterday", "signature": "v0=00" }),
        ),
    ];
    for (what, req) in cases {
        let (status, answer) = h.authorize(Some(SERVICE_KEY), req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(answer["error"], "invalid_slack_signature", "{what}");
        assert!(!contains_token(&answer, &t1), "{what}");
    }
    assert!(
        h.audit("T1").await.is_empty(),
        "no token was read for any of them"
    );
}

#[tokio::test]
async fn unauthenticated_calls_get_401_and_touch_nothing() {
    let h = harness().await;
    h.install("T1").await;
    h.repo.reset();
    let install =
        json!({ "team_id": "T5", "bot": { "token": "xoxb-anything", "scopes": ["chat:write"] } })
            .to_string();
    let routes = [
        (
            "/tokens/authorize",
            signed(&mention("T1", "U0001")).to_string(),
        ),
        ("/tokens/installations", install),
        (
            "/tokens/installations/find",
            json!({ "team_id": "T1", "include_tokens": true }).to_string(),
        ),
        ("/tokens/bots/find", json!({ "team_id": "T1" }).to_string()),
        (
            "/tokens/installations/delete",
            json!({ "team_id": "T1", "scope": "all" }).to_string(),
        ),
    ];
    for (path, body) in routes {
        for key in [
            None,
            Some("wrong-key-0123456789abcdef0123456789abcdef"),
            Some(""),
        ] {
            let (status, answer) = h.call(path, key, body.clone()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} with {key:?}");
            assert_eq!(
                answer,
                json!({ "ok": false, "error": "unauthorized", "request_id": answer["request_id"] })
            );
        }
    }
    assert_eq!(
        h.repo.total(),
        0,
        "no store call of any kind for an unauthenticated caller"
    );
    assert_eq!(h.slack.counters().auth_tests, 0, "nor a Slack call");
}

#[tokio::test]
async fn unknown_tenant_gets_not_installed() {
    let h = harness().await;
    h.install("T1").await;
    let (status, body) = h
        .authorize(Some(SERVICE_KEY), signed(&mention("T9", "U0001")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "not_installed");
    let (status, body) = h
        .call(
            "/tokens/bots/find",
            Some(SERVICE_KEY),
            json!({ "team_id": "T9" }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_installed"))
    );
}

#[tokio::test]
async fn named_tenant_tokens_need_the_separate_permission() {
    let h = harness().await;
    let t1 = h.install("T1").await;
    let query = json!({ "team_id": "T1", "include_tokens": true }).to_string();

    // The service key: metadata yes, token no.
    let (status, body) = h
        .call(
            "/tokens/bots/find",
            Some(SERVICE_KEY),
            json!({ "team_id": "T1" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["installation"]["bot_user_id"]
            .as_str()
            .map(|s| !s.is_empty()),
        Some(true)
    );
    assert!(body["installation"].get("token").is_none());
    let (status, body) = h
        .call("/tokens/bots/find", Some(SERVICE_KEY), query.clone())
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::FORBIDDEN, json!("forbidden"))
    );
    assert!(!contains_token(&body, &t1));
    let (status, _) = h
        .call(
            "/tokens/installations/delete",
            Some(SERVICE_KEY),
            json!({ "team_id": "T1", "scope": "all" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        h.store
            .fetch_bot(
                &h.store
                    .tenant_for_job(&TenantKey::new(None, Some("T1")).unwrap())
                    .await
                    .unwrap()
                    .unwrap()
            )
            .await
            .unwrap()
            .is_some()
    );

    // The jobs key: the token, audited as a named-tenant read.
    let (status, body) = h.call("/tokens/bots/find", Some(JOBS_KEY), query).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["installation"]["token"], t1.expose_secret());
    let audit = h.audit("T1").await;
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (audit[0].actor.as_str(), audit[0].reason.as_str()),
        (
            format!("token-service:{DEV_JOBS_PRINCIPAL}").as_str(),
            "named_tenant"
        )
    );

    // And may delete: afterwards authorize finds nothing.
    let (status, _) = h
        .call(
            "/tokens/installations/delete",
            Some(JOBS_KEY),
            json!({ "team_id": "T1", "scope": "all" }).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = h
        .authorize(Some(SERVICE_KEY), signed(&mention("T1", "U0001")))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// An installation as Bolt's own OAuth flow has it after oauth.v2.access.
async fn bolt_installation(h: &Harness, team: &str) -> (Value, AccessToken) {
    let code = format!("bolt-{team}");
    h.slack.add_install(&code, InstallSpec::workspace(team));
    let resp = h.slack.client().exchange_code(&code, None).await.unwrap();
    let token = resp.access_token.clone().unwrap();
    let body = json!({
        "app_id": resp.app_id, "team_id": team, "team_name": format!("Team {team}"),
        "is_enterprise_install": false, "token_type": "bot",
        "bot": {
            "token": token.expose_secret(),
            "refresh_token": resp.refresh_token.as_ref().unwrap().expose_secret(),
            "expires_at": now() + resp.expires_in.unwrap(),
            "scopes": ["chat:write"], "id": "B1", "user_id": resp.bot_user_id,
        },
    });
    (body, token)
}

#[tokio::test]
async fn an_installation_from_bolts_oauth_flow_is_sealed_and_served() {
    let h = harness().await;
    let (install, token) = bolt_installation(&h, "T3").await;

    let (status, body) = h
        .call(
            "/tokens/installations",
            Some(SERVICE_KEY),
            install.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["team_id"], "T3");

    // Sealed: the stored record holds no plaintext token or refresh token.
    let key = RecordKey::bot(TenantKey::new(None, Some("T3")).unwrap());
    let raw = h
        .store
        .repository()
        .get(&key)
        .await
        .unwrap()
        .expect("stored");
    let raw = serde_json::to_string(&raw).unwrap();
    assert!(!raw.contains(token.expose_secret()));
    assert!(!raw.contains(install["bot"]["refresh_token"].as_str().unwrap()));

    // Served: authorize for a T3-signed request returns it.
    let (status, body) = h
        .authorize(Some(SERVICE_KEY), signed(&mention("T3", "U0001")))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bot_token"], token.expose_secret());
}

#[tokio::test]
async fn an_installation_claiming_another_tenant_or_a_dead_token_is_refused() {
    let h = harness().await;
    h.install("T4").await;
    let (mut install, _token) = bolt_installation(&h, "T3").await;

    // T3's token presented as T4's installation.
    install["team_id"] = json!("T4");
    let (status, body) = h
        .call(
            "/tokens/installations",
            Some(SERVICE_KEY),
            install.to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("tenant_mismatch"))
    );

    // A token Slack does not know.
    install["team_id"] = json!("T3");
    install["bot"]["token"] = json!("xoxb-made-up");
    let (status, body) = h
        .call(
            "/tokens/installations",
            Some(SERVICE_KEY),
            install.to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("token_refused"))
    );

    // Neither wrote anything.
    assert!(
        h.store
            .tenant_for_job(&TenantKey::new(None, Some("T3")).unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let t4 = h
        .store
        .tenant_for_job(&TenantKey::new(None, Some("T4")).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        h.store.fetch_bot(&t4).await.unwrap().unwrap().version,
        1,
        "T4 untouched"
    );
}

#[tokio::test]
async fn malformed_and_oversized_bodies_get_a_generic_4xx() {
    let h = harness().await;
    let t1 = h.install("T1").await;
    let cases: [(&str, String, StatusCode); 5] = [
        (
            "/tokens/authorize",
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/tokens/authorize",
            json!({ "body": 5 }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/tokens/authorize",
            "x".repeat(8 * 1024 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "/tokens/installations",
            json!({ "team_id": "T1", "bot": { "tokn": "x" } }).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/tokens/installations",
            "y".repeat(100 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (path, body, expected) in cases {
        let (status, answer) = h.call(path, Some(SERVICE_KEY), body).await;
        assert_eq!(status, expected, "{path}");
        assert_eq!(answer["ok"], false);
        let keys: Vec<&String> = answer.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["error", "ok", "request_id"], "generic body only");
        assert!(!contains_token(&answer, &t1));
    }
    // A signed body that names no tenant.
    let (status, answer) = h
        .authorize(Some(SERVICE_KEY), signed(r#"{"type":"event_callback"}"#))
        .await;
    assert_eq!(
        (status, answer["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );
}

#[tokio::test]
async fn app_uninstalled_through_authorize_purges_and_later_requests_get_nothing() {
    let h = harness().await;
    h.install("T1").await;
    let uninstalled = json!({
        "type": "event_callback", "team_id": "T1", "event_id": "EvU1", "event_time": now(),
        "event": { "type": "app_uninstalled" }
    })
    .to_string();
    let (status, body) = h.authorize(Some(SERVICE_KEY), signed(&uninstalled)).await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_installed"))
    );
    let (status, body) = h
        .authorize(Some(SERVICE_KEY), signed(&mention("T1", "U0001")))
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_installed"))
    );
    assert!(
        h.store
            .tenant_for_job(&TenantKey::new(None, Some("T1")).unwrap())
            .await
            .unwrap()
            .is_none()
    );
}

fn with_iam(mut req: Request<Body>, arn: &str) -> Request<Body> {
    use lambda_http::aws_lambda_events::apigw::{
        ApiGatewayRequestAuthorizer, ApiGatewayRequestAuthorizerIamDescription,
        ApiGatewayV2httpRequestContext,
    };
    use lambda_http::request::RequestContext;
    let mut iam = ApiGatewayRequestAuthorizerIamDescription::default();
    iam.user_arn = Some(arn.to_owned());
    let mut authorizer = ApiGatewayRequestAuthorizer::default();
    authorizer.iam = Some(iam);
    let mut ctx = ApiGatewayV2httpRequestContext::default();
    ctx.authorizer = Some(authorizer);
    ctx.request_id = Some("apigw-req-1".into());
    req.extensions_mut()
        .insert(RequestContext::ApiGatewayV2(ctx));
    req
}

#[tokio::test]
async fn in_aws_the_callers_arn_authenticates_and_is_audited() {
    const BOLT_APP: &str = "arn:aws:sts::123456789012:assumed-role/bolt-app/i-1";
    const JOB: &str = "arn:aws:sts::123456789012:assumed-role/nightly-job/s-1";
    // Granted as the role: every session of it is covered.
    let h = harness_with(CallerAuth::iam_from_list(
        " arn:aws:iam::123456789012:role/batch/nightly-job ,",
    ))
    .await;
    let t1 = h.install("T1").await;
    let post = |path: &str, body: String| {
        Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap()
    };

    // No IAM context (not through API Gateway's authorizer), even with a bearer key: 401.
    let mut req = post(
        "/tokens/authorize",
        signed(&mention("T1", "U0001")).to_string(),
    );
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {SERVICE_KEY}").parse().unwrap(),
    );
    assert_eq!(h.send(req).await.0, StatusCode::UNAUTHORIZED);

    // The Bolt app's role: authorize works and its ARN is in the audit record.
    let (status, body) = h
        .send(with_iam(
            post(
                "/tokens/authorize",
                signed(&mention("T1", "U0001")).to_string(),
            ),
            BOLT_APP,
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bot_token"], t1.expose_secret());
    let audit = h.audit("T1").await;
    assert_eq!(audit[0].actor, format!("token-service:{BOLT_APP}"));
    assert_eq!(audit[0].request_id, "apigw-req-1");

    // Not granted the named-tenant permission: 403; the granted job: the token.
    let query = json!({ "team_id": "T1", "include_tokens": true }).to_string();
    assert_eq!(
        h.send(with_iam(post("/tokens/bots/find", query.clone()), BOLT_APP))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    let (status, body) = h
        .send(with_iam(post("/tokens/bots/find", query), JOB))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["installation"]["token"], t1.expose_secret());
}

#[test]
fn dev_keys_are_generated_0600_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let first = format!("{:?}", CallerAuth::dev_keys(dir.path()).unwrap());
    assert!(
        !first.contains(&std::fs::read_to_string(dir.path().join("token-service.key")).unwrap()),
        "Debug shows no key"
    );
    let key1 = std::fs::read_to_string(dir.path().join("token-service.key")).unwrap();
    let jobs1 = std::fs::read_to_string(dir.path().join("token-service-jobs.key")).unwrap();
    assert_eq!(key1.len(), 64);
    assert_ne!(key1, jobs1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("token-service.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    CallerAuth::dev_keys(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("token-service.key")).unwrap(),
        key1,
        "reused, not regenerated"
    );
}
