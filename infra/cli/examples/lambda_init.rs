//! Cold start of the real Lambda bootstraps, on a Lambda Runtime API emulator
//! (a benchmark, not a test).
//!
//! For each function binary given, R times (default 9):
//!
//! - **init**: from spawning the bootstrap (fork + exec included) to its first
//!   `GET /2018-06-01/runtime/invocation/next`, i.e. `main` up to the point
//!   where the runtime is ready: tracing, config, the Secrets Manager reads,
//!   the AWS SDK config and clients, the Slack client, the store;
//! - **first invocation**: from answering that `next` with an event to the
//!   bootstrap's `POST /2018-06-01/runtime/invocation/{id}/response`.
//!   `/invocation/{id}/error`, `/runtime/init/error` and an exit before `next`
//!   count as failures and their body (or the log's tail) is printed.
//!
//! It prints each run, min/median/max per function, the AWS calls made during
//! init and during the invocation (the bootstrap's `AWS_ENDPOINT_URL` is a
//! recording proxy in front of the emulator; `--direct` bypasses it), and the
//! first bytes of each function's answer, which show the invocation really
//! succeeded:
//!
//! | binary | event (from `events/`) | answer |
//! |---|---|---|
//! | `tokenkeep-events` | `url_verification`, re-signed with the stored signing secret and a fresh timestamp | 200, the challenge |
//! | `tokenkeep-oauth` | `GET /slack/install` | 302 to Slack's authorize URL (state redacted here) |
//! | `tokenkeep-rotation` | the EventBridge scheduled event | its sweep report |
//! | `tokenkeep-token-service` | `POST /tokens/authorize` with an IAM caller and a signed `app_mention` | 404 `not_installed` (signature checked, tenant looked up) |
//!
//! `tokenkeep-worker` is skipped: it is a library (SQS batch handling); the
//! deployed worker is the app's own binary (`example-app-worker`).
//!
//! Each bootstrap runs with `env_clear()` and the environment Lambda and
//! `template.yaml` give it: runtime variables, test credentials, region,
//! `AWS_ENDPOINT_URL`, the tokenkeep settings and the Secrets Manager ARNs of
//! the secrets its role may read (client secret; events and token service also
//! the signing secret). Before the runs it provisions, on the emulator, the two
//! tables, a KMS key and both secrets (random values, never printed).
//! `--secrets-from-env` passes the secrets as `SLACK_*_SECRET` instead, to see
//! what the Secrets Manager read costs (Lambda never runs that way).
//! `--drop-page-cache` evicts the bootstrap's file from the page cache before
//! each run (GNU `dd iflag=nocache`), so every run reads it from disk as a
//! real cold start does; without it only a binary's first run may.
//!
//! ```sh
//! # the emulator (moto behind a lock)
//! .tools/moto-venv/bin/python infra/emulator.py 127.0.0.1 47123 &
//! # the bootstraps, then this program
//! cargo build --release --offline -p tokenkeep-events -p tokenkeep-oauth -p tokenkeep-rotation -p tokenkeep-token-service
//! cargo build --release --offline -p tokenkeep --example lambda_init
//! AWS_ENDPOINT_URL=http://127.0.0.1:47123 ./target/release/examples/lambda_init --runs 9 \
//!     target/release/tokenkeep-events target/release/tokenkeep-oauth \
//!     target/release/tokenkeep-rotation target/release/tokenkeep-token-service
//! # options: [--runs N] [--secrets-from-env] [--drop-page-cache] [--direct] [BOOTSTRAP...]
//! # (no BOOTSTRAP: the four above, from target/release)
//! ```
//!
//! What bounds init (measured on a 2-core Debian box against moto; the
//! breakdown lines and the options are how):
//!
//! - With the bootstrap in the page cache, init medians are 12–15 ms, under
//!   the 30 ms target. Reading the 15–16 MB binary from disk first
//!   (`--drop-page-cache`, as a real cold start must) adds 12–15 ms: medians
//!   25–31 ms, at the target rather than under it. A binary's first run
//!   without the option is often that case too.
//! - The only AWS calls during init are one `GetSecretValue` per secret the
//!   function reads (events and token service 2, OAuth and rotation 1), ~2 ms
//!   each on moto. No KMS or DynamoDB call happens before the first `next`.
//! - The rest is CPU inside the process: exec and the tokio/tracing start
//!   (~2 ms: the same binary exiting on a missing setting), two AWS SDK config
//!   loads (`Config::load` for Secrets Manager, then `App::build`), and the
//!   system root certificates, loaded and parsed twice: the SDK's HTTPS
//!   connector, then the Slack client's reqwest/rustls-platform-verifier. On
//!   this image the scan of `/etc/ssl/certs` (~290 files) alone costs ~3 ms of
//!   that (measured with `SSL_CERT_DIR` pointing nowhere).
//! - `--secrets-from-env` takes init to ~8 ms (~21 ms with the page cache
//!   dropped): the round trips, the Secrets Manager client and its SDK config
//!   load are what it removes.
//! - Not measured here: in AWS the first Secrets Manager call also pays DNS,
//!   TCP and a TLS handshake to the regional endpoint (moto is plain HTTP on
//!   loopback), and Lambda's disk is not this one. The proxy adds ~0.5 ms
//!   (compare `--direct`).
//!
//! Loopback only: the Runtime API, the proxy and the emulator listen on
//! 127.0.0.1, and `SLACK_API_URL` points at a closed local port so that no
//! bootstrap can reach Slack (none of these invocations calls it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokenkeep_slack_api::{SigningSecret, sign_request};
use tokio::sync::{mpsc, watch};
use zeroize::Zeroizing;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const SLACK_CLIENT_ID: &str = "1234567890.1234567890";
/// Lambda's default: the deadline header is "now + this" (rotation reads it).
const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one phase (init, or the invocation) may take before the run fails.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

