//! Command-line surface. Store selection reads the same environment variables
//! as the functions (DESIGN.md "Configuration names"), so an operator points
//! `tokenkeep` at a store exactly as the Lambda functions are pointed at it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tokenkeep",
    version,
    about = "Operate the tokenkeep installation store"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failed, 2 usage or configuration error, 3 incomplete (rerun later)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreArg {
    Embedded,
    Dynamodb,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Machine-readable JSON on stdout instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Which store to operate on.
    #[arg(
        long,
        global = true,
        env = "TOKENKEEP_STORE",
        default_value = "embedded"
    )]
    pub store: StoreArg,
    /// Embedded store: directory holding store.db and keys/.
    #[arg(
        long,
        global = true,
        env = "TOKENKEEP_DATA_DIR",
        default_value = ".tokenkeep"
    )]
    pub data_dir: PathBuf,
    /// DynamoDB installations table.
    #[arg(long, global = true, env = "TOKENKEEP_TABLE", default_value = tokenkeep_installations::schema::DEFAULT_TABLE)]
    pub table: String,
    /// DynamoDB audit table.
    #[arg(long, global = true, env = "TOKENKEEP_AUDIT_TABLE", default_value = tokenkeep_installations::schema::DEFAULT_AUDIT_TABLE)]
    pub audit_table: String,
    /// KMS key new data keys are generated under (dynamodb store).
    #[arg(long, global = true, env = "TOKENKEEP_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// The Slack app's client id: part of every data key's encryption context.
    #[arg(long, global = true, env = "SLACK_CLIENT_ID", hide_env_values = false)]
    pub app_id: Option<String>,
}

/// A tenant named on the command line: a workspace (`--team`), an org-wide
/// install (`--enterprise`), or a workspace inside an org (both).
#[derive(Debug, Args, Clone)]
pub struct TenantArgs {
    /// Workspace id (T…).
    #[arg(long)]
    pub team: Option<String>,
    /// Enterprise Grid org id (E…).
    #[arg(long)]
    pub enterprise: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Installations: tenants, scopes, status, expiries (never tokens).
    List {
        /// Also list purged tenants (tombstones).
        #[arg(long)]
        purged: bool,
    },
    /// Every record of one tenant, with its key and versions (never tokens).
    Show {
        #[command(flatten)]
        tenant: TenantArgs,
    },
    /// Audited token reads, oldest first.
    Audit {
        #[command(flatten)]
        tenant: TenantArgs,
        /// How far back: 90s, 30m, 12h, 7d.
        #[arg(long, default_value = "7d")]
        since: String,
        /// `ok`, `failed` (every outcome but ok), or one outcome:
        /// not_installed, needs_reinstall, decrypt_failed, refresh_failed, expired.
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Removes every record of a tenant and leaves a tombstone (as app_uninstalled does).
    Purge {
        #[command(flatten)]
        tenant: TenantArgs,
        /// Don't ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Opens every sealed field of every record; fails if any record doesn't open.
    Verify {
        /// Parallel key-provider calls.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// Re-wraps every record's data key under another key (KMS ReEncrypt). Resumable.
    Rekey {
        /// The key to move to (KMS key ARN, or local:<name> for the embedded store).
        #[arg(long)]
        to_key: String,
        /// Parallel records.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Stop after re-wrapping this many records (testing resumption).
        #[arg(long, hide = true)]
        limit: Option<usize>,
    },
    /// Writes tenant states and sealed records, exactly as stored, to a JSON-lines file (mode 0600).
    Export {
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Restores an export; never overwrites newer data, never revives a purged tenant.
    Import {
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Moves installations in from Bolt's stores (slack_sdk, @slack/oauth); a dry run unless --apply.
    Migrate(crate::commands::migrate::MigrateArgs),
    /// Runs the OAuth and events routes and the rotation sweep in one process,
    /// exactly as the Lambdas would (configured by the same environment).
    Dev {
        /// Address to serve on.
        #[arg(long, default_value = "127.0.0.1:3000")]
        listen: std::net::SocketAddr,
        /// Create the DynamoDB tables if missing (dynamodb store only).
        #[arg(long)]
        create_tables: bool,
        /// Seconds between rotation sweeps.
        #[arg(long, default_value_t = 60)]
        sweep_every: u64,
    },
}
