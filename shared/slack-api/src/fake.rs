//! An in-process fake Slack for tests across the workspace (feature `test-util`).
//!
//! It listens on `127.0.0.1:0` and speaks just enough of the Web API
//! (`oauth.v2.access`, `oauth.v2.exchange`, `auth.test`, `auth.revoke`,
//! `chat.postMessage`, `chat.update`, `chat.postEphemeral`, `views.*`,
//! `response_url` posts) to
//! exercise the real [`SlackClient`] over real HTTP. It
//! models the token-rotation rules that make duplicate refreshes a bug rather
//! than waste, so tests can *detect* them:
//!
//! - codes are single-use (`invalid_code` on reuse or when unknown);
//! - each refresh token works once (`invalid_refresh_token` the second time,
//!   with no grace period: the strictest reading, so a double spend shows);
//! - at most two access tokens are active per installation and token kind:
//!   issuing a third revokes the oldest, whose holder then gets
//!   `token_revoked` from `auth.test` / `chat.postMessage`;
//! - access tokens expire after `token_lifetime_secs` (`token_expired`).
//!
//! Installations are keyed by team id, or by enterprise id for org-wide
//! installs; methods taking `team_or_enterprise_id` use that key.
//!
//! ```no_run
//! # async fn demo() {
//! use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
//! use tokenkeep_slack_api::SlackOAuth;
//! let slack = FakeSlack::start(FakeSlackConfig::default()).await;
//! slack.add_install("code-1", InstallSpec::workspace("T1"));
//! let client = slack.client();
//! let install = client.exchange_code("code-1", None).await.unwrap();
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::client::{DEFAULT_TIMEOUT, SlackClient, SlackClientConfig};
use crate::secrets::{AccessToken, ClientSecret};

pub use crate::verify::sign_request;

/// How long `Failure::Timeout` and `Failure::LostResponse` hold a request:
/// longer than any client timeout a test would use.
const HANG: Duration = Duration::from_secs(60);

/// How the fake app is registered and how Slack behaves.
#[derive(Clone)]
pub struct FakeSlackConfig {
    /// Checked on oauth.v2.access (HTTP Basic or form fields): mismatch → `invalid_client_id`.
    pub client_id: String,
    /// Mismatch → `bad_client_secret`.
    pub client_secret: ClientSecret,
    /// Token rotation enabled for the app: expiring `xoxe.` tokens plus refresh tokens.
    /// Default `true`, the mode tokenkeep is built for.
    pub rotation: bool,
    /// Access token lifetime with rotation; Slack's is 12 h (43200).
    pub token_lifetime_secs: u64,
    /// Added to every call, to widen race windows in concurrency tests.
    pub latency: Duration,
}

impl Default for FakeSlackConfig {
    fn default() -> Self {
        Self {
            client_id: "1111.2222".to_owned(),
            client_secret: ClientSecret::new("fake-client-secret"),
            rotation: true,
            token_lifetime_secs: 43_200,
            latency: Duration::ZERO,
        }
    }
}

impl std::fmt::Debug for FakeSlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlackConfig")
            .field("client_id", &self.client_id)
            .field("rotation", &self.rotation)
            .field("token_lifetime_secs", &self.token_lifetime_secs)
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

/// What one authorization (one `code`) installs.
#[derive(Debug, Clone)]
pub struct InstallSpec {
    /// `None` only for an org-wide install.
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    /// Org-wide install: Slack answers `team: null`; keyed by `enterprise_id`.
    pub is_enterprise_install: bool,
    /// Comma-separated, as Slack spells `scope`. Empty: no bot token.
    pub bot_scopes: String,
    /// The installing user.
    pub user_id: String,
    pub user_scopes: String,
    /// Also issue a user token (`authed_user.access_token`).
    pub with_user_token: bool,
    /// Also return `incoming_webhook` with a URL.
    pub with_webhook: bool,
    pub app_id: String,
    /// If set, the exchange must send exactly this `redirect_uri` (`bad_redirect_uri`).
    pub redirect_uri: Option<String>,
    /// Installed before the app turned token rotation on: non-expiring tokens
    /// and no refresh token, whatever [`FakeSlackConfig::rotation`] says.
    pub long_lived: bool,
}

