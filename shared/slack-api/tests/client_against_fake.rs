//! The real SlackClient against the in-process fake Slack, over real HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use tokenkeep_slack_api::fake::{Failure, FakeCounters, FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{
    AccessToken, ClientSecret, RefreshToken, SlackClient, SlackClientConfig, SlackError,
    SlackErrorCode, SlackOAuth,
};

async fn fake() -> FakeSlack {
    FakeSlack::start(FakeSlackConfig::default()).await
}

fn api(code: &str) -> SlackErrorCode {
    SlackErrorCode::from_slack(code)
}

/// Installs `spec` and returns the exchange answer's bot token and refresh token.
async fn install(
    slack: &FakeSlack,
    client: &SlackClient,
    spec: InstallSpec,
) -> (AccessToken, RefreshToken) {
    slack.add_install("code", spec);
    let r = client
        .exchange_code("code", None)
        .await
        .unwrap()
        .into_response();
    (r.access_token.unwrap(), r.refresh_token.unwrap())
}

#[tokio::test]
async fn workspace_install_with_rotation_returns_expiring_bot_token() {
    // Given a rotating app and a workspace install behind a code
    let slack = fake().await;
    slack.add_install("c1", InstallSpec::workspace("T1"));
    let client = slack.client();
    // When the code is exchanged
    let r = client.exchange_code("c1", None).await.unwrap();
    // Then a rotating bot token, a refresh token and the team come back
    let token = r.access_token.clone().unwrap();
    assert!(token.expose_secret().starts_with("xoxe.xoxb-1-"));
    assert!(
        r.refresh_token
            .as_ref()
            .unwrap()
            .expose_secret()
            .starts_with("xoxe-1-")
    );
    assert_eq!(r.expires_in, Some(43_200));
    assert_eq!(r.token_type.as_deref(), Some("bot"));
    assert_eq!(r.team.as_ref().unwrap().id, "T1");
    assert!(r.enterprise.is_none() && !r.is_enterprise_install);
    assert!(
        r.authed_user.as_ref().unwrap().access_token.is_none(),
        "no user token unless asked"
    );
    assert!(r.incoming_webhook.is_none());
    assert!(slack.is_token_active(&token));
    // And the token authenticates as that team
    let who = client.auth_test(&token).await.unwrap();
    assert_eq!(who.team_id.as_deref(), Some("T1"));
    assert_eq!(who.user_id.as_deref(), r.bot_user_id.as_deref());
    assert_eq!(
        slack.counters(),
        FakeCounters {
            exchanges: 1,
            auth_tests: 1,
            ..FakeCounters::default()
        }
    );
}

#[tokio::test]
async fn without_rotation_the_bot_token_never_expires() {
    // Given an app without token rotation
    let slack = FakeSlack::start(FakeSlackConfig {
        rotation: false,
        ..FakeSlackConfig::default()
    })
    .await;
    slack.add_install("c1", InstallSpec::workspace("T1"));
    // When the code is exchanged
    let r = slack
        .client()
        .exchange_code("c1", None)
        .await
        .unwrap()
        .into_response();
    // Then a plain xoxb token comes back with no refresh token or expiry
    assert!(r.access_token.unwrap().expose_secret().starts_with("xoxb-"));
    assert!(r.refresh_token.is_none() && r.expires_in.is_none());
}

#[tokio::test]
async fn org_wide_install_has_null_team() {
    // Given an org-wide install
    let slack = fake().await;
    slack.add_install("c1", InstallSpec::org_wide("E1"));
    let client = slack.client();
    // When the code is exchanged
    let r = client.exchange_code("c1", None).await.unwrap();
    // Then team is None (Slack sends null) and the enterprise identifies the install
    assert!(r.team.is_none());
    assert_eq!(r.enterprise.as_ref().unwrap().id, "E1");
    assert!(r.is_enterprise_install);
    let who = client
        .auth_test(r.access_token.as_ref().unwrap())
        .await
        .unwrap();
    assert_eq!(who.enterprise_id.as_deref(), Some("E1"));
    assert!(who.is_enterprise_install);
}

