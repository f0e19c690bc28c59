//! The worker Lambda of the example app: lazy listener work from SQS.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tokenkeep_app::run_worker(tokenkeep_example_app::listeners()).await
}