impl Default for InstallSpec {
    fn default() -> Self {
        Self {
            team_id: Some("T0001".to_owned()),
            team_name: Some("Fake Team".to_owned()),
            enterprise_id: None,
            enterprise_name: None,
            is_enterprise_install: false,
            bot_scopes: "chat:write,commands".to_owned(),
            user_id: "U0001".to_owned(),
            user_scopes: String::new(),
            with_user_token: false,
            with_webhook: false,
            app_id: "A0001".to_owned(),
            redirect_uri: None,
            long_lived: false,
        }
    }
}

impl InstallSpec {
    /// A plain workspace install of team `team_id`.
    pub fn workspace(team_id: &str) -> Self {
        Self {
            team_id: Some(team_id.to_owned()),
            team_name: Some(format!("Team {team_id}")),
            ..Self::default()
        }
    }

    /// An org-wide (Enterprise Grid) install: no team, keyed by `enterprise_id`.
    pub fn org_wide(enterprise_id: &str) -> Self {
        Self {
            team_id: None,
            team_name: None,
            enterprise_id: Some(enterprise_id.to_owned()),
            enterprise_name: Some(format!("Org {enterprise_id}")),
            is_enterprise_install: true,
            ..Self::default()
        }
    }

    fn key(&self) -> String {
        let key = if self.is_enterprise_install {
            &self.enterprise_id
        } else {
            &self.team_id
        };
        key.clone()
            .expect("InstallSpec needs team_id, or enterprise_id when is_enterprise_install")
    }
}

/// A failure to inject into the next call of one method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Answer with this HTTP status and a plain-text body. Slack did not act.
    /// (`Http(200)` yields a non-JSON success, for decode-error tests.)
    Http(u16),
    /// Answer with this HTTP status and `{"ok": false, "error": <code>}`. Slack did not act.
    HttpSlackError(u16, String),
    /// HTTP 429 with `Retry-After`. Slack did not act.
    RateLimited { retry_after_secs: u64 },
    /// Hold the request longer than any client timeout, then answer 504. Slack did not act.
    Timeout,
    /// `{"ok": false, "error": <code>}` with HTTP 200. Slack did not act.
    SlackError(String),
    /// Slack *does* act (tokens are rotated, the message is posted), but the
    /// answer is held like `Timeout`: the ambiguous case a refresh must survive.
    LostResponse,
}

/// A snapshot of what the fake has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FakeCounters {
    /// Successful code exchanges.
    pub exchanges: u64,
    /// Successful refreshes (new tokens issued).
    pub refreshes: u64,
    /// Refresh attempts that issued nothing, for any reason (including injected failures).
    pub refresh_failures: u64,
    /// Successful auth.test calls.
    pub auth_tests: u64,
    /// Successful auth.revoke calls.
    pub revokes: u64,
    /// Successful chat.postMessage calls.
    pub posts: u64,
}

/// A message the fake accepted. Carries the token's fingerprint, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostedMessage {
    pub channel: String,
    pub text: String,
    pub thread_ts: Option<String>,
    /// The installation whose token was used: team id, or enterprise id for org-wide installs.
    pub team_id: String,
    /// [`AccessToken::fingerprint`] of the bearer token.
    pub token_fingerprint: String,
}

/// A Web API call the fake accepted (any bearer method other than
/// chat.postMessage, and every `response_url` post). Nested JSON parameters
/// (`view`, `blocks`) are kept as their JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCall {
    /// The method, or `response_url` for a post to [`FakeSlack::response_url`].
    pub method: String,
    pub params: HashMap<String, String>,
    /// The installation whose token was used; empty for `response_url` posts.
    pub team_id: String,
    /// Fingerprint of the bearer token; empty for `response_url` posts.
    pub token_fingerprint: String,
}

/// A running fake Slack. Clones share one server; it shuts down when the last
/// clone is dropped or on [`shutdown`](Self::shutdown).
#[derive(Clone)]
pub struct FakeSlack {
    shared: Arc<Shared>,
    guard: Arc<ServerGuard>,
    addr: SocketAddr,
}

impl std::fmt::Debug for FakeSlack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSlack")
            .field("addr", &self.addr)
            .field("counters", &self.counters())
            .finish_non_exhaustive()
    }
}

struct ServerGuard {
    shutdown: watch::Sender<bool>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        // Stops accepting, closes idle connections and wakes hanging requests.
        let _ = self.shutdown.send(true);
    }
}

struct Shared {
    cfg: FakeSlackConfig,
    state: Mutex<SlackState>,
    shutdown: watch::Receiver<bool>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Bot,
    User(String),
}