#[tokio::test]
async fn user_token_and_webhook_come_back_when_requested() {
    // Given an install that asks for user scopes and an incoming webhook
    let slack = fake().await;
    let spec = InstallSpec {
        user_id: "U42".into(),
        user_scopes: "search:read".into(),
        with_user_token: true,
        with_webhook: true,
        ..InstallSpec::workspace("T1")
    };
    slack.add_install("c1", spec);
    let client = slack.client();
    // When the code is exchanged
    let r = client
        .exchange_code("c1", None)
        .await
        .unwrap()
        .into_response();
    // Then the user gets their own rotating token pair, and the webhook URL is present
    let user = r.authed_user.unwrap();
    assert_eq!(user.id, "U42");
    assert_eq!(user.scope.as_deref(), Some("search:read"));
    let user_token = user.access_token.unwrap();
    assert!(user_token.expose_secret().starts_with("xoxe.xoxp-1-"));
    assert!(user.refresh_token.is_some() && user.expires_in.is_some());
    let hook = r.incoming_webhook.unwrap();
    assert!(
        hook.url
            .expose_secret()
            .starts_with("https://hooks.slack.com/services/T1/")
    );
    // And the user token authenticates as that user, not as the bot
    let who = client.auth_test(&user_token).await.unwrap();
    assert_eq!(who.user_id.as_deref(), Some("U42"));
    assert!(who.bot_id.is_none());
}

#[tokio::test]
async fn codes_are_single_use_and_must_exist() {
    // Given a code that has been exchanged once
    let slack = fake().await;
    slack.add_install("c1", InstallSpec::workspace("T1"));
    let client = slack.client();
    client.exchange_code("c1", None).await.unwrap();
    // When it is exchanged again, or an unknown code is tried
    let again = client.exchange_code("c1", None).await.unwrap_err();
    let unknown = client.exchange_code("nope", None).await.unwrap_err();
    // Then both are invalid_code, and neither counts as an exchange
    assert!(
        matches!(again, SlackError::Api(SlackErrorCode::InvalidCode)),
        "{again:?}"
    );
    assert!(
        matches!(unknown, SlackError::Api(SlackErrorCode::InvalidCode)),
        "{unknown:?}"
    );
    assert_eq!(slack.counters().exchanges, 1);
}

#[tokio::test]
async fn redirect_uri_must_match_when_the_install_used_one() {
    // Given an install authorized with a redirect URI
    let slack = fake().await;
    let spec = InstallSpec {
        redirect_uri: Some("https://app/cb".into()),
        ..InstallSpec::workspace("T1")
    };
    slack.add_install("c1", spec.clone());
    slack.add_install("c2", spec);
    let client = slack.client();
    // When exchanged with a different URI, then Slack refuses; with the same one it succeeds
    let err = client
        .exchange_code("c1", Some("https://evil/cb"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&api("bad_redirect_uri")));
    assert!(
        client
            .exchange_code("c2", Some("https://app/cb"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_client_credentials_are_refused() {
    // Given a fake Slack and clients with a wrong secret and a wrong id
    let slack = fake().await;
    slack.add_install("c1", InstallSpec::workspace("T1"));
    let bad_secret = SlackClient::new(SlackClientConfig {
        client_secret: ClientSecret::new("wrong"),
        ..slack.client_config()
    })
    .unwrap();
    let bad_id = SlackClient::new(SlackClientConfig {
        client_id: "9.9".into(),
        ..slack.client_config()
    })
    .unwrap();
    // When each tries an exchange, then Slack says which credential is wrong
    let e = bad_secret.exchange_code("c1", None).await.unwrap_err();
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::BadClientSecret)),
        "{e:?}"
    );
    let e = bad_id.exchange_code("c1", None).await.unwrap_err();
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::InvalidClientId)),
        "{e:?}"
    );
    // And the error text carries no secret
    assert!(!e.to_string().contains("fake-client-secret"));
}

