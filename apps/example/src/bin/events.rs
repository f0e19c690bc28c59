//! The events Lambda of the example app.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    tokenkeep_app::run_events(tokenkeep_example_app::listeners()).await
}
