//! The listener-facing Web API methods ([`BoundClient`], `respond`) against
//! the fake Slack, over real HTTP on 127.0.0.1.

use serde_json::json;
use tokenkeep_slack_api::fake::{Failure, FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{Message, Response, SlackError, SlackErrorCode, SlackOAuth};

async fn installed(team: &str) -> (FakeSlack, tokenkeep_slack_api::BoundClient) {
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    slack.add_install("code", InstallSpec::workspace(team));
    let client = slack.client();
    let token = client
        .exchange_code("code", None)
        .await
        .unwrap()
        .into_response()
        .access_token
        .unwrap();
    (slack, client.bind(token))
}

#[tokio::test]
async fn bound_client_calls_carry_the_bound_tenants_token() {
    // Given a client bound to T1's bot token
    let (slack, bot) = installed("T1").await;
    // When it posts, updates, posts ephemerally and opens, pushes and updates a view
    let posted = bot
        .chat_post_message("C1", &Message::text("hi").in_thread("1.0"))
        .await
        .unwrap();
    bot.chat_update(&posted.channel, &posted.ts, &Message::text("edited"))
        .await
        .unwrap();
    bot.chat_post_ephemeral("C1", "U1", &Message::text("psst"))
        .await
        .unwrap();
    let view = json!({"type": "modal", "title": {"type": "plain_text", "text": "T"}});
    let opened = bot.views_open("trig-1", &view).await.unwrap();
    bot.views_push("trig-2", &view).await.unwrap();
    bot.views_update(&opened.id, opened.hash.as_deref(), &view)
        .await
        .unwrap();
    // Then Slack saw each with T1's token and the arguments given
    let posts = slack.posts();
    assert_eq!(
        (posts[0].channel.as_str(), posts[0].thread_ts.as_deref()),
        ("C1", Some("1.0"))
    );
    let calls = slack.web_calls();
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(
        methods,
        [
            "chat.update",
            "chat.postEphemeral",
            "views.open",
            "views.push",
            "views.update"
        ]
    );
    assert!(
        calls
            .iter()
            .all(|c| c.team_id == "T1" && c.token_fingerprint == bot.token_fingerprint())
    );
    assert_eq!(calls[0].params["ts"], posted.ts);
    assert_eq!(calls[0].params["text"], "edited");
    assert_eq!(calls[4].params["view_id"], opened.id);
    assert_eq!(calls[4].params["hash"], opened.hash.unwrap());
    // And Debug of the bound client shows only a fingerprint
    assert!(!format!("{bot:?}").contains("xox"));
}

#[tokio::test]
async fn a_rate_limited_call_is_retried_once_then_reported() {
    // Given a bound client and Slack answering 429 (retry after 0 s) once
    let (slack, bot) = installed("T1").await;
    slack.fail_next(
        "chat.update",
        Failure::RateLimited {
            retry_after_secs: 0,
        },
    );
    // When it updates a message, then the retry succeeds and Slack saw two requests
    bot.chat_update("C1", "1.0", &Message::text("x"))
        .await
        .unwrap();
    assert_eq!(slack.calls("chat.update"), 2);
    // Given two 429s in a row, then the second is returned, not retried again
    slack.fail_next(
        "views.open",
        Failure::RateLimited {
            retry_after_secs: 0,
        },
    );
    slack.fail_next(
        "views.open",
        Failure::RateLimited {
            retry_after_secs: 0,
        },
    );
    let e = bot.views_open("t", &json!({})).await.unwrap_err();
    assert!(matches!(e, SlackError::RateLimited { .. }), "{e}");
    assert_eq!(slack.calls("views.open"), 2);
}

#[tokio::test]
async fn slack_refusals_and_missing_arguments_are_errors() {
    let (slack, bot) = installed("T1").await;
    let e = bot.views_open("", &json!({})).await.unwrap_err();
    assert_eq!(
        e.code(),
        Some(&SlackErrorCode::from_slack("invalid_arguments"))
    );
    assert!(slack.web_calls().is_empty());
}

#[tokio::test]
async fn respond_posts_only_to_slack_response_urls() {
    // Given a client whose allowed response_url base is the fake's
    let (slack, _bot) = installed("T1").await;
    let client = slack.client();
    // When it responds to a response_url Slack issued
    let url = slack.response_url("R1");
    client
        .respond(&url, &Response::text("done").replacing_original())
        .await
        .unwrap();
    // Then the fake got the body, with replace_original
    let calls = slack.web_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].params["response_url_id"], "R1");
    assert_eq!(calls[0].params["text"], "done");
    assert_eq!(calls[0].params["replace_original"], "true");
    // And a URL elsewhere is refused without a request
    let e = client
        .respond("http://127.0.0.1:1/evil", &Response::text("x"))
        .await
        .unwrap_err();
    assert!(matches!(e, SlackError::ResponseUrl));
    assert_eq!(slack.web_calls().len(), 1);
}