#[tokio::test]
async fn a_refresh_token_works_once() {
    // Given an installation with its first refresh token
    let slack = fake().await;
    let client = slack.client();
    let (first_access, first_refresh) =
        install(&slack, &client, InstallSpec::workspace("T1")).await;
    // When it is refreshed
    let r = client.refresh(&first_refresh).await.unwrap();
    // Then a new access and refresh token come back, and the old access token still works
    let new_access = r.access_token.unwrap();
    let new_refresh = r.refresh_token.unwrap();
    assert!(!new_access.ct_eq(&first_access));
    assert!(!new_refresh.ct_eq(&first_refresh));
    assert_eq!(r.expires_in, Some(43_200));
    assert!(slack.is_token_active(&first_access) && slack.is_token_active(&new_access));
    // And when the same refresh token is used a second time, Slack refuses: the grant looks dead
    let e = client.refresh(&first_refresh).await.unwrap_err();
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::InvalidRefreshToken)),
        "{e:?}"
    );
    assert!(e.is_revoked());
    assert_eq!(slack.counters().refreshes, 1);
    assert_eq!(slack.counters().refresh_failures, 1);
    assert_eq!(slack.refreshes_for("T1"), 1);
    assert_eq!(slack.refreshes_for("T2"), 0);
    // While the new refresh token is still good
    assert!(client.refresh(&new_refresh).await.is_ok());
}

#[tokio::test]
async fn a_third_access_token_revokes_the_oldest() {
    // Given an installation refreshed twice in a row (three access tokens issued)
    let slack = fake().await;
    let client = slack.client();
    let (a1, r1) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    let second = client.refresh(&r1).await.unwrap();
    let (a2, r2) = (second.access_token.unwrap(), second.refresh_token.unwrap());
    let a3 = client.refresh(&r2).await.unwrap().access_token.unwrap();
    // When the holder of the first token uses it
    let e = client
        .chat_post_message(&a1, "C1", "hi", None)
        .await
        .unwrap_err();
    let probe = client.auth_test(&a1).await.unwrap_err();
    // Then it has been revoked, while the two newest still work
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::TokenRevoked)),
        "{e:?}"
    );
    assert!(e.is_revoked() && probe.is_revoked());
    assert!(!slack.is_token_active(&a1));
    assert!(slack.is_token_active(&a2) && slack.is_token_active(&a3));
    client
        .chat_post_message(&a2, "C1", "hi", None)
        .await
        .unwrap();
    assert_eq!(slack.refreshes_for("T1"), 2);
}

#[tokio::test]
async fn bot_and_user_tokens_rotate_independently() {
    // Given an install with bot and user tokens
    let slack = fake().await;
    let client = slack.client();
    let spec = InstallSpec {
        with_user_token: true,
        user_scopes: "search:read".into(),
        ..InstallSpec::workspace("T1")
    };
    slack.add_install("c1", spec);
    let r = client
        .exchange_code("c1", None)
        .await
        .unwrap()
        .into_response();
    let user_token = r.authed_user.unwrap().access_token.unwrap();
    // When the bot token is refreshed twice
    let r2 = client
        .refresh(r.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    client
        .refresh(r2.refresh_token.as_ref().unwrap())
        .await
        .unwrap();
    // Then the user token is untouched (the two-token limit is per kind)
    assert!(slack.is_token_active(&user_token));
    assert!(!slack.is_token_active(r.access_token.as_ref().unwrap()));
}

#[tokio::test]
async fn revoked_refresh_tokens_fail_the_next_refresh() {
    // Given an installation whose refresh tokens the fake revoked (as after an uninstall)
    let slack = fake().await;
    let client = slack.client();
    let (_, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.revoke_refresh_tokens_for_team("T1");
    // When the refresh token is used, then Slack says invalid_refresh_token
    let e = client.refresh(&refresh).await.unwrap_err();
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::InvalidRefreshToken)),
        "{e:?}"
    );
    assert_eq!(slack.counters().refreshes, 0);
}

#[tokio::test]
async fn expired_access_tokens_are_refused_but_not_revoked() {
    // Given a one-second token lifetime
    let slack = FakeSlack::start(FakeSlackConfig {
        token_lifetime_secs: 1,
        ..FakeSlackConfig::default()
    })
    .await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    // When the token is used after it expired
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let e = client.auth_test(&token).await.unwrap_err();
    // Then Slack says token_expired, which calls for a refresh, not a reinstall
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::TokenExpired)),
        "{e:?}"
    );
    assert!(!e.is_revoked());
}

