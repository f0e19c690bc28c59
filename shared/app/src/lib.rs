//! The app-facing surface of tokenkeep, in one dependency.
//!
//! An app in its own repository depends on this crate (git or path), writes
//! its [`Listeners`] and [`InstallHooks`] once in its library, and has three
//! thin mains that call [`run_events`], [`run_oauth`] and [`run_worker`] (the
//! Lambda functions; the worker runs lazy listener work from SQS);
//! `tokenkeep dev` and tests mount the same [`routers`] on a local port.
//! Everything is built from one [`App`] (store, keys, Slack client, verifier):
//! no main assembles state by hand.
//!
//! The README's "Write your app" listeners, compiled here so they stay true:
//!
//! ```
//! // src/lib.rs: every listener, in match order (the first match takes the request)
//! use std::sync::Arc;
//! use tokenkeep_app::{async_trait, CommandAck, HookError, InstallHooks, Installed, Listeners, Message, Response, ViewAck};
//!
//! pub fn listeners() -> Listeners {
//!     Listeners::new()
//!         .event("app_mention", |cx, ev| async move {
//!             cx.client().chat_post_message(&ev.channel, &Message::text("hi").in_thread(ev.reply_thread())).await?;
//!             Ok(())
//!         })
//!         .command("/echo", |_cx, cmd| async move { Ok(CommandAck::text(cmd.text)) })
//!         .action("approve", |cx, a| async move {
//!             let url = a.response_url.as_deref().ok_or("no response_url")?;
//!             cx.respond(url, &Response::text("Approved.").replacing_original()).await?;
//!             Ok(())
//!         })
//!         .view_submission("signup", |_cx, s| async move {
//!             Ok(match s.view.value("email", "value") {
//!                 Some(e) if e.contains('@') => ViewAck::close(),
//!                 _ => ViewAck::errors([("email", "Please enter an email address.")]),
//!             })
//!         })
//! }
//!
//! #[derive(Debug)]
//! struct Welcome;
//! #[async_trait]
//! impl InstallHooks for Welcome {
//!     async fn on_installed(&self, i: Installed) -> Result<(), HookError> {
//!         if let (Some(bot), Some(user)) = (&i.client, &i.installer_user_id) {
//!             bot.chat_post_message(user, &Message::text("Thanks for installing!")).await?;
//!         }
//!         Ok(())
//!     }
//! }
//! pub fn hooks() -> Arc<dyn InstallHooks> { Arc::new(Welcome) }
//! # fn main() { let _ = (listeners(), hooks()); }
//! ```

use std::sync::Arc;

pub use async_trait::async_trait;
pub use regex::Regex;
pub use serde_json::{Value, json};
pub use tokenkeep_events::inputs;
pub use tokenkeep_events::{
    Ack, CommandAck, Context, IdMatch, LazyQueue, ListenerError, Listeners, OptionsAck, ViewAck,
};
pub use tokenkeep_installations::{TenantKey, VerifiedTenant};
pub use tokenkeep_oauth::{HookError, InstallHooks, InstallPages, Installed, Page, PageError};
pub use tokenkeep_runtime::{App, Config, ConfigError, SecretsUsed};
pub use tokenkeep_slack_api::{BoundClient, Message, MessageRef, Response, SlackError, ViewRef};

use tokenkeep_events::EventsState;
use tokenkeep_oauth::OAuthState;

/// The events router (`POST /slack/events`) over the app's listeners.
pub fn events_router(
    app: &App,
    listeners: Listeners,
    lazy: Option<Arc<dyn LazyQueue>>,
) -> Result<axum::Router, ConfigError> {
    Ok(tokenkeep_events::router(EventsState::with_listeners(
        app, listeners, lazy,
    )?))
}

/// The OAuth routes (`GET /slack/install`, `GET /slack/oauth_redirect`) with the app's hooks.
pub fn oauth_router(app: &App, hooks: Option<Arc<dyn InstallHooks>>) -> axum::Router {
    tokenkeep_oauth::router_with_hooks(OAuthState::from_app(app), hooks)
}

/// Both, as `tokenkeep dev` and tests serve them.
pub fn routers(
    app: &App,
    listeners: Listeners,
    hooks: Option<Arc<dyn InstallHooks>>,
    lazy: Option<Arc<dyn LazyQueue>>,
) -> Result<axum::Router, ConfigError> {
    Ok(oauth_router(app, hooks).merge(events_router(app, listeners, lazy)?))
}

/// Each function loads only the secrets it uses: events verifies requests
/// (signing secret) and refreshes (client secret); OAuth and the worker never
/// hold the signing secret.
async fn app_from_env(secrets: SecretsUsed) -> Result<App, lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let config = Config::from_env(secrets).await?;
    Ok(App::build(config).await?)
}

/// The SQS queue lazy work goes to, when `TOKENKEEP_LAZY_QUEUE_URL` is set.
async fn lazy_queue(app: &App) -> Option<Arc<dyn LazyQueue>> {
    let url = app.config.lazy_queue_url.clone()?;
    let aws = match &app.aws {
        Some(aws) => aws.clone(),
        None => tokenkeep_runtime::aws_config().await,
    };
    Some(Arc::new(tokenkeep_worker::SqsQueue::new(
        aws_sdk_sqs::Client::new(&aws),
        url,
    )))
}

/// The events Lambda's whole `main`: wiring once per cold start, then the
/// router; lazy work goes to the SQS queue named by `TOKENKEEP_LAZY_QUEUE_URL`.
pub async fn run_events(listeners: Listeners) -> Result<(), lambda_http::Error> {
    let app = app_from_env(SecretsUsed::ClientAndSigning).await?;
    let lazy = lazy_queue(&app).await;
    lambda_http::run(events_router(&app, listeners, lazy)?).await
}

/// The worker Lambda's whole `main`: runs the lazy part of the app's
/// listeners for each SQS message, reporting failed ones for redelivery.
pub async fn run_worker(listeners: Listeners) -> Result<(), lambda_runtime::Error> {
    let app = app_from_env(SecretsUsed::Client).await?;
    let (app, listeners) = (&app, &listeners);
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<tokenkeep_worker::SqsEvent>| async move {
            Ok::<_, lambda_runtime::Error>(
                tokenkeep_worker::handle_sqs_event(
                    listeners,
                    &app.store,
                    &app.slack,
                    event.payload,
                )
                .await,
            )
        },
    ))
    .await
}

/// `tokenkeep dev`'s lazy path: the embedded durable queue in the data dir
/// (`lazy.db`), and the task that works it.
pub fn embedded_lazy(
    app: &App,
    listeners: Listeners,
) -> Result<Arc<dyn LazyQueue>, tokenkeep_worker::QueueError> {
    let queue = tokenkeep_worker::EmbeddedQueue::open(app.config.data_dir.join("lazy.db"))?;
    tokio::spawn(
        queue
            .clone()
            .run_forever(listeners, Arc::clone(&app.store), app.slack.clone()),
    );
    Ok(Arc::new(queue))
}

/// The OAuth Lambda's whole `main`.
pub async fn run_oauth(hooks: Option<Arc<dyn InstallHooks>>) -> Result<(), lambda_http::Error> {
    let app = app_from_env(SecretsUsed::Client).await?;
    lambda_http::run(oauth_router(&app, hooks)).await
}
