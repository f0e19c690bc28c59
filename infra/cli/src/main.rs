//! `tokenkeep`: the operator binary. `main` only wires: parse arguments, build
//! the store, run one command, turn its result into an exit code.

mod cli;
mod commands;
mod exit;
mod output;
mod store;

use std::process::ExitCode;

use clap::Parser;

// mimalloc: 17 % less CPU per event than glibc malloc on the events path
// (rows are allocated on the HTTP workers and freed on the audit thread).
// Built without its transparent-huge-page advice (`no_thp`), which otherwise
// backs its arenas with 2 MiB pages: +8 MB RSS. BENCHMARKS.md, fourth pass.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use crate::cli::{Cli, Command};
use crate::commands::{dev, inspect, migrate, purge, rekey, transfer, verify};
use crate::exit::Failure;
use crate::store::StoreOnly;

fn init_operator_logging() {
    // Human operators read stdout; warnings from the store go to stderr.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Dev {
        listen,
        create_tables,
        sweep_every,
    } = cli.command
    {
        return dev::dev(listen, create_tables, sweep_every).await;
    }
    init_operator_logging();
    if let Command::Migrate(args) = &cli.command {
        return migrate::migrate(&cli.global, args).await;
    }
    let json = cli.global.json;
    let creates = matches!(cli.command, Command::Import { .. });
    let op = StoreOnly::from_args(&cli.global)?.build(creates).await?;
    let store = &op.store;
    if matches!(
        cli.command,
        Command::Purge { .. } | Command::Rekey { .. } | Command::Import { .. }
    ) && !json
    {
        eprintln!("store: {}", op.describe());
    }
    match &cli.command {
        Command::List { purged } => inspect::list(store, json, *purged).await,
        Command::Show { tenant } => inspect::show(store, json, tenant).await,
        Command::Audit {
            tenant,
            since,
            outcome,
            limit,
        } => inspect::audit(store, json, tenant, since, outcome.as_deref(), *limit).await,
        Command::Purge { tenant, yes } => purge::purge(store, json, tenant, *yes).await,
        Command::Verify { concurrency } => verify::verify(store, json, *concurrency).await,
        Command::Rekey {
            to_key,
            concurrency,
            limit,
        } => rekey::rekey(&op, json, to_key, *concurrency, *limit).await,
        Command::Export { out, force } => transfer::export(store, json, out, *force).await,
        Command::Import { input } => transfer::import(store, json, input).await,
        Command::Dev { .. } | Command::Migrate(_) => unreachable!("handled above"),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tokenkeep: can't start the runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if let Some(e) = &failure.error {
                // `{:#}` prints the cause chain; no error here carries a secret.
                eprintln!("tokenkeep: {e:#}");
            }
            failure.exit_code()
        }
    }
}
