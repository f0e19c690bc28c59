//! The OAuth Lambda: load config and build the store once per cold start, then
//! hand the router to the Lambda runtime. Everything else lives in the library.

use tokenkeep_oauth::{OAuthState, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let app = tokenkeep_runtime::App::build(
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::Client).await?,
    )
    .await?;
    lambda_http::run(router(OAuthState::from_app(&app))).await
}
