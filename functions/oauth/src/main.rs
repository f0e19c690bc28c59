//! The OAuth Lambda: load config and build the store once per cold start, then
//! hand the router to the Lambda runtime. Everything else lives in the library.

use std::sync::Arc;

use tokenkeep_oauth::{OAuthState, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let app = tokenkeep_runtime::App::build(
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::Client).await?,
    )
    .await?;
    let config = &app.config;
    let state = OAuthState {
        store: Arc::clone(&app.store),
        slack: Arc::new(app.slack.clone()),
        client_id: config.slack_client_id.clone(),
        scopes: config.slack_scopes.clone(),
        user_scopes: config.slack_user_scopes.clone(),
        authorize_url: config.slack_authorize_url.clone(),
        redirect_uri: config.slack_redirect_uri.clone(),
    };
    lambda_http::run(router(state)).await
}