impl Kind {
    fn token_type(&self) -> &'static str {
        match self {
            Kind::Bot => "bot",
            Kind::User(_) => "user",
        }
    }
}

struct AccessRecord {
    install: String,
    kind: Kind,
    expires_at: Option<Instant>,
    revoked: bool,
}

struct RefreshRecord {
    install: String,
    kind: Kind,
    spent: bool,
    revoked: bool,
}

struct Install {
    spec: InstallSpec,
    bot_user_id: String,
    bot_id: String,
}

#[derive(Default)]
struct SlackState {
    codes: HashMap<String, InstallSpec>,
    installs: HashMap<String, Install>,
    access: HashMap<String, AccessRecord>,
    refresh: HashMap<String, RefreshRecord>,
    /// Active access tokens per (installation, kind), oldest first.
    chains: HashMap<(String, Kind), VecDeque<String>>,
    failures: HashMap<String, VecDeque<Failure>>,
    counters: FakeCounters,
    refreshes_by_install: HashMap<String, u64>,
    calls: HashMap<String, u64>,
    posts: Vec<PostedMessage>,
    web_calls: Vec<WebCall>,
}

/// An `ok: false` answer.
struct SlackRefusal(&'static str);

type Answer = Result<Value, SlackRefusal>;

impl FakeSlack {
    /// Binds `127.0.0.1:0` and serves in a background task of the current runtime.
    pub async fn start(cfg: FakeSlackConfig) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(SlackState::default()),
            shutdown: rx.clone(),
        });
        let router = axum::Router::new()
            .route("/api/{method}", axum::routing::any(handle))
            .route("/response/{id}", axum::routing::post(response_url))
            .with_state(Arc::clone(&shared));
        let mut stop = rx;
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
        });
        FakeSlack {
            shared,
            guard: Arc::new(ServerGuard { shutdown: tx }),
            addr,
        }
    }

    /// `http://127.0.0.1:PORT/api`, for [`SlackClientConfig::api_url`].
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    /// A client config with this fake's URL and app credentials (10 s timeout).
    pub fn client_config(&self) -> SlackClientConfig {
        SlackClientConfig {
            api_url: self.api_url(),
            client_id: self.shared.cfg.client_id.clone(),
            client_secret: self.shared.cfg.client_secret.clone(),
            timeout: DEFAULT_TIMEOUT,
            response_url_base: format!("http://{}/response/", self.addr),
        }
    }

    /// A real [`SlackClient`] pointed at this fake.
    pub fn client(&self) -> SlackClient {
        SlackClient::new(self.client_config()).expect("build slack client")
    }

    /// Makes `code` redeemable (once) for the installation `spec` describes.
    pub fn add_install(&self, code: &str, spec: InstallSpec) {
        let _ = spec.key(); // fail here, in the test, rather than inside the server
        self.state().codes.insert(code.to_owned(), spec);
    }

    /// Queues `failure` for the next call of `method` (e.g. "oauth.v2.access");
    /// several queued failures apply to successive calls.
    pub fn fail_next(&self, method: &str, failure: Failure) {
        self.state()
            .failures
            .entry(method.to_owned())
            .or_default()
            .push_back(failure);
    }

    /// Revokes every refresh token issued so far to the installation (or any
    /// installation of that team / enterprise): the next refresh gets
    /// `invalid_refresh_token`, as after an uninstall or admin revocation.
    pub fn revoke_refresh_tokens_for_team(&self, team_or_enterprise_id: &str) {
        let mut state = self.state();
        let SlackState {
            installs, refresh, ..
        } = &mut *state;
        for record in refresh.values_mut() {
            let matches = record.install == team_or_enterprise_id
                || installs.get(&record.install).is_some_and(|i| {
                    i.spec.team_id.as_deref() == Some(team_or_enterprise_id)
                        || i.spec.enterprise_id.as_deref() == Some(team_or_enterprise_id)
                });
            if matches {
                record.revoked = true;
            }
        }
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> FakeCounters {
        self.state().counters
    }

    /// Successful refreshes for one installation (team id, or enterprise id for org-wide).
    pub fn refreshes_for(&self, team_or_enterprise_id: &str) -> u64 {
        self.state()
            .refreshes_by_install
            .get(team_or_enterprise_id)
            .copied()
            .unwrap_or(0)
    }

    /// Every request that reached `method`, including injected failures and retries.
    pub fn calls(&self, method: &str) -> u64 {
        self.state().calls.get(method).copied().unwrap_or(0)
    }

    /// Messages accepted by chat.postMessage, in order.
    pub fn posts(&self) -> Vec<PostedMessage> {
        self.state().posts.clone()
    }

    /// Other Web API calls and `response_url` posts, in order.
    pub fn web_calls(&self) -> Vec<WebCall> {
        self.state().web_calls.clone()
    }

    /// A `response_url` on this fake, as Slack puts in a payload.
    pub fn response_url(&self, id: &str) -> String {
        format!("http://{}/response/{id}", self.addr)
    }

    /// Whether Slack would accept this access token right now.
    pub fn is_token_active(&self, token: &AccessToken) -> bool {
        self.state()
            .check_access(token.expose_secret(), Instant::now())
            .is_ok()
    }

    /// Stops the server now (it also stops when the last clone drops).
    pub fn shutdown(&self) {
        let _ = self.guard.shutdown.send(true);
    }

    fn state(&self) -> MutexGuard<'_, SlackState> {
        self.shared.lock()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SlackState> {
        // A panicking test thread must not hide the state from the others.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn hang(&self) {
        let mut stop = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(HANG) => {}
            _ = stop.wait_for(|stopped| *stopped) => {}
        }
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let failure = {
        let mut state = shared.lock();
        *state.calls.entry(method.clone()).or_default() += 1;
        state
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
    };
    if !shared.cfg.latency.is_zero() {
        tokio::time::sleep(shared.cfg.latency).await;
    }
    let params = parse_params(&headers, &body);
    let is_refresh = method == "oauth.v2.access"
        && params.get("grant_type").map(String::as_str) == Some("refresh_token");
    let injected = |shared: &Shared| {
        if is_refresh {
            shared.lock().counters.refresh_failures += 1;
        }
    };

    match failure {
        Some(Failure::Http(status)) => {
            injected(&shared);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, "fake slack failure").into_response()
        }
        Some(Failure::RateLimited { retry_after_secs }) => {
            injected(&shared);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, retry_after_secs.to_string())],
                "",
            )
                .into_response()
        }
        Some(Failure::Timeout) => {
            injected(&shared);
            shared.hang().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        Some(Failure::HttpSlackError(status, code)) => {
            injected(&shared);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, axum::Json(json!({ "ok": false, "error": code }))).into_response()
        }
        Some(Failure::SlackError(code)) => {
            injected(&shared);
            axum::Json(json!({ "ok": false, "error": code })).into_response()
        }
        Some(Failure::LostResponse) => {
            let _ = dispatch(&shared, &method, &headers, &params);
            shared.hang().await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
        None => {
            let answer = match dispatch(&shared, &method, &headers, &params) {
                Ok(mut value) => {
                    value["ok"] = Value::Bool(true);
                    value
                }
                Err(SlackRefusal(code)) => json!({ "ok": false, "error": code }),
            };
            axum::Json(answer).into_response()
        }
    }
}