#[tokio::test]
async fn ok_false_becomes_a_typed_api_error() {
    // Given a token and a Slack that refuses the next post
    let slack = fake().await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next(
        "chat.postMessage",
        Failure::SlackError("channel_not_found".into()),
    );
    // When posting
    let e = client
        .chat_post_message(&token, "C404", "hi", None)
        .await
        .unwrap_err();
    // Then the code is typed, not retried, and neither revoked nor ambiguous
    assert_eq!(
        e.code(),
        Some(&SlackErrorCode::Other("channel_not_found".into()))
    );
    assert!(!e.is_revoked() && !e.is_ambiguous());
    assert_eq!(slack.calls("chat.postMessage"), 1);
    assert!(slack.posts().is_empty());
    // And a call with an unknown token is invalid_auth
    let e = client
        .auth_test(&AccessToken::new("xoxb-unknown"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SlackError::Api(SlackErrorCode::InvalidAuth)),
        "{e:?}"
    );
}

#[tokio::test]
async fn server_errors_are_http_and_ambiguous_and_never_retried() {
    // Given a Slack that answers 503 to the next refresh and the next post
    let slack = fake().await;
    let client = slack.client();
    let (token, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next("oauth.v2.access", Failure::Http(503));
    slack.fail_next("chat.postMessage", Failure::Http(500));
    // When each is called
    let e = client.refresh(&refresh).await.unwrap_err();
    let p = client
        .chat_post_message(&token, "C1", "hi", None)
        .await
        .unwrap_err();
    // Then both are Http errors, ambiguous, sent once each
    assert!(
        matches!(e, SlackError::Http(503)) && e.is_ambiguous(),
        "{e:?}"
    );
    assert!(
        matches!(p, SlackError::Http(500)) && p.is_ambiguous(),
        "{p:?}"
    );
    assert_eq!(
        slack.calls("oauth.v2.access"),
        2,
        "exchange + one refresh attempt"
    );
    assert_eq!(slack.calls("chat.postMessage"), 1);
    assert_eq!(slack.counters().refresh_failures, 1);
    // And the stored refresh token is still the one that works
    assert!(client.refresh(&refresh).await.is_ok());
}

#[tokio::test]
async fn a_client_error_with_a_slack_envelope_is_typed() {
    // Given a Slack that answers the next refresh with HTTP 400 and an ok:false body,
    // and the one after with a bare 404
    let slack = fake().await;
    let client = slack.client();
    let (_, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next(
        "oauth.v2.access",
        Failure::HttpSlackError(400, "invalid_refresh_token".into()),
    );
    slack.fail_next("oauth.v2.access", Failure::Http(404));
    // When refreshing twice
    let first = client.refresh(&refresh).await.unwrap_err();
    let second = client.refresh(&refresh).await.unwrap_err();
    // Then the first is Slack's typed refusal, the second a plain, unambiguous Http error
    assert!(
        matches!(first, SlackError::Api(SlackErrorCode::InvalidRefreshToken)),
        "{first:?}"
    );
    assert!(
        matches!(second, SlackError::Http(404)) && !second.is_ambiguous(),
        "{second:?}"
    );
}

#[tokio::test]
async fn a_non_json_success_is_a_decode_error() {
    // Given a Slack that answers 200 with a plain-text body
    let slack = fake().await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next("auth.test", Failure::Http(200));
    // When calling auth.test, then the answer is a Decode error, treated as ambiguous
    let e = client.auth_test(&token).await.unwrap_err();
    assert!(
        matches!(e, SlackError::Decode(_)) && e.is_ambiguous(),
        "{e:?}"
    );
}

#[tokio::test]
async fn rate_limited_post_is_retried_once_after_retry_after() {
    // Given a Slack that rate-limits the next post for 1s
    let slack = fake().await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    // When posting
    let started = Instant::now();
    client
        .chat_post_message(&token, "C1", "hello", Some("123.456"))
        .await
        .unwrap();
    // Then the client waited Retry-After, retried once, and the message landed once
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(slack.calls("chat.postMessage"), 2);
    let posts = slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].channel, "C1");
    assert_eq!(posts[0].text, "hello");
    assert_eq!(posts[0].thread_ts.as_deref(), Some("123.456"));
    assert_eq!(posts[0].team_id, "T1");
    assert_eq!(posts[0].token_fingerprint, token.fingerprint());
    assert!(!format!("{posts:?}").contains(token.expose_secret()));
}

