//! The test harness every test binary of this crate shares: a store on
//! either backend, a fake Slack, and the router wired to both.
#![allow(dead_code)] // each test binary uses a different part

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, Response, StatusCode, header};
use tokenkeep_envelope::KmsKeyProvider;
use tokenkeep_installations::testing::{
    ManualClock, emulator_kms_key, emulator_repository, local_keys,
};
use tokenkeep_installations::{
    EmbeddedRepository, InstallationStore, ReadContext, Repository, StoreConfig, StoredRecord,
    VerifiedTenant,
};
use tokenkeep_oauth::{OAuthState, STATE_COOKIE, router};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tower::ServiceExt as _;

pub const AUTHORIZE_URL: &str = "https://slack.example/oauth/v2/authorize";
pub const REDIRECT_URI: &str = "https://tokenkeep.example/slack/oauth_redirect";
pub const OAUTH_METHOD: &str = "oauth.v2.access";

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Embedded,
    Dynamo,
}

/// Where a raw dump of the table comes from.
pub enum RawTable {
    Embedded,
    Dynamo {
        client: aws_sdk_dynamodb::Client,
        table: String,
    },
}

pub struct Harness {
    pub router: Router,
    /// What `router` was built from (to rebuild it with hooks).
    pub state: OAuthState,
    pub store: Arc<InstallationStore>,
    pub slack: FakeSlack,
    pub clock: Arc<ManualClock>,
    pub raw: RawTable,
    _key_dir: Option<tempfile::TempDir>,
}

pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The store builder each case takes: a fresh store on `backend`, a fake
/// Slack, and the router wired to both.
pub async fn harness(backend: Backend) -> Harness {
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let clock = Arc::new(ManualClock::at_secs(now_secs()));
    let config = StoreConfig::new(FakeSlackConfig::default().client_id);
    let (store, raw, key_dir) = match backend {
        Backend::Embedded => {
            let (keys, dir) = local_keys();
            let repo: Arc<dyn Repository> = Arc::new(EmbeddedRepository::in_memory().unwrap());
            (
                InstallationStore::new(repo, keys, config),
                RawTable::Embedded,
                Some(dir),
            )
        }
        Backend::Dynamo => {
            let (repo, client, table, _audit) = emulator_repository().await;
            let (kms, key_arn) = emulator_kms_key().await;
            let keys = Arc::new(KmsKeyProvider::new(kms, key_arn));
            (
                InstallationStore::new(Arc::new(repo), keys, config),
                RawTable::Dynamo { client, table },
                None,
            )
        }
    };
    let store = Arc::new(store.with_clock(clock.clone()));
    let state = OAuthState {
        store: store.clone(),
        slack: Arc::new(slack.client()),
        client_id: FakeSlackConfig::default().client_id,
        scopes: "chat:write,commands".into(),
        user_scopes: "search:read".into(),
        authorize_url: AUTHORIZE_URL.into(),
        redirect_uri: Some(REDIRECT_URI.into()),
        bot_client: Some(slack.client()),
    };
    Harness {
        router: router(state.clone()),
        state,
        store,
        slack,
        clock,
        raw,
        _key_dir: key_dir,
    }
}

/// What Slack installs for `team` in these tests: bot + user token + webhook,
/// and the exchange must carry our redirect URI.
pub fn full_spec(spec: InstallSpec) -> InstallSpec {
    InstallSpec {
        user_scopes: "search:read".into(),
        with_user_token: true,
        with_webhook: true,
        redirect_uri: Some(REDIRECT_URI.into()),
        ..spec
    }
}

/// A tenant built the way the OAuth callback builds it: from a Slack answer.
pub fn tenant(json: serde_json::Value) -> VerifiedTenant {
    VerifiedTenant::from_oauth_response(&serde_json::from_value(json).unwrap()).unwrap()
}

pub fn ctx() -> ReadContext {
    ReadContext::new("oauth-test", "req-1", "verify install")
}

pub struct Started {
    pub state: String,
    pub cookie: String,
}

impl Harness {
    pub async fn get(&self, uri: &str, cookie: Option<&str>) -> Response<Body> {
        let mut req = Request::get(uri);
        if let Some(c) = cookie {
            req = req.header(header::COOKIE, c);
        }
        self.router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// A browser's visit to /slack/install: the state from the redirect and the cookie it got.
    pub async fn start_install(&self) -> Started {
        let resp = self.get("/slack/install", None).await;
        assert_eq!(resp.status(), StatusCode::FOUND);
        let location = resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        let query = location
            .strip_prefix(&format!("{AUTHORIZE_URL}?"))
            .expect("redirects to the authorize url");
        let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
        let state = params.iter().find(|(k, _)| k == "state").unwrap().1.clone();
        let set_cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_owned();
        assert_eq!(cookie, format!("{STATE_COOKIE}={state}"));
        Started { state, cookie }
    }

    pub async fn redirect(
        &self,
        query: &str,
        cookie: Option<&str>,
    ) -> (StatusCode, String, Vec<String>) {
        let resp = self
            .get(&format!("/slack/oauth_redirect?{query}"), cookie)
            .await;
        let status = resp.status();
        let set_cookies = resp
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            set_cookies,
        )
    }

    /// Install `spec` under `code` through both routes; returns the success page.
    pub async fn install(&self, code: &str, spec: InstallSpec) -> String {
        self.slack.add_install(code, spec);
        let started = self.start_install().await;
        let (status, body, cookies) = self
            .redirect(
                &format!("code={code}&state={}", started.state),
                Some(&started.cookie),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            cookies
                .iter()
                .any(|c| c.starts_with(&format!("{STATE_COOKIE}=;")) && c.contains("Max-Age=0")),
            "{cookies:?}"
        );
        body
    }

    pub async fn records(&self) -> Vec<StoredRecord> {
        self.store
            .repository()
            .scan_records(None, 1000)
            .await
            .unwrap()
            .0
    }

    /// After a failure: no installation record and no tenant item anywhere.
    pub async fn assert_nothing_stored(&self) {
        assert!(self.records().await.is_empty(), "no installation record");
        assert!(
            self.store
                .repository()
                .scan_tenants()
                .await
                .unwrap()
                .is_empty(),
            "no tenant opened"
        );
    }

    /// Everything in the table as stored: DynamoDB items as the SDK returns
    /// them; embedded records and tenants as the repository returns them.
    pub async fn raw_dump(&self) -> String {
        match &self.raw {
            RawTable::Embedded => {
                let repo = self.store.repository();
                format!(
                    "{}{:?}",
                    serde_json::to_string(&self.records().await).unwrap(),
                    repo.scan_tenants().await.unwrap()
                )
            }
            RawTable::Dynamo { client, table } => {
                let mut out = String::new();
                let mut start = None;
                loop {
                    let page = client
                        .scan()
                        .table_name(table)
                        .set_exclusive_start_key(start)
                        .send()
                        .await
                        .unwrap();
                    out.push_str(&format!("{:?}", page.items()));
                    start = page.last_evaluated_key().cloned();
                    if start.is_none() {
                        break out;
                    }
                }
            }
        }
    }

    pub fn exchange_calls(&self) -> u64 {
        self.slack.calls(OAUTH_METHOD)
    }
}

pub fn team_tenant(team: &str) -> VerifiedTenant {
    tenant(serde_json::json!({ "team": { "id": team } }))
}
