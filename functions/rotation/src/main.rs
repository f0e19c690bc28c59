//! The rotation Lambda: build the store once per cold start, then run one
//! sweep per EventBridge tick, stopping before the invocation's deadline.

use std::time::{Instant, SystemTime};

use lambda_runtime::{service_fn, Error, LambdaEvent};
use tokenkeep_rotation::{sweep, SweepConfig, SweepReport};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenkeep_runtime::init_tracing();
    let config = tokenkeep_runtime::Config::from_env().await?;
    let app = tokenkeep_runtime::App::build(config).await?;
    let app = &app;
    let cfg = &SweepConfig::default();
    lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| async move {
        // The runtime's deadline is wall-clock; the sweep counts on a monotonic clock.
        let left = event.context.deadline().duration_since(SystemTime::now()).unwrap_or_default();
        let deadline = Instant::now() + left;
        let now_secs = app.store.clock().now_secs();
        Ok::<SweepReport, Error>(sweep(&app.store, now_secs, Some(deadline), cfg).await)
    }))
    .await
}
