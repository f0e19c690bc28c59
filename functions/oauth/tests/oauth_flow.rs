//! The install lifecycle end to end, through `router()`, against the fake
//! Slack, on both repositories: the embedded store with a local key, and
//! DynamoDB + KMS on the emulator (`AWS_ENDPOINT_URL`, see infra/test.sh).
//! Every case is written once and run on each backend.

mod common;

use common::*;
use http::{StatusCode, header};
use tokenkeep_installations::RecordKey;
use tokenkeep_oauth::STATE_COOKIE;
use tokenkeep_slack_api::fake::{Failure, FakeSlackConfig, InstallSpec};

// ---- cases ------------------------------------------------------------------------

async fn install_redirects_to_slack_with_a_browser_bound_state(backend: Backend) {
    // Given the OAuth function
    let h = harness(backend).await;
    // When a browser asks to install
    let resp = h.get("/slack/install", None).await;
    // Then it is sent to the configured authorize URL with our parameters, URL-encoded
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let query = location.strip_prefix(&format!("{AUTHORIZE_URL}?")).unwrap();
    assert!(query.contains("scope=chat%3Awrite%2Ccommands"), "{query}");
    assert!(
        query.contains("redirect_uri=https%3A%2F%2Ftokenkeep.example%2Fslack%2Foauth_redirect"),
        "{query}"
    );
    let params: std::collections::HashMap<String, String> =
        serde_urlencoded::from_str(query).unwrap();
    assert_eq!(params["client_id"], FakeSlackConfig::default().client_id);
    assert_eq!(params["user_scope"], "search:read");
    let state = &params["state"];
    assert!(state.len() == 64 && state.bytes().all(|b| b.is_ascii_hexdigit()));
    // And the same state is set as a locked-down cookie
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap();
    let mut parts: Vec<&str> = cookie.split("; ").collect();
    assert_eq!(parts.remove(0), format!("{STATE_COOKIE}={state}"));
    parts.sort_unstable();
    assert_eq!(
        parts,
        [
            "HttpOnly",
            "Max-Age=600",
            "Path=/slack",
            "SameSite=Lax",
            "Secure"
        ]
    );
    // And each visit gets its own state
    assert_ne!(h.start_install().await.state, *state);
}

async fn full_workspace_install(backend: Backend) {
    // Given Slack will install workspace T1 with bot, user token and webhook
    let h = harness(backend).await;
    // When a browser goes through install and the redirect
    let page = h
        .install("code-ws", full_spec(InstallSpec::workspace("T1")))
        .await;
    // Then the page links back to the app in Slack
    assert!(
        page.contains("https:&#x2f;&#x2f;slack.com&#x2f;app_redirect?app=A0001&amp;team=T1"),
        "{page}"
    );
    // And the bot installation is found for T1
    let t1 = team_tenant("T1");
    let bot = h
        .store
        .fetch_bot(&t1)
        .await
        .unwrap()
        .expect("bot installation stored");
    assert_eq!(bot.tenant.pk(), "T#-#T1");
    assert_eq!(bot.version, 1);
    assert_eq!(bot.meta.bot_scopes, vec!["chat:write", "commands"]);
    // And its tokens open to the very tokens Slack issued
    let bot_token = h.store.bot_token(&t1, &ctx()).await.unwrap();
    assert!(h.slack.is_token_active(&bot_token));
    let user_token = h.store.user_token(&t1, "U0001", &ctx()).await.unwrap();
    assert!(h.slack.is_token_active(&user_token));
    let webhook = h.store.incoming_webhook_url(&t1, &ctx()).await.unwrap();
    assert!(
        webhook
            .expose_secret()
            .starts_with("https://hooks.slack.com/services/T1/")
    );
    // And the table holds none of them in the clear
    let dump = h.raw_dump().await;
    assert!(
        dump.contains("T#-#T1") && dump.contains("refresh_token"),
        "the dump shows the records"
    );
    assert!(!token_shaped(&dump), "a token in the clear: {dump}");
    assert!(
        !dump.contains("hooks.slack.com"),
        "a webhook URL in the clear"
    );
    assert_eq!(h.slack.counters().exchanges, 1);
}