/// Form or JSON body, flattened to strings as Slack treats them.
fn parse_params(headers: &HeaderMap, body: &[u8]) -> HashMap<String, String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        let map: serde_json::Map<String, Value> = serde_json::from_slice(body).unwrap_or_default();
        map.into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect()
    } else {
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
            .unwrap_or_default()
            .into_iter()
            .collect()
    }
}

fn dispatch(
    shared: &Shared,
    method: &str,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Answer {
    let now = Instant::now();
    match method {
        "oauth.v2.access" => {
            check_client(&shared.cfg, headers, params)?;
            match params.get("grant_type").map(String::as_str) {
                Some("refresh_token") => {
                    let result =
                        shared
                            .lock()
                            .refresh(&shared.cfg, params.get("refresh_token"), now);
                    if result.is_err() {
                        shared.lock().counters.refresh_failures += 1;
                    }
                    result
                }
                Some("authorization_code") | None => {
                    shared.lock().exchange(&shared.cfg, params, now)
                }
                Some(_) => Err(SlackRefusal("invalid_grant_type")),
            }
        }
        "oauth.v2.exchange" => {
            check_client(&shared.cfg, headers, params)?;
            let token = params.get("token").ok_or(SlackRefusal("invalid_auth"))?;
            shared.lock().exchange_long_lived(&shared.cfg, token, now)
        }
        "auth.test" => {
            let token = bearer(headers)?;
            let mut state = shared.lock();
            let answer = state.auth_test(&token, now)?;
            state.counters.auth_tests += 1;
            Ok(answer)
        }
        "auth.revoke" => {
            let token = bearer(headers)?;
            let mut state = shared.lock();
            state.check_access(&token, now)?;
            state.revoke_access(&token);
            state.counters.revokes += 1;
            Ok(json!({ "revoked": true }))
        }
        "chat.postMessage" => {
            let token = bearer(headers)?;
            let mut state = shared.lock();
            let install = state.check_access(&token, now)?.install.clone();
            let channel = params
                .get("channel")
                .filter(|c| !c.is_empty())
                .ok_or(SlackRefusal("channel_not_found"))?;
            let text = params.get("text").cloned().unwrap_or_default();
            let ts = format!("{}.{:06}", unix_secs(), state.posts.len());
            state.posts.push(PostedMessage {
                channel: channel.clone(),
                text,
                thread_ts: params.get("thread_ts").cloned(),
                team_id: install,
                token_fingerprint: AccessToken::new(token).fingerprint(),
            });
            state.counters.posts += 1;
            Ok(json!({ "channel": channel, "ts": ts }))
        }
        "chat.update" | "chat.postEphemeral" | "views.open" | "views.push" | "views.update" => {
            let token = bearer(headers)?;
            let mut state = shared.lock();
            let install = state.check_access(&token, now)?.install.clone();
            let required: &[&str] = match method {
                "chat.update" => &["channel", "ts"],
                "chat.postEphemeral" => &["channel", "user"],
                "views.open" | "views.push" => &["trigger_id", "view"],
                _ => &["view_id", "view"],
            };
            if required
                .iter()
                .any(|name| params.get(*name).is_none_or(String::is_empty))
            {
                return Err(SlackRefusal("invalid_arguments"));
            }
            let n = state.web_calls.len();
            state.web_calls.push(WebCall {
                method: method.to_owned(),
                params: params.clone(),
                team_id: install,
                token_fingerprint: AccessToken::new(token).fingerprint(),
            });
            Ok(match method {
                "chat.update" => json!({ "channel": params["channel"], "ts": params["ts"] }),
                "chat.postEphemeral" => json!({ "message_ts": format!("{}.{n:06}", unix_secs()) }),
                _ => json!({ "view": { "id": format!("V{n:06}"), "hash": format!("h{n}") } }),
            })
        }
        _ => Err(SlackRefusal("unknown_method")),
    }
}

/// A `response_url` post: recorded, answered `{"ok":true}` as Slack does.
async fn response_url(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut params = parse_params(&headers, &body);
    params.insert("response_url_id".to_owned(), id);
    let mut state = shared.lock();
    *state.calls.entry("response_url".to_owned()).or_default() += 1;
    state.web_calls.push(WebCall {
        method: "response_url".to_owned(),
        params,
        team_id: String::new(),
        token_fingerprint: String::new(),
    });
    axum::Json(json!({ "ok": true })).into_response()
}

/// oauth.v2.access takes the app credentials as HTTP Basic or as form fields.
fn check_client(
    cfg: &FakeSlackConfig,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(), SlackRefusal> {
    let from_basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| {
            pair.split_once(':')
                .map(|(id, secret)| (id.to_owned(), secret.to_owned()))
        });
    let (id, secret) = from_basic
        .or_else(|| {
            Some((
                params.get("client_id")?.clone(),
                params.get("client_secret")?.clone(),
            ))
        })
        .ok_or(SlackRefusal("invalid_client_id"))?;
    if id != cfg.client_id {
        return Err(SlackRefusal("invalid_client_id"));
    }
    if !cfg.client_secret.ct_eq(&ClientSecret::new(secret)) {
        return Err(SlackRefusal("bad_client_secret"));
    }
    Ok(())
}

fn bearer(headers: &HeaderMap) -> Result<String, SlackRefusal> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .ok_or(SlackRefusal("not_authed"))
}

