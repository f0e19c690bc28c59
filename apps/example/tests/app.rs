//! The example app end to end through the Lambda routers: installs through
//! the OAuth routes, then signed requests of each listener kind, with a fake
//! Slack behind. Every Slack call must carry the calling tenant's bot token.
//!
//! Requests are signed with the TEST signing secret below; it belongs to no real app.

use axum::body::Body;
use http::{Request, StatusCode};
use tokenkeep_app::{App, Config, Value, json};
use tokenkeep_slack_api::SigningSecret;
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, WebCall, sign_request};
use tower::ServiceExt as _;

const SIGNING_SECRET: &str = "tokenkeep-test-signing-secret";

struct Harness {
    router: axum::Router,
    slack: FakeSlack,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Self {
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = FakeSlackConfig::default();
        let data_dir = dir.path().to_str().unwrap().to_owned();
        let source = [
            ("SLACK_CLIENT_ID", cfg.client_id.as_str()),
            ("SLACK_CLIENT_SECRET", cfg.client_secret.expose_secret()),
            ("SLACK_SIGNING_SECRET", SIGNING_SECRET),
            ("TOKENKEEP_DATA_DIR", data_dir.as_str()),
        ];
        let config = Config::from_source(
            &source,
            tokenkeep_app::SecretsUsed::ClientAndSigning,
            None,
            None,
        )
        .unwrap();
        let app = App::build_with_slack(config, None, slack.client()).unwrap();
        let lazy = tokenkeep_app::embedded_lazy(&app, tokenkeep_example_app::listeners()).unwrap();
        let router = tokenkeep_app::routers(
            &app,
            tokenkeep_example_app::listeners(),
            Some(tokenkeep_example_app::hooks()),
            Some(lazy),
        )
        .unwrap();
        Self {
            router,
            slack,
            _dir: dir,
        }
    }

    async fn call(&self, req: Request<Body>) -> (StatusCode, http::HeaderMap, String) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Installs `team` through /slack/install and /slack/oauth_redirect;
    /// returns the fingerprint of the bot token Slack issued (from the welcome DM).
    async fn install(&self, team: &str, installer: &str) -> String {
        let (status, headers, _) = self
            .call(Request::get("/slack/install").body(Body::empty()).unwrap())
            .await;
        assert_eq!(status, StatusCode::FOUND);
        let cookie = headers[http::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let state = cookie.split_once('=').unwrap().1.to_owned();
        let code = format!("code-{team}");
        self.slack.add_install(
            &code,
            InstallSpec {
                user_id: installer.to_owned(),
                ..InstallSpec::workspace(team)
            },
        );
        let uri = format!("/slack/oauth_redirect?code={code}&state={state}");
        let req = Request::get(uri)
            .header(http::header::COOKIE, cookie)
            .body(Body::empty())
            .unwrap();
        let (status, _, body) = self.call(req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        // The app's own success page, not tokenkeep's
        assert!(
            body.contains("<h1>Example app installed</h1>")
                && body.contains(&format!("of {team} to try it")),
            "{body}"
        );
        let welcome = self
            .slack
            .posts()
            .into_iter()
            .find(|p| p.channel == installer)
            .expect("welcome DM");
        assert_eq!(welcome.team_id, team);
        assert_eq!(welcome.text, tokenkeep_example_app::WELCOME);
        welcome.token_fingerprint
    }

    async fn signed(&self, content_type: &str, body: String) -> (StatusCode, String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = sign_request(
            &SigningSecret::new(SIGNING_SECRET.to_owned()),
            now,
            body.as_bytes(),
        );
        let req = Request::post("/slack/events")
            .header("content-type", content_type)
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", sig)
            .body(Body::from(body))
            .unwrap();
        let (status, _, body) = self.call(req).await;
        (status, body)
    }

    async fn command(&self, team: &str, command: &str, text: &str) -> (StatusCode, String) {
        let form = serde_urlencoded::to_string([
            ("command", command),
            ("text", text),
            ("team_id", team),
            ("user_id", "U1"),
            ("channel_id", "C1"),
            ("trigger_id", "trig-1"),
            ("response_url", &self.slack.response_url("cmd")),
        ])
        .unwrap();
        self.signed("application/x-www-form-urlencoded", form).await
    }

    async fn interaction(&self, payload: Value) -> (StatusCode, String) {
        let form = serde_urlencoded::to_string([("payload", payload.to_string())]).unwrap();
        self.signed("application/x-www-form-urlencoded", form).await
    }

    fn calls(&self, method: &str) -> Vec<WebCall> {
        self.slack
            .web_calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }
}

#[tokio::test]
async fn install_sends_the_welcome_dm_with_the_new_bot_token() {
    // Given the example app, when T1 installs it, then the installer gets a DM (asserted in install)
    let h = Harness::new().await;
    let t1 = h.install("T1", "UINSTALLER").await;
    assert!(!t1.is_empty());
}

#[tokio::test]
async fn app_mention_is_answered_in_the_thread_with_that_tenants_token() {
    // Given two installed tenants
    let h = Harness::new().await;
    let t1 = h.install("T1", "UA").await;
    let t2 = h.install("T2", "UB").await;
    assert_ne!(t1, t2);
    // When T2 sends a signed app_mention
    let event = json!({
        "type": "event_callback", "team_id": "T2", "event_id": "Ev1",
        "event": {"type": "app_mention", "user": "U9", "text": "<@UBOT> hi", "channel": "C2", "ts": "1.000100"}
    });
    let (status, body) = h.signed("application/json", event.to_string()).await;
    // Then it is acked empty, and the reply went to its thread with T2's token, not T1's
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let reply = h
        .slack
        .posts()
        .into_iter()
        .find(|p| p.channel == "C2")
        .expect("reply");
    assert_eq!(reply.thread_ts.as_deref(), Some("1.000100"));
    assert_eq!(reply.text, "Hi <@U9>, tokenkeep heard you.");
    assert_eq!(
        (reply.team_id.as_str(), reply.token_fingerprint.as_str()),
        ("T2", t2.as_str())
    );
}

#[tokio::test]
async fn slash_command_acks_with_text() {
    let h = Harness::new().await;
    h.install("T1", "UA").await;
    let (status, body) = h.command("T1", "/tk-echo", "hello there").await;
    assert_eq!(status, StatusCode::OK);
    let body: Value = serde_json_body(&body);
    assert_eq!(body, json!({"text": "You said: hello there"}));
}

#[tokio::test]
async fn button_action_replaces_the_message_through_response_url() {
    // Given T1 installed and the approve prompt shown (its ack carries the button)
    let h = Harness::new().await;
    h.install("T1", "UA").await;
    let (_, prompt) = h.command("T1", "/tk-approve", "").await;
    let prompt = serde_json_body(&prompt);
    assert_eq!(
        prompt["blocks"][1]["elements"][0]["action_id"],
        "tk_approve"
    );
    // When the button is clicked
    let payload = json!({
        "type": "block_actions", "team": {"id": "T1"}, "user": {"id": "U7"},
        "trigger_id": "trig-2", "response_url": h.slack.response_url("act-1"),
        "container": {"type": "message", "message_ts": "2.0", "channel_id": "C1"},
        "actions": [{"type": "button", "action_id": "tk_approve", "block_id": "b", "value": "yes"}]
    });
    let (status, body) = h.interaction(payload).await;
    // Then it is acked empty and the original message is replaced
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let posted = h.calls("response_url");
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].params["response_url_id"], "act-1");
    assert_eq!(posted[0].params["text"], "Approved by <@U7>.");
    assert_eq!(posted[0].params["replace_original"], "true");
}

