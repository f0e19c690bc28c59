//! The events Lambda with tokenkeep's minimal handler (answers mentions).
//! Apps ship their own three mains instead (see `apps/example`); this one
//! exists so tokenkeep alone deploys and answers `url_verification`.

use std::sync::Arc;

use tokenkeep_events::{EventsState, MentionReplier, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let app = tokenkeep_runtime::App::build(
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::ClientAndSigning)
            .await?,
    )
    .await?;
    let handler = Arc::new(MentionReplier {
        slack: app.slack.clone(),
    });
    lambda_http::run(router(EventsState::new(&app, handler)?)).await
}