// ---- the functions -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Events,
    OAuth,
    Rotation,
    TokenService,
}

impl Kind {
    /// Recognised by the binary's name, so `target/release/<name>` and a
    /// copied `bootstrap` directory named after the function both work.
    fn of(bin: &Path) -> Option<Self> {
        let name = bin.file_name()?.to_str()?;
        [
            ("token-service", Self::TokenService),
            ("rotation", Self::Rotation),
            ("events", Self::Events),
            ("oauth", Self::OAuth),
        ]
        .into_iter()
        .find(|(suffix, _)| name.ends_with(suffix))
        .map(|(_, kind)| kind)
    }

    fn function_name(self) -> &'static str {
        match self {
            Self::Events => "tokenkeep-events",
            Self::OAuth => "tokenkeep-oauth",
            Self::Rotation => "tokenkeep-rotation",
            Self::TokenService => "tokenkeep-token-service",
        }
    }

    /// As in template.yaml: only the functions that verify Slack signatures
    /// may read the signing secret.
    fn reads_signing_secret(self) -> bool {
        matches!(self, Self::Events | Self::TokenService)
    }

    /// The invocation payload, built per run: signatures need a fresh timestamp.
    fn event(self, signing: &SigningSecret) -> Value {
        match self {
            Self::Events => signed_url_verification(signing),
            Self::OAuth => fixture(include_str!("../../../events/oauth-install.json")),
            Self::Rotation => fixture(include_str!("../../../events/scheduled.json")),
            Self::TokenService => token_service_authorize(signing),
        }
    }
}

fn fixture(text: &str) -> Value {
    let mut event: Value = serde_json::from_str(text).expect("events/*.json is JSON");
    // A note for humans; API Gateway sends no such field.
    if let Some(map) = event.as_object_mut() {
        map.remove("_description");
    }
    event
}

/// `events/events-url-verification.json`, signed now with the stored secret
/// (the fixture's own signature is for the test secret at a pinned time).
fn signed_url_verification(signing: &SigningSecret) -> Value {
    let mut event = fixture(include_str!("../../../events/events-url-verification.json"));
    let body = event["body"]
        .as_str()
        .expect("fixture has a body")
        .to_owned();
    let ts = unix_secs();
    event["headers"]["x-slack-request-timestamp"] = json!(ts.to_string());
    event["headers"]["x-slack-signature"] = json!(sign_request(signing, ts, body.as_bytes()));
    event["requestContext"]["timeEpoch"] = json!(ts * 1000);
    event
}