#[tokio::test]
async fn modal_opens_and_its_submission_returns_validation_errors() {
    // Given T1 installed
    let h = Harness::new().await;
    let t1 = h.install("T1", "UA").await;
    // When /tk-feedback is run, then a modal opens with T1's token and the command acks empty
    let (status, body) = h.command("T1", "/tk-feedback", "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let opened = h.calls("views.open");
    assert_eq!(opened.len(), 1);
    assert_eq!(
        (
            opened[0].team_id.as_str(),
            opened[0].token_fingerprint.as_str()
        ),
        ("T1", t1.as_str())
    );
    assert_eq!(opened[0].params["trigger_id"], "trig-1");
    // When the modal is submitted without an email address
    let submit = |value: &str| {
        json!({
            "type": "view_submission", "team": {"id": "T1"}, "user": {"id": "U1"},
            "view": {"id": "V1", "callback_id": "tk_feedback",
                     "state": {"values": {"email": {"value": {"type": "plain_text_input", "value": value}}}}}
        })
    };
    let (status, body) = h.interaction(submit("nope")).await;
    // Then the ack keeps it open with an error on the email block
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json_body(&body),
        json!({"response_action": "errors", "errors": {"email": "Please enter an email address."}})
    );
    // And a valid submission closes it (empty ack)
    let (status, body) = h.interaction(submit("a@example.com")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
}

#[tokio::test]
async fn unknown_commands_and_actions_are_acked_without_any_call() {
    // Given T1 installed
    let h = Harness::new().await;
    h.install("T1", "UA").await;
    let (posts, calls) = (h.slack.posts().len(), h.slack.web_calls().len());
    // When an unknown command and an unknown action arrive
    let (status, body) = h.command("T1", "/tk-nope", "x").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    let payload = json!({"type": "block_actions", "team": {"id": "T1"}, "user": {"id": "U1"},
                         "actions": [{"action_id": "nobody_listens"}]});
    let (status, body) = h.interaction(payload).await;
    // Then both are acked empty and Slack saw nothing
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(
        (h.slack.posts().len(), h.slack.web_calls().len()),
        (posts, calls)
    );
}

fn serde_json_body(body: &str) -> Value {
    body.parse::<Value>()
        .unwrap_or_else(|e| panic!("json body ({e}): {body}"))
}

#[tokio::test]
async fn lazy_report_acks_at_once_and_answers_after_five_seconds() {
    // Given T1 installed
    let h = Harness::new().await;
    h.install("T1", "UA").await;
    // When /tk-report is run
    let started = std::time::Instant::now();
    let (status, body) = h.command("T1", "/tk-report", "").await;
    // Then the ack comes well within Slack's 3 s, before the work is done
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json_body(&body), json!({"text": "Working on it…"}));
    assert!(h.calls("response_url").is_empty());
    // And the lazy part answers through the command's response_url after its 5 s
    let mut answered = Vec::new();
    for _ in 0..100 {
        answered = h.calls("response_url");
        if !answered.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answered.len(), 1, "lazy answer");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(tokenkeep_example_app::REPORT_SECS)
    );
    assert_eq!(answered[0].params["text"], "Your report is ready.");
    assert_eq!(answered[0].params["response_url_id"], "cmd");
}
