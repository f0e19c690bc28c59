//! The rotation Lambda: build the store once per cold start, then run one
//! sweep per EventBridge tick, stopping before the invocation's deadline.

use std::time::{Instant, SystemTime};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use tokenkeep_rotation::{SweepConfig, SweepReport, sweep};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tokenkeep_runtime::init_tracing();
    let config =
        tokenkeep_runtime::Config::from_env(tokenkeep_runtime::SecretsUsed::Client).await?;
    let app = tokenkeep_runtime::App::build(config).await?;
    let app = &app;
    let cfg = &SweepConfig::default();
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<serde_json::Value>| async move {
            // The runtime's deadline is wall-clock; the sweep counts on a monotonic clock.
            let mut left = event
                .context
                .deadline()
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            if left.is_zero() {
                // Lambda never starts an invocation past its deadline; local
                // emulators (cargo lambda watch) may send none. Sweep for a minute.
                tracing::warn!(
                    "invocation deadline already passed; assuming 60 s (local emulator?)"
                );
                left = std::time::Duration::from_secs(60);
            }
            let deadline = Instant::now() + left;
            tracing::info!(
                time_left_ms = left.as_millis() as u64,
                "rotation invocation"
            );
            // A short invocation timeout (e.g. a local `cargo lambda watch`) still
            // gets a sweep: keep at most a quarter of the time as the safety margin.
            let cfg = SweepConfig {
                stop_before: cfg.stop_before.min(left / 4),
                ..cfg.clone()
            };
            let now_secs = app.store.clock().now_secs();
            Ok::<SweepReport, Error>(sweep(&app.store, now_secs, Some(deadline), &cfg).await)
        },
    ))
    .await
}
