//! `tokenkeep dev`: every function in one process, on the embedded store by
//! default, serving the example app (`apps/example`). The routers and the sweep are the Lambdas' own code; only the
//! transport differs (axum on a local port instead of API Gateway).

use std::net::SocketAddr;
use std::time::Duration;

use tokenkeep_installations::{Clock, SystemClock};
use tokenkeep_rotation::SweepConfig;
use tokenkeep_runtime::{App, Config, SecretsUsed, StoreKind};

use crate::exit::Failure;

pub async fn dev(listen: SocketAddr, create_tables: bool, sweep_every: u64) -> Result<(), Failure> {
    tokenkeep_runtime::init_tracing();
    let config = Config::from_env(SecretsUsed::ClientAndSigning)
        .await
        .map_err(|e| Failure::config(format!("{e} (see README: Run it)")))?;
    let store_kind = config.store;
    let app = App::build(config).await.map_err(Failure::error)?;
    if create_tables {
        let Some(aws) = &app.aws else {
            return Err(Failure::config(
                "--create-tables needs TOKENKEEP_STORE=dynamodb",
            ));
        };
        let client = aws_sdk_dynamodb::Client::new(aws);
        tokenkeep_installations::create_tables(&client, &app.config.table, &app.config.audit_table)
            .await?;
    }

    // The example app's listeners and install hook, through the same
    // routers its Lambda mains serve.
    // Lazy listener work goes to the embedded durable queue in the data dir
    // (a restart loses nothing), worked by a task of this process.
    let lazy = tokenkeep_app::embedded_lazy(&app, tokenkeep_example_app::listeners())
        .map_err(|e| Failure::error(anyhow::Error::new(e)))?;
    let router = tokenkeep_app::routers(
        &app,
        tokenkeep_example_app::listeners(),
        Some(tokenkeep_example_app::hooks()),
        Some(lazy),
    )
    .map_err(|e| Failure::config(e.to_string()))?;

    // The token service for Bolt apps (clients/python, clients/js). No API
    // Gateway here, so keys generated into the data dir (0600) stand in for IAM;
    // every call must carry one.
    let token_auth =
        tokenkeep_token_service::CallerAuth::dev_keys(&app.config.data_dir).map_err(|e| {
            Failure::config(format!(
                "can't create the token service keys in {}: {e}",
                app.config.data_dir.display()
            ))
        })?;
    let tokens = tokenkeep_token_service::router(tokenkeep_token_service::TokenServiceState {
        backend: tokenkeep_token_service::Backend::from_app(&app)
            .map_err(|e| Failure::config(e.to_string()))?,
        auth: token_auth,
    });

    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Failure::config(format!("can't listen on {listen}: {e}")))?;
    let addr = listener.local_addr()?;
    let (store_name, keys_name) = match store_kind {
        StoreKind::Embedded => (
            format!(
                "embedded SQLite at {}",
                app.config.data_dir.join("store.db").display()
            ),
            format!(
                "LOCAL KEY FILE at {}",
                app.config.data_dir.join("keys").display()
            ),
        ),
        StoreKind::DynamoDb => (
            format!(
                "DynamoDB tables {} / {}",
                app.config.table, app.config.audit_table
            ),
            format!(
                "KMS key {}",
                app.config.kms_key_id.as_deref().unwrap_or("?")
            ),
        ),
    };
    println!("tokenkeep dev listening on http://{addr}");
    println!("  install URL: http://{addr}/slack/install");
    println!("  events URL:  http://{addr}/slack/events   (events, interactivity, slash commands)");
    println!("  store:       {store_name}");
    println!("  keys:        {keys_name}");
    println!(
        "  token service: http://{addr}/tokens/   (key: {})",
        app.config
            .data_dir
            .join(tokenkeep_token_service::caller::DEV_KEY_FILE)
            .display()
    );
    if store_kind == StoreKind::Embedded {
        eprintln!(
            "WARNING: the local key file is for development only. Anyone who can read it can decrypt every token in this store."
        );
    }

    let router = router.merge(tokens);
    let mut server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });

    // The sweep runs on a timer here, as EventBridge runs the rotation Lambda.
    // (The sweep borrows the store, so it runs on this task, not a spawned one.)
    let mut tick = tokio::time::interval(Duration::from_secs(sweep_every.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let served = loop {
        tokio::select! {
            // Graceful shutdown: in-flight requests finish before serve returns.
            done = &mut server => break done,
            _ = tick.tick() => {
                let now = SystemClock.now_secs();
                let report = tokenkeep_rotation::sweep(&app.store, now, None, &SweepConfig::default()).await;
                tracing::debug!(?report, "dev rotation sweep");
            }
        }
    };
    served.map_err(|e| Failure::error(e.into()))??;
    println!("tokenkeep dev stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
