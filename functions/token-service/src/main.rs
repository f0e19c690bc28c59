//! The token-service Lambda: load config and build clients once per cold
//! start, then hand the router to the Lambda runtime. API Gateway's IAM
//! authorizer authenticates callers; `TOKENKEEP_NAMED_TENANT_PRINCIPALS`
//! (comma-separated ARNs, empty by default) lists who may name a tenant.

use tokenkeep_token_service::{Backend, CallerAuth, TokenServiceState, router};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_runtime::init_tracing();
    let config =
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::ClientAndSigning)
            .await?;
    let app = tokenkeep_runtime::App::build(config).await?;
    let named = std::env::var("TOKENKEEP_NAMED_TENANT_PRINCIPALS").unwrap_or_default();
    let state = TokenServiceState {
        backend: Backend::from_app(&app)?,
        auth: CallerAuth::iam_from_list(&named),
    };
    lambda_http::run(router(state)).await
}