impl SlackState {
    fn exchange(
        &mut self,
        cfg: &FakeSlackConfig,
        params: &HashMap<String, String>,
        now: Instant,
    ) -> Answer {
        let code = params.get("code").ok_or(SlackRefusal("invalid_code"))?;
        // Spent on first sight, even if the rest fails, as Slack does.
        let spec = self
            .codes
            .remove(code)
            .ok_or(SlackRefusal("invalid_code"))?;
        if spec
            .redirect_uri
            .as_ref()
            .is_some_and(|expected| params.get("redirect_uri") != Some(expected))
        {
            return Err(SlackRefusal("bad_redirect_uri"));
        }
        let key = spec.key();
        let install = self.installs.entry(key.clone()).or_insert_with(|| Install {
            spec: spec.clone(),
            bot_user_id: format!("U{}", random_digits(9)),
            bot_id: format!("B{}", random_digits(9)),
        });
        install.spec = spec.clone();
        let bot_user_id = install.bot_user_id.clone();

        let mut answer = json!({
            "app_id": spec.app_id,
            "authed_user": { "id": spec.user_id },
            "team": match (&spec.team_id, spec.is_enterprise_install) {
                (Some(id), false) => json!({ "id": id, "name": spec.team_name }),
                _ => Value::Null,
            },
            "enterprise": match &spec.enterprise_id {
                Some(id) => json!({ "id": id, "name": spec.enterprise_name }),
                None => Value::Null,
            },
            "is_enterprise_install": spec.is_enterprise_install,
        });
        let rotation = cfg.rotation && !spec.long_lived;
        if !spec.bot_scopes.is_empty() {
            let (access, refresh) = self.issue(cfg, rotation, &key, Kind::Bot, now);
            answer["scope"] = json!(spec.bot_scopes);
            answer["token_type"] = json!("bot");
            answer["access_token"] = json!(access);
            answer["bot_user_id"] = json!(bot_user_id);
            if let Some(refresh) = refresh {
                answer["refresh_token"] = json!(refresh);
                answer["expires_in"] = json!(cfg.token_lifetime_secs);
            }
        }
        if spec.with_user_token {
            let (access, refresh) =
                self.issue(cfg, rotation, &key, Kind::User(spec.user_id.clone()), now);
            let user = &mut answer["authed_user"];
            user["scope"] = json!(spec.user_scopes);
            user["token_type"] = json!("user");
            user["access_token"] = json!(access);
            if let Some(refresh) = refresh {
                user["refresh_token"] = json!(refresh);
                user["expires_in"] = json!(cfg.token_lifetime_secs);
            }
        }
        if spec.with_webhook {
            answer["incoming_webhook"] = json!({
                "channel": "#general",
                "channel_id": "C0000GENERAL",
                "configuration_url": format!("https://{}.slack.com/services/B0000", key.to_lowercase()),
                "url": format!("https://hooks.slack.com/services/{key}/B{}/{}", random_digits(9), random_alnum(24)),
            });
        }
        self.counters.exchanges += 1;
        Ok(answer)
    }