/// `POST /tokens/authorize` as API Gateway delivers it behind the IAM
/// authorizer: the caller's ARN in the request context, and in the body the
/// `app_mention` of `events/events-app-mention.json`, freshly signed. Nobody
/// is installed, so the answer is `not_installed` after the signature check
/// and the tenant lookup.
fn token_service_authorize(signing: &SigningSecret) -> Value {
    let mut event = fixture(include_str!("../../../events/events-app-mention.json"));
    let slack_body = event["body"]
        .as_str()
        .expect("fixture has a body")
        .to_owned();
    let ts = unix_secs();
    let body = json!({
        "body": slack_body,
        "timestamp": ts.to_string(),
        "signature": sign_request(signing, ts, slack_body.as_bytes()),
    })
    .to_string();
    let headers = event["headers"]
        .as_object_mut()
        .expect("fixture has headers");
    headers.retain(|name, _| !name.starts_with("x-slack-"));
    headers.insert("content-length".into(), json!(body.len().to_string()));
    headers.insert("user-agent".into(), json!("lambda_init"));
    let route = "POST /tokens/authorize";
    event["routeKey"] = json!(route);
    event["rawPath"] = json!("/tokens/authorize");
    event["body"] = json!(body);
    let context = &mut event["requestContext"];
    context["routeKey"] = json!(route);
    context["http"]["path"] = json!("/tokens/authorize");
    context["timeEpoch"] = json!(ts * 1000);
    context["authorizer"] = json!({ "iam": {
        "accountId": ACCOUNT,
        "userArn": format!("arn:aws:sts::{ACCOUNT}:assumed-role/bolt-app/lambda-init"),
    }});
    event
}

// ---- what the emulator is set up with ---------------------------------------

/// The tables, key and secrets on the emulator, shared by every run.
struct Fixture {
    table: String,
    audit_table: String,
    kms_key_arn: String,
    client_secret_arn: String,
    signing_secret_arn: String,
    /// The raw values, for `--secrets-from-env` only; wiped on drop.
    client_secret: Zeroizing<String>,
    signing_secret_value: Zeroizing<String>,
    signing_secret: SigningSecret,
}

async fn emulator_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .test_credentials()
        .load()
        .await
}

fn random_hex(bytes: usize) -> Zeroizing<String> {
    use std::fmt::Write as _;
    let mut out = Zeroizing::new(String::with_capacity(bytes * 2));
    for _ in 0..bytes {
        let _ = write!(out, "{:02x}", rand::random::<u8>());
    }
    out
}

async fn provision(aws: &aws_config::SdkConfig) -> anyhow::Result<Fixture> {
    // Unique names: a second run against the same emulator sees fresh state.
    let id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let table = format!("tk-lambda-init-{id}");
    let audit_table = format!("tk-lambda-init-audit-{id}");
    tokenkeep_installations::create_tables(
        &aws_sdk_dynamodb::Client::new(aws),
        &table,
        &audit_table,
    )
    .await
    .context("create the DynamoDB tables")?;
    let key = aws_sdk_kms::Client::new(aws)
        .create_key()
        .description("tokenkeep lambda_init")
        .send()
        .await
        .context("create the KMS key")?;
    let kms_key_arn = key
        .key_metadata()
        .and_then(|m| m.arn())
        .context("KMS key without an ARN")?
        .to_owned();

    let secrets = aws_sdk_secretsmanager::Client::new(aws);
    let create = |name: String, json: Zeroizing<String>| {
        let secrets = secrets.clone();
        async move {
            let out = secrets
                .create_secret()
                .name(&name)
                .secret_string(json.as_str())
                .send()
                .await
                .with_context(|| format!("create secret {name}"))?;
            out.arn()
                .map(str::to_owned)
                .with_context(|| format!("secret {name} has no ARN"))
        }
    };
    // The JSON shapes the template's secrets have (config.rs reads these keys).
    let client_secret = random_hex(16);
    let signing_secret_value = random_hex(32);
    let client_json =
        Zeroizing::new(json!({ "client_secret": client_secret.as_str() }).to_string());
    let signing_json =
        Zeroizing::new(json!({ "signing_secret": signing_secret_value.as_str() }).to_string());
    let client_secret_arn =
        create(format!("tokenkeep-lambda-init/{id}/client"), client_json).await?;
    let signing_secret_arn =
        create(format!("tokenkeep-lambda-init/{id}/signing"), signing_json).await?;
    Ok(Fixture {
        table,
        audit_table,
        kms_key_arn,
        client_secret_arn,
        signing_secret_arn,
        client_secret,
        signing_secret: SigningSecret::new(signing_secret_value.as_str()),
        signing_secret_value,
    })
}

