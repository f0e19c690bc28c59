//! `tokenkeep dev` as a user runs it: the real binary, the embedded store, a
//! fake Slack on loopback. Install through the OAuth routes, send a signed
//! event, check the reply reached Slack with the installed token, stop with
//! SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{SigningSecret, sign_request};

const SIGNING_SECRET: &str = "tokenkeep-dev-test-signing-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_serves_an_install_and_an_event_then_stops_on_sigterm() {
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let mut spec = InstallSpec::workspace("TDEV1");
    spec.app_id = "ADEV".into();
    slack.add_install("dev-code", spec);
    let cfg = slack.client_config();
    let data = tempfile::tempdir().unwrap();
    let port = free_port();

    // Given `tokenkeep dev` started as the README says, against the fake Slack.
    let mut child = Command::new(env!("CARGO_BIN_EXE_tokenkeep"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLACK_CLIENT_ID", &cfg.client_id)
        .env("SLACK_CLIENT_SECRET", cfg.client_secret.expose_secret())
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("SLACK_API_URL", slack.api_url())
        .env(
            "SLACK_AUTHORIZE_URL",
            format!("{}/oauth/authorize", slack.api_url()),
        )
        .env("SLACK_RESPONSE_URL_BASE", slack.response_url(""))
        .env("TOKENKEEP_DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tokenkeep dev");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let banner: Vec<String> = (0..5).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(
        banner[1].contains(&format!("http://127.0.0.1:{port}/slack/install")),
        "{banner:?}"
    );
    assert!(banner[3].contains("embedded"), "{banner:?}");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // When a browser starts the install...
    let install = http
        .get(format!("{base}/slack/install"))
        .send()
        .await
        .unwrap();
    assert_eq!(install.status(), 302);
    let cookie = install.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let location = install.headers()["location"].to_str().unwrap().to_owned();
    let state = location
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned();
    // ...and Slack sends it back with a code.
    let done = http
        .get(format!(
            "{base}/slack/oauth_redirect?code=dev-code&state={state}"
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 200, "install completes");
    // And the example app's install hook welcomed the installer by DM.
    let welcome = slack
        .posts()
        .into_iter()
        .find(|p| p.channel == "U0001")
        .expect("welcome DM");
    assert_eq!(welcome.team_id, "TDEV1");
    let bot = welcome.token_fingerprint;

    // Then a signed app_mention is answered in the thread with that tenant's token.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let body = serde_json::json!({
        "type": "event_callback", "team_id": "TDEV1", "api_app_id": "ADEV", "event_id": "EvDEV1", "event_time": now,
        "authorizations": [{"team_id": "TDEV1", "is_enterprise_install": false, "user_id": "UBOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U123", "text": "<@UBOT> hi", "channel": "C1", "ts": "1.000100"}
    })
    .to_string();
    let signature = sign_request(&SigningSecret::new(SIGNING_SECRET), now, body.as_bytes());
    let event = http
        .post(format!("{base}/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", now.to_string())
        .header("x-slack-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(event.status(), 200);
    let mut posted = false;
    for _ in 0..50 {
        if slack
            .posts()
            .iter()
            .any(|p| p.channel == "C1" && p.team_id == "TDEV1")
        {
            posted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        posted,
        "the example handler replied through the fake Slack: {:?}",
        slack.posts()
    );

    // And each other listener kind of the example app answers through dev.
    let signed = |content_type: &'static str, body: String| {
        let http = http.clone();
        let url = format!("{base}/slack/events");
        async move {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let signature = sign_request(&SigningSecret::new(SIGNING_SECRET), now, body.as_bytes());
            let resp = http
                .post(url)
                .header("content-type", content_type)
                .header("x-slack-request-timestamp", now.to_string())
                .header("x-slack-signature", signature)
                .body(body)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    const FORM: &str = "application/x-www-form-urlencoded";
    let command = |name: &str| {
        format!(
            "command={}&text=hi&team_id=TDEV1&user_id=U1&channel_id=C1&trigger_id=trig",
            name.replace('/', "%2F")
        )
    };
    let payload = |json: serde_json::Value| {
        serde_urlencoded::to_string([("payload", json.to_string())]).unwrap()
    };
    // a slash command acks with text,
    let (status, text) = signed(FORM, command("/tk-echo")).await;
    assert_eq!((status, text.as_str()), (200, r#"{"text":"You said: hi"}"#));
    // a button's action replaces its message through response_url,
    let click = serde_json::json!({"type": "block_actions", "team": {"id": "TDEV1"}, "user": {"id": "U7"},
        "response_url": slack.response_url("dev-act"), "actions": [{"action_id": "tk_approve", "type": "button"}]});
    assert_eq!(signed(FORM, payload(click)).await, (200, String::new()));
    let responded = slack
        .web_calls()
        .into_iter()
        .find(|c| c.method == "response_url")
        .expect("response_url post");
    assert_eq!(responded.params["text"], "Approved by <@U7>.");
    // a command opens a modal with the tenant's token, and its submission gets validation errors.
    assert_eq!(
        signed(FORM, command("/tk-feedback")).await,
        (200, String::new())
    );
    let opened = slack
        .web_calls()
        .into_iter()
        .find(|c| c.method == "views.open")
        .expect("views.open");
    assert_eq!(
        (opened.team_id.as_str(), opened.token_fingerprint.as_str()),
        ("TDEV1", bot.as_str())
    );
    let submit = serde_json::json!({"type": "view_submission", "team": {"id": "TDEV1"}, "user": {"id": "U1"},
        "view": {"id": "V1", "callback_id": "tk_feedback", "state": {"values": {"email": {"value": {"value": "x"}}}}}});
    let (status, text) = signed(FORM, payload(submit)).await;
    assert_eq!(status, 200);
    assert!(text.contains(r#""response_action":"errors""#), "{text}");
    // and a lazy command acks at once, then answers from the embedded queue's worker.
    let report = format!(
        "{}&response_url={}",
        command("/tk-report"),
        slack
            .response_url("dev-report")
            .replace(':', "%3A")
            .replace('/', "%2F")
    );
    assert_eq!(
        signed(FORM, report).await,
        (200, r#"{"text":"Working on it…"}"#.to_owned())
    );
    let mut reported = false;
    for _ in 0..100 {
        let calls = slack.web_calls();
        if calls.iter().any(|c| {
            c.params
                .get("response_url_id")
                .is_some_and(|id| id == "dev-report")
        }) {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reported,
        "the lazy report answered through dev's embedded queue"
    );

    // And SIGTERM stops it cleanly.
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("tokenkeep dev stopped")),
        "{rest:?}"
    );
    assert!(!rest.concat().contains("xox"), "no token in dev output");
}

#[test]
fn dev_without_slack_settings_names_the_variable_and_exits_2() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tokenkeep"))
        .args(["dev", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("TOKENKEEP_DATA_DIR", data.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SLACK_CLIENT_SECRET") || err.contains("SLACK_CLIENT_ID"),
        "{err}"
    );
}