async fn org_wide_install(backend: Backend) {
    // Given Slack will install org-wide into enterprise E1
    let h = harness(backend).await;
    // When the install completes
    let page = h
        .install("code-org", full_spec(InstallSpec::org_wide("E1")))
        .await;
    // Then the page sends the admin to pick workspaces in the org (the
    // template writes `/` as an entity, the browser reads it back)
    assert!(
        page.replace("&#x2f;", "/")
            .contains("https://app.slack.com/manage/E1/integrations/profile/A0001/workspaces/add"),
        "{page}"
    );
    // And the installation is keyed by the enterprise alone
    let records = h.records().await;
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r.pk == "T#E1#-"),
        "{:?}",
        records.iter().map(|r| &r.pk).collect::<Vec<_>>()
    );
    let e1 = tenant(
        serde_json::json!({ "team": { "id": "T9" }, "enterprise": { "id": "E1" }, "is_enterprise_install": true }),
    );
    assert!(e1.key().is_org_wide());
    let bot = h
        .store
        .fetch_bot(&e1)
        .await
        .unwrap()
        .expect("org-wide bot installation");
    assert!(bot.meta.is_enterprise_install);
    assert!(
        h.slack
            .is_token_active(&h.store.bot_token(&e1, &ctx()).await.unwrap())
    );
    // And a workspace of the org is not a separate tenant
    assert!(
        h.store
            .fetch_bot(&team_tenant("T9"))
            .await
            .unwrap()
            .is_none()
    );
    let dump = h.raw_dump().await;
    assert!(dump.contains("T#E1#-"));
    assert!(!token_shaped(&dump) && !dump.contains("hooks.slack.com"));
}

async fn reinstall_bumps_version_under_a_new_data_key(backend: Backend) {
    // Given T1 installed once
    let h = harness(backend).await;
    h.install("code-1", full_spec(InstallSpec::workspace("T1")))
        .await;
    let t1 = team_tenant("T1");
    let key = RecordKey::bot(t1.key().clone());
    let first = h.store.repository().get(&key).await.unwrap().unwrap();
    let first_token = h.store.bot_token(&t1, &ctx()).await.unwrap();
    // When it is installed again
    h.install("code-2", full_spec(InstallSpec::workspace("T1")))
        .await;
    // Then the record is replaced: next version, same generation, fresh data key
    let second = h.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!((first.version, second.version), (1, 2));
    assert_eq!(first.generation, second.generation);
    assert_ne!(first.data_key, second.data_key);
    // And it opens to the newly issued token
    let second_token = h.store.bot_token(&t1, &ctx()).await.unwrap();
    assert_ne!(second_token.expose_secret(), first_token.expose_secret());
    assert!(h.slack.is_token_active(&second_token));
    assert_eq!(h.slack.counters().exchanges, 2);
}