/// GetSecretValue as seen from here: the first call on a new config and
/// client (TCP connect included), then warm calls. The floor of what each
/// secret read adds to a bootstrap's init.
async fn secrets_round_trip(endpoint: &str, arn: &str) -> anyhow::Result<(Duration, Duration)> {
    let mut cold = Vec::new();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let client = aws_sdk_secretsmanager::Client::new(&emulator_config(endpoint).await);
        let started = Instant::now();
        client.get_secret_value().secret_id(arn).send().await?;
        cold.push(started.elapsed());
        let started = Instant::now();
        client.get_secret_value().secret_id(arn).send().await?;
        warm.push(started.elapsed());
    }
    Ok((median(&mut cold), median(&mut warm)))
}

// ---- the AWS endpoint the bootstraps see: a recording proxy ---------------

#[derive(Debug, Clone)]
struct AwsCall {
    /// `X-Amz-Target` (`secretsmanager.GetSecretValue`, `DynamoDB_20120810.PutItem`, ...).
    op: String,
    start: Instant,
    end: Instant,
}

#[derive(Clone)]
struct AwsProxy {
    upstream: String,
    http: reqwest::Client,
    calls: Arc<Mutex<Vec<AwsCall>>>,
}

impl AwsProxy {
    fn take(&self) -> Vec<AwsCall> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

/// Headers that belong to one hop, not to the request or response.
fn hop_by_hop(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}

/// Forwards one AWS request to the emulator and records what it was and when.
/// Signatures are not re-made: moto does not check them.
async fn forward(State(proxy): State<AwsProxy>, req: Request) -> Response {
    let start = Instant::now();
    let (parts, body) = req.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || format!("{} {}", parts.method, parts.uri.path()),
            str::to_owned,
        );
    let result = async {
        let body = axum::body::to_bytes(body, 64 << 20).await?;
        let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let mut upstream = proxy
            .http
            .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
            .body(body);
        for (name, value) in parts.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
            upstream = upstream.header(name, value);
        }
        let answer = upstream.send().await?;
        let status = answer.status();
        let mut headers = HeaderMap::new();
        for (name, value) in answer.headers().iter().filter(|(n, _)| !hop_by_hop(n)) {
            headers.append(name, value.clone());
        }
        let bytes = answer.bytes().await?;
        anyhow::Ok((status, headers, bytes).into_response())
    }
    .await;
    proxy.calls.lock().unwrap().push(AwsCall {
        op,
        start,
        end: Instant::now(),
    });
    result.unwrap_or_else(|e| {
        (StatusCode::BAD_GATEWAY, format!("lambda_init proxy: {e}")).into_response()
    })
}

async fn start_proxy(upstream: &str) -> anyhow::Result<(String, AwsProxy)> {
    let proxy = AwsProxy {
        upstream: upstream.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder().no_proxy().build()?,
        calls: Arc::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, proxy))
}

// ---- the Runtime API ---------------------------------------------------------

/// What the bootstrap did, in order, as the Runtime API saw it.
#[derive(Debug)]
enum RuntimeCall {
    Next {
        arrived: Instant,
        answered: Instant,
    },
    Response {
        at: Instant,
        id: String,
        body: Bytes,
    },
    InvocationError {
        id: String,
        body: Bytes,
    },
    InitError {
        body: Bytes,
    },
}

/// One run's Runtime API: one event, then idle.
struct RuntimeApi {
    event: Bytes,
    request_id: String,
    function_arn: String,
    nexts: AtomicUsize,
    calls: mpsc::UnboundedSender<RuntimeCall>,
    /// Set when the run is over: releases the held second `next`.
    done: watch::Receiver<bool>,
}

type Api = State<Arc<RuntimeApi>>;

async fn next(State(api): Api) -> Response {
    let arrived = Instant::now();
    if api.nexts.fetch_add(1, Ordering::SeqCst) > 0 {
        // The one invocation is over and the bootstrap polls again: hold the
        // poll open, as Lambda does while the sandbox is frozen, until the run
        // ends (the child is killed by then).
        let mut done = api.done.clone();
        let _ = done.wait_for(|done| *done).await;
        return StatusCode::GONE.into_response();
    }
    let deadline = unix_ms() + INVOCATION_TIMEOUT.as_millis() as u64;
    let trace_id = format!(
        "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
        unix_secs(),
        rand::random::<u128>() >> 32,
        rand::random::<u64>()
    );
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        headers.insert(name, HeaderValue::from_str(value).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", &api.request_id);
    set("lambda-runtime-deadline-ms", &deadline.to_string());
    set("lambda-runtime-invoked-function-arn", &api.function_arn);
    set("lambda-runtime-trace-id", &trace_id);
    set("content-type", "application/json");
    let response = (StatusCode::OK, headers, api.event.clone()).into_response();
    let _ = api.calls.send(RuntimeCall::Next {
        arrived,
        answered: Instant::now(),
    });
    response
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, Json(json!({ "status": "OK" }))).into_response()
}