    fn refresh(&mut self, cfg: &FakeSlackConfig, token: Option<&String>, now: Instant) -> Answer {
        let record = token
            .and_then(|t| self.refresh.get_mut(t))
            .ok_or(SlackRefusal("invalid_refresh_token"))?;
        if record.spent || record.revoked {
            return Err(SlackRefusal("invalid_refresh_token"));
        }
        record.spent = true;
        let (install, kind) = (record.install.clone(), record.kind.clone());
        let scope = self.installs.get(&install).map(|i| match kind {
            Kind::Bot => i.spec.bot_scopes.clone(),
            Kind::User(_) => i.spec.user_scopes.clone(),
        });
        let (access, refresh) = self.issue(cfg, true, &install, kind.clone(), now);
        self.counters.refreshes += 1;
        *self.refreshes_by_install.entry(install).or_default() += 1;
        // A refresh answer carries token fields only; see OAuthV2Response.
        Ok(json!({
            "token_type": kind.token_type(),
            "scope": scope,
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": cfg.token_lifetime_secs,
        }))
    }

    /// oauth.v2.exchange: a long-lived token of an app that turned rotation on
    /// becomes a rotating pair; the long-lived token stops working (the
    /// strict reading: a caller that loses the answer has lost the grant).
    fn exchange_long_lived(&mut self, cfg: &FakeSlackConfig, token: &str, now: Instant) -> Answer {
        if !cfg.rotation {
            return Err(SlackRefusal("token_rotation_not_enabled"));
        }
        let record = self.check_access(token, now)?;
        if record.expires_at.is_some() {
            return Err(SlackRefusal("token_already_rotating"));
        }
        let (install, kind) = (record.install.clone(), record.kind.clone());
        self.revoke_access(token);
        let (access, refresh) = self.issue(cfg, true, &install, kind.clone(), now);
        let spec = self.installs.get(&install).map(|i| i.spec.clone());
        let scope = spec.as_ref().map(|s| match kind {
            Kind::Bot => s.bot_scopes.clone(),
            Kind::User(_) => s.user_scopes.clone(),
        });
        Ok(json!({
            "token_type": kind.token_type(),
            "scope": scope,
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": cfg.token_lifetime_secs,
            "app_id": spec.as_ref().map(|s| s.app_id.clone()),
            "is_enterprise_install": spec.as_ref().is_some_and(|s| s.is_enterprise_install),
        }))
    }

