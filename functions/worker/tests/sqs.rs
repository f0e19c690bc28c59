//! Lazy listeners end to end on the emulator's SQS: a signed slash command is
//! acked at once, its lazy part travels through a real SQS queue (no token in
//! the message), and the worker runs it with the tenant's token read through
//! the store (audited as the listener). A lazy part that keeps failing lands
//! in the dead-letter queue after the queue's bounded receives.
//!
//! Needs `AWS_ENDPOINT_URL` (infra/test.sh starts moto). Requests are signed
//! with the TEST signing secret below.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use tower::ServiceExt as _;

use tokenkeep_events::{
    CommandAck, CountingMetrics, EventsState, ListenerHandler, Listeners, Metric,
};
use tokenkeep_installations::testing::{emulator_config, local_keys};
use tokenkeep_installations::{
    EmbeddedRepository, Installation, InstallationStore, StoreConfig, SystemClock, TenantKey,
    TokenKind, VerifiedTenant,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, sign_request};
use tokenkeep_slack_api::{Message, RequestVerifier, SigningSecret, SlackOAuth as _};
use tokenkeep_worker::{SqsEvent, SqsQueue, handle_sqs_event};

const SIGNING_SECRET: &str = "tokenkeep-test-signing-secret";

fn listeners() -> Listeners {
    Listeners::new()
        .command("/report", |_cx, _cmd| async move {
            Ok(CommandAck::text("Working on it…"))
        })
        .lazy(|cx, payload| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let channel = payload["channel_id"]
                .as_str()
                .ok_or("no channel")?
                .to_owned();
            cx.client()
                .chat_post_message(&channel, &Message::text("Report ready"))
                .await?;
            // A user token read from the worker is the worker's read.
            let user = payload["user_id"].as_str().ok_or("no user")?;
            cx.user_client(user).await?;
            Ok(())
        })
        .command(
            "/broken",
            |_cx, _cmd| async move { Ok(CommandAck::empty()) },
        )
        .lazy(|_cx, _payload| async move { Err("always fails".into()) })
}

async fn queues(sqs: &aws_sdk_sqs::Client, max_receives: u32) -> (String, String) {
    let id = format!("{}-{}", std::process::id(), rand_id());
    let dlq = sqs
        .create_queue()
        .queue_name(format!("tk-dlq-{id}"))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    let redrive =
        format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
    let queue = sqs
        .create_queue()
        .queue_name(format!("tk-lazy-{id}"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
            redrive,
        )
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            "1",
        )
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    (queue, dlq)
}

fn rand_id() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// What the Lambda service would hand the worker: the received messages as an SQS event.
async fn receive(sqs: &aws_sdk_sqs::Client, queue: &str) -> (SqsEvent, Vec<String>, Vec<String>) {
    let out = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let messages = out.messages.unwrap_or_default();
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| serde_json::json!({"messageId": m.message_id(), "body": m.body()}))
        .collect();
    let bodies = messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect();
    let handles = messages
        .iter()
        .map(|m| m.receipt_handle().unwrap_or_default().to_owned())
        .collect();
    (
        serde_json::from_value(serde_json::json!({ "Records": records })).unwrap(),
        bodies,
        handles,
    )
}

/// A slash command from T1, signed as Slack signs it.
fn signed_command(name: &str) -> Request<Body> {
    let body = serde_urlencoded::to_string([
        ("command", name),
        ("team_id", "T1"),
        ("channel_id", "C9"),
        ("user_id", "U1"),
    ])
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Request::post("/slack/events")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", now.to_string())
        .header(
            "x-slack-signature",
            sign_request(&SigningSecret::new(SIGNING_SECRET), now, body.as_bytes()),
        )
        .body(Body::from(body))
        .unwrap()
}

/// A store with T1 installed through the fake Slack (bot and user U1 tokens).
/// Also answers the bot token's fingerprint, to check which token a call used.
async fn installed_store(slack: &FakeSlack) -> (Arc<InstallationStore>, tempfile::TempDir, String) {
    let (keys, dir) = local_keys();
    let store = Arc::new(InstallationStore::new(
        Arc::new(EmbeddedRepository::in_memory().unwrap()),
        keys,
        StoreConfig::new("A0001"),
    ));
    slack.add_install(
        "c1",
        InstallSpec {
            user_id: "U1".into(),
            user_scopes: "search:read".into(),
            with_user_token: true,
            ..InstallSpec::workspace("T1")
        },
    );
    let grant = slack.client().exchange_code("c1", None).await.unwrap();
    let bot = grant.access_token.as_ref().unwrap().fingerprint();
    let tenant = VerifiedTenant::from_oauth_grant(&grant).unwrap();
    store
        .store_installation(
            &tenant,
            &Installation::from_oauth_response(grant, store.clock().now_secs()).unwrap(),
        )
        .await
        .unwrap();
    (store, dir, bot)
}