#[tokio::test]
async fn a_second_rate_limit_is_returned_not_retried_again() {
    // Given a Slack that rate-limits the next two posts
    let slack = fake().await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    slack.fail_next(
        "chat.postMessage",
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    // When posting, then the second 429 is returned with its Retry-After, after two calls
    let e = client
        .chat_post_message(&token, "C1", "hi", None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            SlackError::RateLimited {
                retry_after_secs: 7
            }
        ),
        "{e:?}"
    );
    assert_eq!(slack.calls("chat.postMessage"), 2);
    assert_eq!(slack.counters().posts, 0);
}

#[tokio::test]
async fn a_long_retry_after_is_returned_at_once() {
    // Given a client that will not wait at all, and a Slack that rate-limits the next auth.test
    let slack = fake().await;
    let client = slack.client().with_max_retry_wait(Duration::ZERO);
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next(
        "auth.test",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    // When calling, then RateLimited comes back without a retry
    let e = client.auth_test(&token).await.unwrap_err();
    assert!(
        matches!(
            e,
            SlackError::RateLimited {
                retry_after_secs: 1
            }
        ),
        "{e:?}"
    );
    assert_eq!(slack.calls("auth.test"), 1);
}

#[tokio::test]
async fn oauth_calls_are_never_retried_on_rate_limit() {
    // Given a Slack that rate-limits the next two oauth.v2.access calls
    let slack = fake().await;
    let client = slack.client();
    let (_, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.add_install("c2", InstallSpec::workspace("T2"));
    slack.fail_next(
        "oauth.v2.access",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    slack.fail_next(
        "oauth.v2.access",
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    // When refreshing and exchanging
    let r = client.refresh(&refresh).await.unwrap_err();
    let x = client.exchange_code("c2", None).await.unwrap_err();
    // Then both return RateLimited after a single attempt each
    assert!(
        matches!(
            r,
            SlackError::RateLimited {
                retry_after_secs: 1
            }
        ),
        "{r:?}"
    );
    assert!(
        matches!(
            x,
            SlackError::RateLimited {
                retry_after_secs: 1
            }
        ),
        "{x:?}"
    );
    assert_eq!(
        slack.calls("oauth.v2.access"),
        3,
        "exchange + one refresh + one exchange"
    );
    // And the refresh token and code are unspent
    assert!(client.refresh(&refresh).await.is_ok());
    assert!(client.exchange_code("c2", None).await.is_ok());
}

#[tokio::test]
async fn a_hanging_slack_times_out() {
    // Given a client with a 200ms timeout and a Slack that hangs on the next refresh
    let slack = fake().await;
    let client = SlackClient::new(SlackClientConfig {
        timeout: Duration::from_millis(200),
        ..slack.client_config()
    })
    .unwrap();
    let (_, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next("oauth.v2.access", Failure::Timeout);
    // When refreshing
    let started = Instant::now();
    let e = client.refresh(&refresh).await.unwrap_err();
    // Then the call ends as an ambiguous Timeout well before the fake answers
    assert!(matches!(e, SlackError::Timeout), "{e:?}");
    assert!(e.is_ambiguous());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_lost_response_means_slack_acted_unseen() {
    // Given a Slack that performs the next refresh but never delivers the answer
    let slack = fake().await;
    let client = SlackClient::new(SlackClientConfig {
        timeout: Duration::from_millis(200),
        ..slack.client_config()
    })
    .unwrap();
    let (_, refresh) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    slack.fail_next("oauth.v2.access", Failure::LostResponse);
    // When refreshing
    let e = client.refresh(&refresh).await.unwrap_err();
    // Then the caller sees an ambiguous timeout while Slack did rotate the tokens
    assert!(e.is_ambiguous(), "{e:?}");
    assert_eq!(slack.refreshes_for("T1"), 1);
}

#[tokio::test]
async fn auth_revoke_kills_the_token() {
    // Given an active token
    let slack = fake().await;
    let client = slack.client();
    let (token, _) = install(&slack, &client, InstallSpec::workspace("T1")).await;
    // When it is revoked
    client.auth_revoke(&token).await.unwrap();
    // Then Slack no longer accepts it, and revoking again reports a dead token
    assert!(!slack.is_token_active(&token));
    assert!(client.auth_revoke(&token).await.unwrap_err().is_revoked());
    assert_eq!(slack.counters().revokes, 1);
}

#[tokio::test]
async fn an_unreachable_slack_is_a_transport_error() {
    // Given a port nobody listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = SlackClient::new(SlackClientConfig {
        api_url: format!("http://{addr}/api"),
        ..SlackClientConfig::new("1.2", ClientSecret::new("s"))
    })
    .unwrap();
    // When calling it, then the error is Transport (ambiguous) and names no secret
    let e = client
        .auth_test(&AccessToken::new("xoxb-1-secret"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, SlackError::Transport(_)) && e.is_ambiguous(),
        "{e:?}"
    );
    assert!(!format!("{e:?} {e}").contains("xoxb"));
}

#[tokio::test]
async fn the_fake_stops_when_the_last_handle_drops() {
    // Given a running fake, a client for it and a second handle
    let slack = fake().await;
    let client = slack.client();
    let other = slack.clone();
    drop(slack);
    // While one handle lives, it answers
    assert!(matches!(
        client.auth_test(&AccessToken::new("x")).await,
        Err(SlackError::Api(_))
    ));
    // When the last handle drops, then it soon refuses connections
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.auth_test(&AccessToken::new("x")).await {
            Err(SlackError::Transport(_)) => break,
            other => assert!(Instant::now() < deadline, "still answering: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn debug_output_never_contains_a_token_or_secret() {
    // Given a client and a full install answer with user token and webhook
    let slack = fake().await;
    let client = slack.client();
    let spec = InstallSpec {
        with_user_token: true,
        with_webhook: true,
        ..InstallSpec::workspace("T1")
    };
    slack.add_install("c1", spec);
    let r = client.exchange_code("c1", None).await.unwrap();
    // When both are Debug-formatted
    let shown = format!("{client:?} {r:?} {:?} {slack:?}", slack.client_config());
    // Then no token, webhook secret or client secret appears
    assert!(!shown.contains("xox"), "{shown}");
    assert!(!shown.contains("fake-client-secret"), "{shown}");
    assert!(!shown.contains("hooks.slack.com"), "{shown}");
    assert!(shown.contains("T1"), "ids stay visible: {shown}");
}

#[tokio::test]
async fn a_long_lived_token_is_exchanged_once_for_a_rotating_pair() {
    // Given an install from before the app turned rotation on
    let slack = fake().await;
    let client = slack.client();
    slack.add_install(
        "old",
        InstallSpec {
            long_lived: true,
            ..InstallSpec::workspace("T1")
        },
    );
    let r = client
        .exchange_code("old", None)
        .await
        .unwrap()
        .into_response();
    let long_lived = r.access_token.unwrap();
    assert!(
        r.refresh_token.is_none() && r.expires_in.is_none(),
        "a long-lived install has no refresh pair"
    );
    // When it is exchanged (oauth.v2.exchange)
    let ex = client.exchange_long_lived(&long_lived).await.unwrap();
    // Then a rotating pair comes back, which works and refreshes, and the old token is retired
    let rotating = ex.access_token.unwrap();
    assert!(rotating.expose_secret().starts_with("xoxe.xoxb-"));
    assert_eq!(ex.expires_in, Some(43_200));
    assert!(slack.is_token_active(&rotating));
    assert!(!slack.is_token_active(&long_lived));
    assert!(client.refresh(&ex.refresh_token.unwrap()).await.is_ok());
    // And neither the retired token nor a rotating one can be exchanged again
    let again = client.exchange_long_lived(&long_lived).await.unwrap_err();
    assert_eq!(again.code(), Some(&api("token_revoked")));
    let rotating_again = client.exchange_long_lived(&rotating).await.unwrap_err();
    assert_eq!(rotating_again.code(), Some(&api("token_already_rotating")));
}
