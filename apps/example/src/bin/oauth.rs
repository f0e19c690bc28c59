//! The OAuth Lambda of the example app.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_app::run_oauth(Some(tokenkeep_example_app::hooks())).await
}