async fn access_denied_stores_nothing_and_spends_the_state(backend: Backend) {
    // Given a started install and a code Slack would redeem
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    let started = h.start_install().await;
    // When the user cancels at Slack
    let (status, body, cookies) = h
        .redirect(
            &format!("error=access_denied&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    // Then a cancellation page, the cookie cleared, no exchange, nothing stored
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Installation cancelled"), "{body}");
    assert!(cookies.iter().any(|c| c.contains("Max-Age=0")));
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
    // And the state can't be used afterwards
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
}

async fn replayed_state_is_refused(backend: Backend) {
    // Given an install completed with a state
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    h.slack
        .add_install("code-2", full_spec(InstallSpec::workspace("T2")));
    let started = h.start_install().await;
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // When the same state and cookie come back with another code
    let (status, body, _) = h
        .redirect(
            &format!("code=code-2&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    // Then it is refused, with a generic page, before any exchange
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Installation failed") && !body.contains("state"),
        "{body}"
    );
    assert_eq!(h.exchange_calls(), 1);
    assert!(
        h.store
            .repository()
            .list_tenant("T#-#T2")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.store
            .fetch_bot(&team_tenant("T2"))
            .await
            .unwrap()
            .is_none()
    );
}

async fn missing_cookie_is_refused_without_burning_the_state(backend: Backend) {
    // Given a started install
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    let started = h.start_install().await;
    // When the redirect arrives without the state cookie (another browser, or a forged link)
    let (status, body, cookies) = h
        .redirect(&format!("code=code-1&state={}", started.state), None)
        .await;
    // Then it is refused: no exchange, nothing stored, no cookie touched
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("Installation failed"));
    assert!(cookies.is_empty());
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
    // And the owner of the state can still finish
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn cookie_from_another_browser_is_refused(backend: Backend) {
    // Given two browsers that each started an install
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    let victim = h.start_install().await;
    let attacker = h.start_install().await;
    // When the victim's browser follows a link carrying the attacker's state
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", attacker.state),
            Some(&victim.cookie),
        )
        .await;
    // Then it is refused before any exchange and nothing is stored
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
    // And neither state was burnt by the attempt
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", attacker.state),
            Some(&attacker.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

async fn expired_state_is_refused(backend: Backend) {
    // Given a started install
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    let started = h.start_install().await;
    // When the redirect arrives 11 minutes later (the cookie still sent)
    h.clock.advance_secs(11 * 60);
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    // Then it is refused, with no exchange and nothing stored
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
}

async fn invalid_code_is_refused(backend: Backend) {
    // Given a started install and a code Slack does not know
    let h = harness(backend).await;
    let started = h.start_install().await;
    // When the redirect carries it
    let (status, body, _) = h
        .redirect(
            &format!("code=not-a-code&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    // Then Slack was asked once, refused, and nothing is stored
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Installation failed") && !body.contains("invalid_code"),
        "{body}"
    );
    assert_eq!((h.exchange_calls(), h.slack.counters().exchanges), (1, 0));
    h.assert_nothing_stored().await;
}

async fn slack_outage_is_a_bad_gateway(backend: Backend) {
    // Given a valid code but Slack answering 500
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    h.slack.fail_next(OAUTH_METHOD, Failure::Http(500));
    let started = h.start_install().await;
    // When the redirect arrives
    let (status, body, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    // Then a generic 502, one attempt and no retry (the code is single-use), nothing stored
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("Installation failed") && !body.contains("500"),
        "{body}"
    );
    assert_eq!((h.exchange_calls(), h.slack.counters().exchanges), (1, 0));
    h.assert_nothing_stored().await;
}

async fn oversize_and_malformed_queries_are_refused(backend: Backend) {
    // Given a started install
    let h = harness(backend).await;
    h.slack
        .add_install("code-1", full_spec(InstallSpec::workspace("T1")));
    let started = h.start_install().await;
    let long = "a".repeat(257);
    // When the redirect carries an oversize code, a repeated state or no state
    for query in [
        format!("code={long}&state={}", started.state),
        format!(
            "code=code-1&state={}&state={}",
            started.state, started.state
        ),
        "code=code-1".to_owned(),
    ] {
        let (status, _, _) = h.redirect(&query, Some(&started.cookie)).await;
        // Then each is a 400 before Slack is asked
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
    }
    assert_eq!(h.exchange_calls(), 0);
    h.assert_nothing_stored().await;
    // And the state survived them
    let (status, _, _) = h
        .redirect(
            &format!("code=code-1&state={}", started.state),
            Some(&started.cookie),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $( #[tokio::test] async fn $case() { super::$case(super::Backend::Embedded).await } )*
        }
        mod dynamodb_kms {
            $( #[tokio::test] async fn $case() { super::$case(super::Backend::Dynamo).await } )*
        }
    };
}

on_both_backends!(
    install_redirects_to_slack_with_a_browser_bound_state,
    full_workspace_install,
    org_wide_install,
    reinstall_bumps_version_under_a_new_data_key,
    access_denied_stores_nothing_and_spends_the_state,
    replayed_state_is_refused,
    missing_cookie_is_refused_without_burning_the_state,
    cookie_from_another_browser_is_refused,
    expired_state_is_refused,
    invalid_code_is_refused,
    slack_outage_is_a_bad_gateway,
    oversize_and_malformed_queries_are_refused,
);

/// A Slack token in the clear. Not bare "xox": random base64 ciphertext
/// contains "xox" by chance, but never "xoxb-" (no '-' or '.' in its alphabet).
fn token_shaped(text: &str) -> bool {
    ["xoxb-", "xoxp-", "xoxe-", "xoxe.", "xoxa-", "xoxr-"]
        .iter()
        .any(|t| text.contains(t))
}