async fn invocation_response(
    State(api): Api,
    UrlPath(id): UrlPath<String>,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let _ = api.calls.send(RuntimeCall::Response { at, id, body });
    accepted()
}

async fn invocation_error(State(api): Api, UrlPath(id): UrlPath<String>, body: Bytes) -> Response {
    let _ = api.calls.send(RuntimeCall::InvocationError { id, body });
    accepted()
}

async fn init_error(State(api): Api, body: Bytes) -> Response {
    let _ = api.calls.send(RuntimeCall::InitError { body });
    accepted()
}

// ---- one run -----------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Options {
    secrets_from_env: bool,
    drop_page_cache: bool,
}

#[derive(Debug)]
struct Sample {
    init: Duration,
    invocation: Duration,
    /// Spawn to the first AWS request, if init made one.
    to_first_aws: Option<Duration>,
    /// Last AWS answer during init to `next`.
    after_last_aws: Option<Duration>,
    init_aws: Vec<AwsCall>,
    invocation_aws: Vec<AwsCall>,
    response: Bytes,
}

/// The bootstrap's environment: Lambda's own variables, then template.yaml's.
fn child_env(
    kind: Kind,
    fx: &Fixture,
    runtime_api: &str,
    aws_endpoint: &str,
    opts: Options,
) -> Vec<(&'static str, String)> {
    let name = kind.function_name();
    let mut env = vec![
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_owned()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
        ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            format!("2026/01/01/[$LATEST]{}", random_hex(16).as_str()),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_owned()),
        ("AWS_REGION", REGION.to_owned()),
        ("AWS_DEFAULT_REGION", REGION.to_owned()),
        // Lambda hands the role's session credentials in through these three.
        ("AWS_ACCESS_KEY_ID", "test".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
        ("AWS_SESSION_TOKEN", "test".to_owned()),
        ("AWS_ENDPOINT_URL", aws_endpoint.to_owned()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        // template.yaml Globals.
        ("SLACK_CLIENT_ID", SLACK_CLIENT_ID.to_owned()),
        ("SLACK_SCOPES", "app_mentions:read,chat:write".to_owned()),
        ("TOKENKEEP_STORE", "dynamodb".to_owned()),
        ("TOKENKEEP_TABLE", fx.table.clone()),
        ("TOKENKEEP_AUDIT_TABLE", fx.audit_table.clone()),
        ("TOKENKEEP_KMS_KEY_ID", fx.kms_key_arn.clone()),
        ("TOKENKEEP_REFRESH_WINDOW_MINUTES", "120".to_owned()),
        // Loopback only: nothing here should call Slack; if it did, it fails fast.
        ("SLACK_API_URL", "http://127.0.0.1:9/api".to_owned()),
    ];
    if opts.secrets_from_env {
        env.push(("SLACK_CLIENT_SECRET", fx.client_secret.to_string()));
        if kind.reads_signing_secret() {
            env.push(("SLACK_SIGNING_SECRET", fx.signing_secret_value.to_string()));
        }
    } else {
        env.push(("TOKENKEEP_CLIENT_SECRET_ARN", fx.client_secret_arn.clone()));
        if kind.reads_signing_secret() {
            env.push((
                "TOKENKEEP_SIGNING_SECRET_ARN",
                fx.signing_secret_arn.clone(),
            ));
        }
    }
    env
}

/// What went wrong in a run, with the evidence (error body or log tail).
fn failure(what: &str, body: &[u8]) -> String {
    format!(
        "{what}: {}",
        first_chars(&String::from_utf8_lossy(body), 600)
    )
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(6)..]
        .iter()
        .map(|l| format!("\n      | {}", first_chars(l, 300)))
        .collect::<String>();
    format!("log {}:{tail}", path.display())
}