#[tokio::test]
async fn lazy_work_runs_on_the_worker_through_sqs_and_failures_dead_letter() {
    // Given an installed tenant, the events router with an SQS lazy queue, and the worker's pieces
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let (store, _dir, bot) = installed_store(&slack).await;
    let sqs = aws_sdk_sqs::Client::new(&emulator_config().await);
    let (queue, dlq) = queues(&sqs, 2).await;
    let handler = ListenerHandler::new(listeners(), slack.client(), Arc::clone(&store))
        .with_lazy_queue(Arc::new(SqsQueue::new(sqs.clone(), &queue)));
    let router = tokenkeep_events::router(EventsState {
        store: Arc::clone(&store),
        verifier: RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
        handler: Arc::new(handler),
        clock: Arc::new(SystemClock),
    });
    // When /report is sent
    let resp = router
        .clone()
        .oneshot(signed_command("/report"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    // Then the ack comes at once, and nothing was posted yet
    assert_eq!(&body[..], "{\"text\":\"Working on it…\"}".as_bytes());
    assert!(slack.posts().is_empty());
    // And the queue holds one job: tenant and listener, no token
    let (event, bodies, handles) = receive(&sqs, &queue).await;
    assert_eq!(bodies.len(), 1);
    assert!(
        bodies[0].contains("command:/report") && bodies[0].contains("T#-#T1"),
        "{}",
        bodies[0]
    );
    assert!(!bodies[0].contains("xox"), "no token in a queue message");
    // When the worker runs the batch, then it succeeds and the message can go
    let out = handle_sqs_event(&listeners(), &store, &slack.client(), event).await;
    assert!(out.batch_item_failures.is_empty(), "{out:?}");
    sqs.delete_message()
        .queue_url(&queue)
        .receipt_handle(&handles[0])
        .send()
        .await
        .unwrap();
    // And the lazy part posted with T1's bot token, read by the worker under the listener's name
    let posts = slack.posts();
    assert_eq!(posts.len(), 1);
    assert_eq!(
        (posts[0].channel.as_str(), posts[0].text.as_str()),
        ("C9", "Report ready")
    );
    assert_eq!(posts[0].token_fingerprint, bot);
    let pk = TenantKey::new(None, Some("T1")).unwrap().pk();
    let audit = store
        .repository()
        .query_audit(Some(&pk), 0, 100)
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.actor == "worker" && a.reason == "command:/report"),
        "{audit:?}"
    );
    // And the listener's user token read is audited as the worker's, not the router's
    let user_reads: Vec<_> = audit
        .iter()
        .filter(|a| a.token_kind == TokenKind::User)
        .collect();
    assert_eq!(user_reads.len(), 1, "{audit:?}");
    assert_eq!(
        (
            user_reads[0].actor.as_str(),
            user_reads[0].user_id.as_deref()
        ),
        ("worker", Some("U1"))
    );

    // Given /broken, whose lazy part always fails
    let resp = router
        .clone()
        .oneshot(signed_command("/broken"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // When the worker fails it on every delivery the queue allows
    let mut failures = 0;
    for _ in 0..2 {
        let (event, bodies, _) = receive(&sqs, &queue).await;
        assert_eq!(bodies.len(), 1, "delivered again after a failure");
        let out = handle_sqs_event(&listeners(), &store, &slack.client(), event).await;
        failures += out.batch_item_failures.len();
        tokio::time::sleep(Duration::from_millis(1_200)).await;
    }
    assert_eq!(failures, 2);
    // Then it is not delivered a third time but sits in the dead-letter queue
    let (_, again, _) = receive(&sqs, &queue).await;
    assert!(again.is_empty(), "bounded receives: {again:?}");
    let (_, dead, _) = receive(&sqs, &dlq).await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].contains("command:/broken"));
}

#[tokio::test]
async fn a_queue_failure_keeps_the_listeners_answer() {
    // Given the events router whose lazy queue is an SQS queue that does not exist
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let (store, _dir, _) = installed_store(&slack).await;
    let sqs = aws_sdk_sqs::Client::new(&emulator_config().await);
    let missing = format!(
        "{}/000000000000/tk-missing-{}",
        std::env::var("AWS_ENDPOINT_URL").unwrap(),
        rand_id()
    );
    let handler = ListenerHandler::new(listeners(), slack.client(), Arc::clone(&store))
        .with_lazy_queue(Arc::new(SqsQueue::new(sqs, &missing)));
    let metrics = Arc::new(CountingMetrics::default());
    let router = tokenkeep_events::router_with_metrics(
        EventsState {
            store: Arc::clone(&store),
            verifier: RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
            handler: Arc::new(handler),
            clock: Arc::new(SystemClock),
        },
        metrics.clone(),
    );

    // When /report is sent and its lazy part cannot be queued
    let resp = router.oneshot(signed_command("/report")).await.unwrap();

    // Then the user still gets the listener's answer, not Slack's timeout error
    assert_eq!(resp.status(), StatusCode::OK);
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert_eq!(&body[..], "{\"text\":\"Working on it…\"}".as_bytes());
    // And the failure is counted as its own metric; nothing ran
    assert_eq!(metrics.count_of(Metric::LazyNotQueued), 1);
    assert_eq!(metrics.count_of(Metric::HandlerFailed), 0);
    assert!(slack.posts().is_empty());
}
