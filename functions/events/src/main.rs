//! The events Lambda: load config and build clients once per cold start, then
//! hand the router to the Lambda runtime. Everything else lives in the library.

use std::sync::Arc;

use tokenkeep_events::{EventsState, MentionReplier, router};
use tokenkeep_installations::SystemClock;
use tokenkeep_slack_api::RequestVerifier;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let config =
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::ClientAndSigning)
            .await?;
    let verifier = RequestVerifier::new(config.signing_secret()?.clone());
    let app = tokenkeep_runtime::App::build(config).await?;
    let state = EventsState {
        store: Arc::clone(&app.store),
        verifier,
        handler: Arc::new(MentionReplier {
            slack: app.slack.clone(),
        }),
        clock: Arc::new(SystemClock),
    };
    lambda_http::run(router(state)).await
}