async fn run_once(
    bin: &Path,
    kind: Kind,
    fx: &Fixture,
    aws_endpoint: &str,
    proxy: Option<&AwsProxy>,
    log: &Path,
    opts: Options,
) -> anyhow::Result<Result<Sample, String>> {
    let request_id = format!(
        "{}-{}-{}-{}-{}",
        random_hex(4).as_str(),
        random_hex(2).as_str(),
        random_hex(2).as_str(),
        random_hex(2).as_str(),
        random_hex(6).as_str()
    );
    let event = Bytes::from(serde_json::to_vec(&kind.event(&fx.signing_secret))?);
    let (calls, mut seen) = mpsc::unbounded_channel();
    let (finish, done) = watch::channel(false);
    let api = Arc::new(RuntimeApi {
        event,
        request_id: request_id.clone(),
        function_arn: format!(
            "arn:aws:lambda:{REGION}:{ACCOUNT}:function:{}",
            kind.function_name()
        ),
        nexts: AtomicUsize::new(0),
        calls,
        done,
    });
    let router = axum::Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(invocation_response),
        )
        .route(
            "/2018-06-01/runtime/invocation/{id}/error",
            post(invocation_error),
        )
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let runtime_api = listener.local_addr()?.to_string();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let out = std::fs::File::create(log)?;
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .envs(child_env(kind, fx, &runtime_api, aws_endpoint, opts))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    if opts.drop_page_cache {
        // A real cold start reads the bootstrap from the sandbox's disk; here
        // it is usually still in the page cache from the previous run. GNU dd
        // drops one file's cached pages (POSIX_FADV_DONTNEED) without root.
        let dropped = Command::new("dd")
            .arg(format!("if={}", bin.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .context("run dd to drop the bootstrap's page cache")?;
        if !dropped.success() {
            bail!("dd could not drop the page cache of {}", bin.display());
        }
    }
    if let Some(proxy) = proxy {
        proxy.take();
    }
    let spawned = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", bin.display()))?;

    let outcome = watch_child(&mut child, &mut seen, &request_id, log).await;
    // The bootstrap now blocks on its second `next`; a frozen sandbox is
    // never resumed here, so end it.
    let _ = child.kill();
    let _ = child.wait();
    let _ = finish.send(true);
    server.abort();
    let aws = proxy.map(AwsProxy::take).unwrap_or_default();

    Ok(outcome.map(|(arrived, answered, responded, response)| {
        let (init_aws, invocation_aws): (Vec<_>, Vec<_>) =
            aws.into_iter().partition(|call| call.start < arrived);
        Sample {
            init: arrived - spawned,
            invocation: responded - answered,
            to_first_aws: init_aws.first().map(|c| c.start - spawned),
            after_last_aws: init_aws
                .iter()
                .map(|c| c.end)
                .max()
                .map(|end| arrived - end),
            init_aws,
            invocation_aws,
            response,
        }
    }))
}

/// Follows one run to its end: `(next arrived, event answered, response
/// received, response body)`, or what went wrong.
async fn watch_child(
    child: &mut Child,
    seen: &mut mpsc::UnboundedReceiver<RuntimeCall>,
    request_id: &str,
    log: &Path,
) -> Result<(Instant, Instant, Instant, Bytes), String> {
    // std's Child has no async wait; poll it (the timings come from the
    // handlers' own clocks, so the tick only bounds how soon an exit is seen).
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut next_at: Option<(Instant, Instant)> = None;
    let mut phase_ends = tokio::time::Instant::now() + PHASE_TIMEOUT;
    loop {
        tokio::select! {
            call = seen.recv() => match call {
                Some(RuntimeCall::Next { arrived, answered }) => {
                    next_at = Some((arrived, answered));
                    phase_ends = tokio::time::Instant::now() + PHASE_TIMEOUT;
                }
                Some(RuntimeCall::Response { at, id, body }) => {
                    let Some((arrived, answered)) = next_at else {
                        return Err(failure("response before any event", &body));
                    };
                    if id != request_id {
                        return Err(format!("response for {id:?}, expected {request_id:?}"));
                    }
                    return Ok((arrived, answered, at, body));
                }
                Some(RuntimeCall::InvocationError { id, body }) => {
                    return Err(failure(&format!("invocation error ({id})"), &body));
                }
                Some(RuntimeCall::InitError { body }) => {
                    return Err(failure("init error", &body));
                }
                None => return Err("the Runtime API stopped".into()),
            },
            _ = tick.tick() => {
                if let Ok(Some(status)) = child.try_wait() {
                    let when = if next_at.is_some() { "during the invocation" } else { "before its first next" };
                    return Err(format!("exited {when} ({status}); {}", log_tail(log)));
                }
            }
            _ = tokio::time::sleep_until(phase_ends) => {
                let phase = if next_at.is_some() { "invocation" } else { "init" };
                return Err(format!("{phase} took over {PHASE_TIMEOUT:?}; {}", log_tail(log)));
            }
        }
    }
}

// ---- reporting ---------------------------------------------------------------

fn unix_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn first_chars(s: &str, n: usize) -> String {
    let mut out: String = s.chars().take(n).collect();
    if s.chars().nth(n).is_some() {
        out.push('…');
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    match values.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2,
    }
}

/// "min / median / max" in ms.
fn spread(mut values: Vec<Duration>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    let mid = median(&mut values);
    format!(
        "{} / {} / {}",
        ms(values[0]),
        ms(mid),
        ms(values[values.len() - 1])
    )
}

/// `op ×count (total ms)`, in order of first use.
fn describe_calls(calls: &[AwsCall]) -> String {
    let mut ops: Vec<(&str, usize, Duration)> = Vec::new();
    for call in calls {
        let took = call.end - call.start;
        match ops.iter_mut().find(|(op, _, _)| *op == call.op) {
            Some((_, n, total)) => {
                *n += 1;
                *total += took;
            }
            None => ops.push((&call.op, 1, took)),
        }
    }
    if ops.is_empty() {
        return "none".into();
    }
    ops.iter()
        .map(|(op, n, total)| format!("{op} ×{n} ({} ms)", ms(*total)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer's status and first bytes. Cookies are not shown and the OAuth
/// state in a Location is redacted: they are a live install's nonce.
fn describe_response(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let Some(http) = parsed.filter(|v| v.get("statusCode").is_some()) else {
        return first_chars(&String::from_utf8_lossy(body), 200);
    };
    let mut out = format!("HTTP {}", http["statusCode"]);
    if let Some(location) = http["headers"]["location"].as_str() {
        let redacted = location
            .split('&')
            .map(|kv| match kv.split_once("state=") {
                Some((before, _)) if before.is_empty() || before.ends_with('?') => {
                    format!("{before}state=<redacted>")
                }
                _ => kv.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        out.push_str(&format!(", location {}", first_chars(&redacted, 160)));
    }
    if let Some(ct) = http["headers"]["content-type"].as_str() {
        out.push_str(&format!(", {ct}"));
    }
    match http["body"].as_str() {
        Some(b) if http["isBase64Encoded"] == json!(true) => {
            out.push_str(&format!(", body (base64) {:?}", first_chars(b, 80)));
        }
        Some(b) => out.push_str(&format!(", body {:?}", first_chars(b, 120))),
        None => {}
    }
    out
}

/// One function's spread, where its init time went (with the recording
/// proxy), and its last answer.
fn print_report(samples: &[Sample], recorded: bool) {
    let Some(last) = samples.last() else {
        return;
    };
    println!(
        "  init (min / median / max)              {} ms",
        spread(samples.iter().map(|s| s.init).collect())
    );
    println!(
        "  first invocation (min / median / max)  {} ms",
        spread(samples.iter().map(|s| s.invocation).collect())
    );
    if recorded {
        let mut to_first: Vec<_> = samples.iter().filter_map(|s| s.to_first_aws).collect();
        let mut in_aws: Vec<_> = samples
            .iter()
            .map(|s| s.init_aws.iter().map(|c| c.end - c.start).sum())
            .collect();
        let mut after: Vec<_> = samples.iter().filter_map(|s| s.after_last_aws).collect();
        if !to_first.is_empty() {
            println!(
                "  init, medians: spawn → first AWS request {} ms, inside AWS calls {} ms, \
                 last AWS answer → next {} ms",
                ms(median(&mut to_first)),
                ms(median(&mut in_aws)),
                ms(median(&mut after))
            );
        }
        println!(
            "  AWS calls during init (last run): {}",
            describe_calls(&last.init_aws)
        );
        println!(
            "  AWS calls during the invocation (last run): {}",
            describe_calls(&last.invocation_aws)
        );
    }
    println!("  answer: {}", describe_response(&last.response));
}

// ---- main --------------------------------------------------------------------

struct Args {
    runs: usize,
    opts: Options,
    direct: bool,
    bins: Vec<PathBuf>,
}

const USAGE: &str = "usage: lambda_init [--runs N] [--secrets-from-env] [--drop-page-cache] \
                     [--direct] [BOOTSTRAP...]";

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        runs: 9,
        opts: Options {
            secrets_from_env: false,
            drop_page_cache: false,
        },
        direct: false,
        bins: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                args.runs = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .context("--runs needs a positive number")?;
            }
            "--secrets-from-env" => args.opts.secrets_from_env = true,
            "--drop-page-cache" => args.opts.drop_page_cache = true,
            "--direct" => args.direct = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag}\n{USAGE}"),
            bin => args.bins.push(PathBuf::from(bin)),
        }
    }
    if args.bins.is_empty() {
        let release = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release");
        let release = std::fs::canonicalize(&release).unwrap_or(release);
        args.bins = [
            Kind::Events,
            Kind::OAuth,
            Kind::Rotation,
            Kind::TokenService,
        ]
        .map(|k| release.join(k.function_name()))
        .into();
    }
    Ok(args)
}

struct Measured {
    name: String,
    samples: Vec<Sample>,
    failures: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let Some(endpoint) = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        bail!(
            "AWS_ENDPOINT_URL is not set: start the emulator \
             (.tools/moto-venv/bin/python infra/emulator.py 127.0.0.1 47123 &) \
             and run with AWS_ENDPOINT_URL=http://127.0.0.1:47123"
        );
    };
    let mut functions = Vec::new();
    for bin in &args.bins {
        let name = bin.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.ends_with("worker") {
            println!(
                "skipped {}: the worker is not a tokenkeep bootstrap (tokenkeep-worker is a \
                 library; the deployed worker is the app's SQS-triggered binary)",
                bin.display()
            );
            continue;
        }
        let kind = Kind::of(bin)
            .with_context(|| format!("{}: not a tokenkeep function binary", bin.display()))?;
        if !bin.is_file() {
            bail!(
                "{} is missing: cargo build --release --offline -p {}",
                bin.display(),
                kind.function_name()
            );
        }
        functions.push((bin.clone(), kind));
    }

    let aws = emulator_config(&endpoint).await;
    let fx = provision(&aws).await?;
    let (cold_sm, warm_sm) = secrets_round_trip(&endpoint, &fx.client_secret_arn).await?;
    let (child_endpoint, proxy) = if args.direct {
        (endpoint.clone(), None)
    } else {
        let (url, proxy) = start_proxy(&endpoint).await?;
        (url, Some(proxy))
    };
    println!(
        "lambda_init: {} runs per function{}; AWS at {endpoint}{}; secrets from {}",
        args.runs,
        if args.opts.drop_page_cache {
            ", the bootstrap's page cache dropped before each"
        } else {
            ""
        },
        if args.direct {
            ""
        } else {
            " through a recording proxy"
        },
        if args.opts.secrets_from_env {
            "SLACK_*_SECRET (comparison mode)"
        } else {
            "Secrets Manager"
        }
    );
    println!(
        "provisioned: tables {} / {}, a KMS key, the client and signing secrets",
        fx.table, fx.audit_table
    );
    println!(
        "GetSecretValue from this process: {} ms on a new client, {} ms warm (medians of 5)",
        ms(cold_sm),
        ms(warm_sm)
    );

    let logs = std::env::temp_dir().join(format!("lambda_init-{}", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let mut results = Vec::new();
    for (bin, kind) in &functions {
        println!("\n{} ({})", kind.function_name(), bin.display());
        let mut measured = Measured {
            name: kind.function_name().to_owned(),
            samples: Vec::new(),
            failures: 0,
        };
        for run in 1..=args.runs {
            let log = logs.join(format!("{}-{run}.log", kind.function_name()));
            match run_once(
                bin,
                *kind,
                &fx,
                &child_endpoint,
                proxy.as_ref(),
                &log,
                args.opts,
            )
            .await?
            {
                Ok(sample) => {
                    println!(
                        "  run {run}: init {} ms, first invocation {} ms",
                        ms(sample.init),
                        ms(sample.invocation)
                    );
                    let _ = std::fs::remove_file(&log);
                    measured.samples.push(sample);
                }
                Err(why) => {
                    println!("  run {run}: FAILED {why}");
                    measured.failures += 1;
                }
            }
        }
        print_report(&measured.samples, proxy.is_some());
        results.push(measured);
    }
    let _ = std::fs::remove_dir(&logs);

    println!("\nsummary (ms, min / median / max over successful runs)");
    println!(
        "  {:<26} {:<24} {:<24} failures",
        "function", "init", "first invocation"
    );
    for m in &results {
        println!(
            "  {:<26} {:<24} {:<24} {}/{}",
            m.name,
            spread(m.samples.iter().map(|s| s.init).collect()),
            spread(m.samples.iter().map(|s| s.invocation).collect()),
            m.failures,
            args.runs
        );
    }
    if results.iter().any(|m| m.failures > 0) {
        std::process::exit(1);
    }
    Ok(())
}
