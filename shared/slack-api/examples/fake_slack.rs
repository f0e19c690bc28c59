//! The fake Slack as a process, for the Bolt adapter tests in `clients/`
//! (Python and JavaScript can't start the in-process [`FakeSlack`]).
//!
//! ```text
//! cargo run -p tokenkeep-slack-api --features test-util --example fake_slack
//! ```
//!
//! Prints one JSON line on stdout, `{"api_url": …, "control_url": …}`, then
//! serves until stdin closes or the process is killed. Settings from the
//! environment: `FAKE_SLACK_TOKEN_LIFETIME_SECS` (default 43200),
//! `FAKE_SLACK_CLIENT_ID` / `FAKE_SLACK_CLIENT_SECRET` (defaults as
//! [`FakeSlackConfig::default`]).
//!
//! The control API (loopback only, for tests):
//! - `POST /control/install` `{"code","team_id","user_id"?,"with_user_token"?,"enterprise_id"?,"org_wide"?}`
//! - `GET /control/state?teams=T1,T2` → counters, refreshes of those installations, posts (token fingerprints only)
//! - `POST /control/token_active` `{"token"}` → `{"active": bool}`

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::{Query, State};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{AccessToken, ClientSecret};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut cfg = FakeSlackConfig::default();
    if let Some(secs) = std::env::var("FAKE_SLACK_TOKEN_LIFETIME_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.token_lifetime_secs = secs;
    }
    if let Ok(id) = std::env::var("FAKE_SLACK_CLIENT_ID") {
        cfg.client_id = id;
    }
    if let Ok(secret) = std::env::var("FAKE_SLACK_CLIENT_SECRET") {
        cfg.client_secret = ClientSecret::new(secret);
    }
    let slack = FakeSlack::start(cfg).await;

    let control = axum::Router::new()
        .route("/control/install", post(install))
        .route("/control/state", get(state))
        .route("/control/token_active", post(token_active))
        .with_state(slack.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind control port");
    let control_url = format!("http://{}", listener.local_addr().expect("control addr"));
    tokio::spawn(async move { axum::serve(listener, control).await });

    println!(
        "{}",
        json!({ "api_url": slack.api_url(), "control_url": control_url })
    );

    // Runs until the test closes our stdin (or kills us).
    let _ = tokio::task::spawn_blocking(|| {
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
    })
    .await;
    slack.shutdown();
}

async fn install(State(slack): State<FakeSlack>, Json(body): Json<Value>) -> Json<Value> {
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let code = text("code").unwrap_or_default();
    let mut spec = match (
        text("enterprise_id"),
        body.get("org_wide")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    ) {
        (Some(enterprise), true) => InstallSpec::org_wide(&enterprise),
        (enterprise, _) => {
            let mut spec =
                InstallSpec::workspace(&text("team_id").unwrap_or_else(|| "T0001".into()));
            spec.enterprise_id = enterprise;
            spec
        }
    };
    if let Some(user) = text("user_id") {
        spec.user_id = user;
    }
    spec.with_user_token = body
        .get("with_user_token")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if spec.with_user_token && spec.user_scopes.is_empty() {
        spec.user_scopes = "chat:write".into();
    }
    slack.add_install(&code, spec);
    Json(json!({ "ok": true }))
}

async fn state(
    State(slack): State<FakeSlack>,
    Query(query): Query<HashMap<String, String>>,
) -> Json<Value> {
    let c = slack.counters();
    let posts: Vec<Value> = slack
        .posts()
        .into_iter()
        .map(|p| json!({ "channel": p.channel, "text": p.text, "team_id": p.team_id, "token_fingerprint": p.token_fingerprint }))
        .collect();
    // `?teams=T1,T2`: successful refreshes per installation key.
    let refreshes: BTreeMap<String, u64> = query
        .get("teams")
        .map(String::as_str)
        .unwrap_or("")
        .split(',')
        .filter(|t| !t.is_empty())
        .map(|t| (t.to_owned(), slack.refreshes_for(t)))
        .collect();
    Json(json!({
        "counters": { "exchanges": c.exchanges, "refreshes": c.refreshes, "refresh_failures": c.refresh_failures,
                      "auth_tests": c.auth_tests, "revokes": c.revokes, "posts": c.posts },
        "refreshes_by_team": refreshes,
        "posts": posts,
    }))
}

async fn token_active(State(slack): State<FakeSlack>, Json(body): Json<Value>) -> Json<Value> {
    let token = AccessToken::new(
        body.get("token")
            .and_then(Value::as_str)
            .unwrap_or_default(),
    );
    Json(json!({ "active": slack.is_token_active(&token) }))
}