    /// Issues an access token (and, with rotation, a refresh token) for one
    /// installation and kind; the third active access token revokes the oldest.
    fn issue(
        &mut self,
        cfg: &FakeSlackConfig,
        rotation: bool,
        install: &str,
        kind: Kind,
        now: Instant,
    ) -> (String, Option<String>) {
        let prefix = match (&kind, rotation) {
            (Kind::Bot, false) => format!("xoxb-{}-{}-", random_digits(12), random_digits(12)),
            (Kind::User(_), false) => format!("xoxp-{}-{}-", random_digits(12), random_digits(12)),
            (Kind::Bot, true) => "xoxe.xoxb-1-".to_owned(),
            (Kind::User(_), true) => "xoxe.xoxp-1-".to_owned(),
        };
        let access = format!("{prefix}{}", random_alnum(40));
        let expires_at = rotation.then(|| now + Duration::from_secs(cfg.token_lifetime_secs));
        self.access.insert(
            access.clone(),
            AccessRecord {
                install: install.to_owned(),
                kind: kind.clone(),
                expires_at,
                revoked: false,
            },
        );
        let chain = self
            .chains
            .entry((install.to_owned(), kind.clone()))
            .or_default();
        chain.push_back(access.clone());
        // Slack's limit: two active access tokens per installation and kind.
        let oldest = if chain.len() > 2 {
            chain.pop_front()
        } else {
            None
        };
        if let Some(record) = oldest.and_then(|t| self.access.get_mut(&t)) {
            record.revoked = true;
        }
        let refresh = rotation.then(|| {
            let refresh = format!("xoxe-1-{}", random_alnum(60));
            self.refresh.insert(
                refresh.clone(),
                RefreshRecord {
                    install: install.to_owned(),
                    kind,
                    spent: false,
                    revoked: false,
                },
            );
            refresh
        });
        (access, refresh)
    }

    fn check_access(&self, token: &str, now: Instant) -> Result<&AccessRecord, SlackRefusal> {
        let record = self.access.get(token).ok_or(SlackRefusal("invalid_auth"))?;
        if record.revoked {
            return Err(SlackRefusal("token_revoked"));
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(SlackRefusal("token_expired"));
        }
        Ok(record)
    }

    fn revoke_access(&mut self, token: &str) {
        if let Some(record) = self.access.get_mut(token) {
            record.revoked = true;
            if let Some(chain) = self
                .chains
                .get_mut(&(record.install.clone(), record.kind.clone()))
            {
                chain.retain(|t| t != token);
            }
        }
    }

    fn auth_test(&self, token: &str, now: Instant) -> Answer {
        let record = self.check_access(token, now)?;
        let install = self
            .installs
            .get(&record.install)
            .ok_or(SlackRefusal("invalid_auth"))?;
        let spec = &install.spec;
        let (user_id, bot_id) = match &record.kind {
            Kind::Bot => (install.bot_user_id.clone(), Some(install.bot_id.clone())),
            Kind::User(user) => (user.clone(), None),
        };
        Ok(json!({
            "url": format!("https://{}.slack.com/", record.install.to_lowercase()),
            "team": spec.team_name.as_ref().or(spec.enterprise_name.as_ref()),
            "user": "fake",
            "team_id": spec.team_id.as_ref().or(spec.enterprise_id.as_ref()),
            "user_id": user_id,
            "bot_id": bot_id,
            "enterprise_id": spec.enterprise_id,
            "is_enterprise_install": spec.is_enterprise_install,
        }))
    }
}

fn random_alnum(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

fn random_digits(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
