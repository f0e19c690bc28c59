//! `migrate`: moves installations in from Bolt's installation stores.
//!
//! Reads a whole source first (a source that can't be read changes nothing),
//! picks per tenant and user the record the source library itself would
//! answer with, and hands each to [`InstallationStore::import_record`], which
//! seals it, refuses purged tenants and newer records, and audits the write.
//! Without `--apply` the same decisions are computed and reported
//! (`plan_import`), nothing written. A rerun writes nothing that is already
//! there, so an interrupted run is resumed by running it again.
//!
//! Cut-over: a rotating refresh token is single-use, so once two systems hold
//! it, whichever refreshes second breaks the other. The command warns about
//! tokens the source is likely to refresh during the move; docs/MIGRATE.md
//! gives the sequence (freeze the source's refresher, migrate, switch).
//!
//! Opt-in steps after the import: `--exchange-long-lived` moves non-expiring
//! tokens onto rotation (`InstallationStore::exchange_for_rotating`), and
//! `--wipe-source` overwrites the source's tokens for every tenant that is
//! fully in tokenkeep and opens there.

mod bolt_js_file;
mod objects;
mod sdk;
mod slack_sdk_json;
mod slack_sdk_sql;
mod source;

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, ValueEnum};
use comfy_table::{Table, presets};
use futures::stream::{self, StreamExt};
use serde_json::json;
use tokenkeep_installations::{
    ImportOutcome, InstallationStore, ReadContext, StoreError, TenantKey,
};

use self::source::{Candidate, Scan, record_name};
use crate::cli::{GlobalArgs, StoreArg};
use crate::exit::{Failure, INCOMPLETE};
use crate::output::{now_secs, progress, utc};
use crate::store::StoreOnly;

/// The stores `--from` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// slack_sdk `SQLite3InstallationStore`: LOCATION is the database file.
    SlackSdkSqlite3,
    /// slack_sdk `SQLAlchemyInstallationStore`: LOCATION is the SQLAlchemy URL (sqlite:///path.db).
    SlackSdkSqlalchemy,
    /// slack_sdk `AmazonS3InstallationStore`: LOCATION is s3://BUCKET.
    SlackSdkS3,
    /// slack_sdk `FileInstallationStore`: LOCATION is its base directory.
    SlackSdkFile,
    /// @slack/oauth `FileInstallationStore`: LOCATION is its base directory.
    BoltJsFile,
}

impl SourceKind {
    fn name(self) -> &'static str {
        match self {
            SourceKind::SlackSdkSqlite3 => "slack-sdk-sqlite3",
            SourceKind::SlackSdkSqlalchemy => "slack-sdk-sqlalchemy",
            SourceKind::SlackSdkS3 => "slack-sdk-s3",
            SourceKind::SlackSdkFile => "slack-sdk-file",
            SourceKind::BoltJsFile => "bolt-js-file",
        }
    }
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The kind of store to read.
    #[arg(long = "from", value_enum)]
    pub from: SourceKind,
    /// Where it is: a database file, an SQLAlchemy URL, a directory or s3://BUCKET.
    pub location: String,
    /// Write the records (without it: a dry run that reports what would be written).
    #[arg(long)]
    pub apply: bool,
    /// After a verified import, overwrite the source's tokens (every row / object
    /// of each tenant that is fully in tokenkeep, history included).
    #[arg(long, requires = "apply")]
    pub wipe_source: bool,
    /// After the import, trade every long-lived token for a rotating pair
    /// (oauth.v2.exchange; the app must have token rotation on). Needs
    /// SLACK_CLIENT_SECRET (and SLACK_API_URL to point at another Slack).
    #[arg(long, requires = "apply")]
    pub exchange_long_lived: bool,
    /// SQL stores: the installations table.
    #[arg(long, default_value = "slack_installations")]
    pub installations_table: String,
    /// SQL stores: the bots table.
    #[arg(long, default_value = "slack_bots")]
    pub bots_table: String,
    /// Warn about rotating tokens that expire within this many minutes (the
    /// source's refresher is likely to rotate them during the move).
    #[arg(long, env = "TOKENKEEP_REFRESH_WINDOW_MINUTES", default_value_t = 120)]
    pub refresh_window_minutes: i64,
    /// Parallel store writes.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Stop after this many records (testing resumption).
    #[arg(long, hide = true)]
    pub limit: Option<usize>,
}

/// A source, opened.
#[derive(Debug)]
enum Source {
    Sql(slack_sdk_sql::SqlStore),
    SdkObjects(slack_sdk_json::SdkObjectStore),
    BoltJs(bolt_js_file::BoltJsFileStore),
}

impl Source {
    async fn open(args: &MigrateArgs, client_id: &str) -> Result<Self, Failure> {
        use slack_sdk_sql::{Flavor, SqlStore};
        let (loc, inst, bots) = (
            args.location.as_str(),
            args.installations_table.as_str(),
            args.bots_table.as_str(),
        );
        Ok(match args.from {
            SourceKind::SlackSdkSqlite3 => {
                Source::Sql(SqlStore::open(Flavor::Sqlite3, loc, inst, bots, client_id)?)
            }
            SourceKind::SlackSdkSqlalchemy => Source::Sql(SqlStore::open(
                Flavor::SqlAlchemy,
                loc,
                inst,
                bots,
                client_id,
            )?),
            SourceKind::SlackSdkFile => {
                Source::SdkObjects(slack_sdk_json::SdkObjectStore::file(loc, client_id)?)
            }
            SourceKind::SlackSdkS3 => {
                let aws = tokenkeep_runtime::aws_config().await;
                Source::SdkObjects(slack_sdk_json::SdkObjectStore::s3(loc, client_id, &aws)?)
            }
            SourceKind::BoltJsFile => {
                Source::BoltJs(bolt_js_file::BoltJsFileStore::open(loc, client_id)?)
            }
        })
    }

    fn describe(&self) -> String {
        match self {
            Source::Sql(s) => s.describe(),
            Source::SdkObjects(s) => s.describe(),
            Source::BoltJs(s) => s.describe(),
        }
    }

    async fn scan(&self) -> Result<Scan, Failure> {
        match self {
            Source::Sql(s) => {
                let s = s.clone();
                tokio::task::spawn_blocking(move || s.scan())
                    .await
                    .map_err(|e| Failure::msg(format!("reading: {e}")))?
            }
            Source::SdkObjects(s) => s.scan().await,
            Source::BoltJs(s) => s.scan().await,
        }
    }

    /// Overwrites the tokens of these tenants; returns what changed and any warning.
    async fn wipe(
        &self,
        tenants: &BTreeSet<TenantKey>,
    ) -> Result<(usize, Option<String>), Failure> {
        match self {
            Source::Sql(s) => {
                let (s, t) = (s.clone(), tenants.clone());
                let n = tokio::task::spawn_blocking(move || s.wipe(&t))
                    .await
                    .map_err(|e| Failure::msg(format!("wiping: {e}")))??;
                Ok((n, None))
            }
            Source::SdkObjects(s) => s.wipe(tenants).await,
            Source::BoltJs(s) => Ok((s.wipe(tenants).await?, None)),
        }
    }
}

/// What happened to one candidate.
type Result1 = Result<ImportOutcome, String>;

fn action(outcome: &Result1, apply: bool) -> String {
    match (outcome, apply) {
        (Ok(ImportOutcome::Created), false) => "would create".into(),
        (Ok(ImportOutcome::Replaced), false) => "would replace older".into(),
        (Ok(ImportOutcome::Created), true) => "created".into(),
        (Ok(ImportOutcome::Replaced), true) => "replaced older".into(),
        (Ok(ImportOutcome::Unchanged), _) => "unchanged (already imported)".into(),
        (Ok(ImportOutcome::KeptNewer), _) => "kept (tokenkeep's is newer)".into(),
        (Ok(ImportOutcome::Refused), _) => "refused (tenant purged)".into(),
        (Ok(ImportOutcome::Revoked), _) => {
            "revoked (revoked in tokenkeep after this copy was installed)".into()
        }
        (Err(e), _) => format!("failed: {e}"),
    }
}

fn expiry(expires_at: Option<i64>, now: i64) -> String {
    let Some(t) = expires_at else {
        return "-".into();
    };
    let when = utc(t);
    let left = t - now;
    match left {
        ..=0 => format!("{when} (expired)"),
        // Minutes matter inside the refresh window; days beyond two.
        1..172_800 => format!(
            "{when} (in {:#})",
            jiff::SignedDuration::from_secs(left - left % 60)
                .max(jiff::SignedDuration::from_secs(60))
        ),
        _ => format!("{when} (in {}d)", left / 86_400),
    }
}

/// Rotating tokens the source may refresh while the move is under way.
fn cutover_warnings(candidates: &[Candidate], now: i64, window_secs: i64) -> Vec<String> {
    let mut out = Vec::new();
    for c in candidates
        .iter()
        .filter(|c| c.record.refresh_token.is_some())
    {
        let name = record_name(&c.record.key.tenant, &c.record.key.kind);
        match c.record.meta.token_expires_at {
            Some(t) if t <= now => out.push(format!(
                "{name}: its access token has expired, so the first read refreshes it with the imported refresh token; \
                 if the source's refresher is still running it may spend that token first"
            )),
            Some(t) if t - window_secs <= now => out.push(format!(
                "{name}: its access token expires within the refresh window ({}), so the source's refresher is likely \
                 to rotate it mid-migration; freeze the source's refresher before switching traffic",
                expiry(Some(t), now)
            )),
            _ => {}
        }
    }
    out
}

pub async fn migrate(global: &GlobalArgs, args: &MigrateArgs) -> Result<(), Failure> {
    let json = global.json;
    let store_only = StoreOnly::from_args(global)?;
    let client_id = global.app_id.clone().unwrap_or_default();
    let source = Source::open(args, &client_id).await?;
    let mut scan = source.scan().await?;
    scan.candidates
        .sort_by(|a, b| a.record.key.cmp(&b.record.key));

    // A dry run against an embedded store that doesn't exist yet creates
    // nothing: every record would simply be created.
    let fresh = !args.apply
        && global.store == StoreArg::Embedded
        && !global.data_dir.join("store.db").exists();
    let op = if fresh {
        None
    } else {
        Some(store_only.build(args.apply).await?)
    };
    let store = op.as_ref().map(|o| &o.store);

    let now = now_secs();
    let warnings = cutover_warnings(&scan.candidates, now, args.refresh_window_minutes * 60);
    let run_id = format!("migrate-{:016x}", rand::random::<u64>());
    let ctx = ReadContext::new(
        "tokenkeep migrate",
        run_id.clone(),
        format!("migrate from {}", args.from.name()),
    );

    let take = args.limit.unwrap_or(usize::MAX).min(scan.candidates.len());
    let bar = progress(take as u64, if args.apply { "migrate" } else { "plan" });
    let results: Vec<Result1> = stream::iter(scan.candidates.iter().take(take))
        .map(|c| {
            let (bar, ctx) = (&bar, &ctx);
            async move {
                let out: Result<ImportOutcome, StoreError> = match store {
                    None => Ok(ImportOutcome::Created),
                    Some(s) if args.apply => s.import_record(&c.record, ctx).await,
                    Some(s) => s.plan_import(&c.record).await,
                };
                bar.inc(1);
                out.map_err(|e| {
                    tracing::error!(record = %record_name(&c.record.key.tenant, &c.record.key.kind), error = %e, "import failed");
                    e.to_string()
                })
            }
        })
        .buffered(args.concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();

    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &results {
        *counts
            .entry(r.as_ref().map_or("failed", |o| o.as_str()))
            .or_default() += 1;
    }
    let failed = counts.get("failed").copied().unwrap_or(0);
    let not_reached = scan.candidates.len() - results.len();

    let exchange = match (args.exchange_long_lived, store) {
        (true, Some(store)) => Some(exchange_long_lived(store, &scan, &results, &ctx).await?),
        _ => None,
    };

    let wipe = match (args.wipe_source, store) {
        (true, Some(store)) if failed == 0 && not_reached == 0 => {
            Some(wipe_verified(store, &source, &scan, &results).await?)
        }
        (true, _) => Some(WipeReport {
            refused: Some("the import is incomplete; nothing wiped".into()),
            ..Default::default()
        }),
        _ => None,
    };

    if json {
        print_json(
            args,
            &source,
            &scan,
            &results,
            &counts,
            &warnings,
            exchange.as_ref(),
            wipe.as_ref(),
            &run_id,
        );
    } else {
        let store = op.as_ref().map(|o| o.describe());
        print_text(
            args,
            &source,
            store,
            &scan,
            &results,
            &counts,
            &warnings,
            exchange.as_ref(),
            wipe.as_ref(),
            now,
        );
    }
    let exchange_failed = exchange.as_ref().is_some_and(|e| !e.failed.is_empty());
    if failed > 0 || not_reached > 0 || exchange_failed {
        return Err(Failure::silent(INCOMPLETE));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct ExchangeReport {
    exchanged: Vec<String>,
    failed: Vec<String>,
}

/// The Slack client for `--exchange-long-lived`, from the functions' settings.
fn slack_client(client_id: &str) -> Result<tokenkeep_slack_api::SlackClient, Failure> {
    use tokenkeep_slack_api::{ClientSecret, SlackClient, SlackClientConfig};
    let secret = std::env::var("SLACK_CLIENT_SECRET").ok().filter(|s| !s.is_empty()).ok_or_else(|| {
        Failure::config("--exchange-long-lived needs SLACK_CLIENT_SECRET (oauth.v2.exchange authenticates the app)")
    })?;
    let mut config = SlackClientConfig::new(client_id.to_owned(), ClientSecret::new(secret));
    if let Ok(url) = std::env::var("SLACK_API_URL") {
        config.api_url = url;
    }
    SlackClient::new(config).map_err(|e| Failure::msg(format!("can't build the Slack client: {e}")))
}

/// Trades the long-lived tokens of the imported records for rotating pairs.
async fn exchange_long_lived(
    store: &InstallationStore,
    scan: &Scan,
    results: &[Result1],
    ctx: &ReadContext,
) -> Result<ExchangeReport, Failure> {
    let slack = slack_client(&store.config().app_id)?;
    let mut report = ExchangeReport::default();
    for (c, r) in scan.candidates.iter().zip(results) {
        if !matches!(r, Ok(o) if !o.refused()) {
            continue;
        }
        let name = record_name(&c.record.key.tenant, &c.record.key.kind);
        match store
            .exchange_for_rotating(&c.record.key, &slack, ctx)
            .await
        {
            Ok(true) => report.exchanged.push(name),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(record = %name, error = %e, "token exchange failed");
                report.failed.push(format!("{name}: {e}"));
            }
        }
    }
    Ok(report)
}

#[derive(Debug, Default)]
struct WipeReport {
    tenants: usize,
    changed: usize,
    kept: Vec<String>,
    warning: Option<String>,
    refused: Option<String>,
}

/// Wipes the tenants whose every source record is in tokenkeep and opens there.
async fn wipe_verified(
    store: &InstallationStore,
    source: &Source,
    scan: &Scan,
    results: &[Result1],
) -> Result<WipeReport, Failure> {
    let mut report = WipeReport::default();
    let mut tenants: BTreeMap<TenantKey, bool> = BTreeMap::new();
    for (c, r) in scan.candidates.iter().zip(results) {
        let ok = matches!(r, Ok(o) if !o.refused());
        *tenants.entry(c.record.key.tenant.clone()).or_insert(true) &= ok;
    }
    for skip in &scan.skipped {
        if let Some(t) = &skip.tenant {
            tenants.insert(t.clone(), false);
        }
    }
    let mut verified = BTreeSet::new();
    for (tenant, ok) in tenants {
        if !ok {
            report.kept.push(format!("{tenant} (not fully imported)"));
            continue;
        }
        let wanted: BTreeSet<String> = scan
            .candidates
            .iter()
            .filter(|c| c.record.key.tenant == tenant)
            .map(|c| c.record.key.sk())
            .collect();
        let stored = store.repository().list_tenant(&tenant.pk()).await?;
        let mut good = wanted.iter().all(|sk| stored.iter().any(|r| &r.sk == sk));
        // Opening each record reads its secrets: audited, as every read is.
        let ctx = ReadContext::new(
            "tokenkeep migrate",
            tenant.pk(),
            "verify before wipe-source",
        );
        for record in stored.iter().filter(|r| wanted.contains(&r.sk)) {
            if store.verify_record(record, &ctx).await.is_err() {
                good = false;
            }
        }
        if good {
            verified.insert(tenant);
        } else {
            report
                .kept
                .push(format!("{tenant} (records in tokenkeep did not verify)"));
        }
    }
    report.tenants = verified.len();
    if !verified.is_empty() {
        let (changed, warning) = source.wipe(&verified).await?;
        report.changed = changed;
        report.warning = warning;
    }
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn print_json(
    args: &MigrateArgs,
    source: &Source,
    scan: &Scan,
    results: &[Result1],
    counts: &BTreeMap<&str, usize>,
    warnings: &[String],
    exchange: Option<&ExchangeReport>,
    wipe: Option<&WipeReport>,
    run_id: &str,
) {
    let records: Vec<_> = scan
        .candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let r = &c.record;
            json!({
                "tenant": r.key.tenant.pk(),
                "record": r.key.sk(),
                "from": c.origin,
                "outcome": results.get(i).map(|o| o.as_ref().map_or("failed", |o| o.as_str())).unwrap_or("not_reached"),
                "error": results.get(i).and_then(|o| o.as_ref().err()),
                "rotating": r.refresh_token.is_some(),
                "token_expires_at": r.meta.token_expires_at,
                "installed_at": r.meta.installed_at,
                "incoming_webhook": r.incoming_webhook_url.is_some(),
                "source_metadata": r.source_metadata.is_some(),
            })
        })
        .collect();
    let skipped: Vec<_> = scan
        .skipped
        .iter()
        .map(|s| json!({"from": s.origin, "tenant": s.tenant.as_ref().map(TenantKey::pk), "holds": s.holds, "reason": s.reason}))
        .collect();
    let out = json!({
        "source": args.from.name(),
        "location": source.describe(),
        "apply": args.apply,
        "run_id": run_id,
        "entries_read": scan.entries_read,
        "counts": counts,
        "records": records,
        "skipped": skipped,
        "warnings": warnings,
        "exchange": exchange.map(|e| json!({"exchanged": e.exchanged, "failed": e.failed})),
        "wipe": wipe.map(|w| json!({"tenants": w.tenants, "changed": w.changed, "kept": w.kept, "warning": w.warning, "refused": w.refused})),
    });
    println!("{out}");
}

#[allow(clippy::too_many_arguments)]
fn print_text(
    args: &MigrateArgs,
    source: &Source,
    store: Option<String>,
    scan: &Scan,
    results: &[Result1],
    counts: &BTreeMap<&str, usize>,
    warnings: &[String],
    exchange: Option<&ExchangeReport>,
    wipe: Option<&WipeReport>,
    now: i64,
) {
    println!("source: {} {}", args.from.name(), source.describe());
    match store {
        Some(s) => println!("store:  {s}"),
        None => println!("store:  none yet (embedded store would be created by --apply)"),
    }
    println!(
        "read {} entries: {} record(s) to import, {} skipped",
        scan.entries_read,
        scan.candidates.len(),
        scan.skipped.len()
    );
    if !scan.candidates.is_empty() {
        let mut table = Table::new();
        table.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
        table.set_header(["RECORD", "FROM", "TOKEN", "EXPIRES", "ACTION"]);
        for (i, c) in scan.candidates.iter().enumerate() {
            let r = &c.record;
            table.add_row([
                record_name(&r.key.tenant, &r.key.kind),
                c.origin.clone(),
                if r.refresh_token.is_some() {
                    "rotating".into()
                } else {
                    "long-lived".into()
                },
                expiry(r.meta.token_expires_at, now),
                results
                    .get(i)
                    .map_or_else(|| "not reached (--limit)".into(), |o| action(o, args.apply)),
            ]);
        }
        println!("{table}");
    }
    if !scan.skipped.is_empty() {
        let mut table = Table::new();
        table.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
        table.set_header(["SKIPPED", "HOLDS", "WHY"]);
        for s in &scan.skipped {
            table.add_row([s.origin.clone(), s.holds.clone(), s.reason.clone()]);
        }
        println!("{table}");
    }
    for w in warnings {
        println!("warning: {w}");
    }
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let summary = if summary.is_empty() {
        "nothing to import".to_owned()
    } else {
        summary.join(", ")
    };
    if args.apply {
        println!("migrated: {summary}");
    } else {
        println!("dry run, nothing written; if applied: {summary} (rerun with --apply to write)");
    }
    if let Some(e) = exchange {
        println!(
            "exchange-long-lived: {} token(s) now rotating, {} failed",
            e.exchanged.len(),
            e.failed.len()
        );
        for f in &e.failed {
            println!("exchange-long-lived: failed {f}");
        }
    }
    if let Some(w) = wipe {
        if let Some(why) = &w.refused {
            println!("wipe-source: {why}");
        } else {
            println!(
                "wipe-source: {} tenant(s) wiped, {} row(s)/object(s) overwritten",
                w.tenants, w.changed
            );
        }
        for k in &w.kept {
            println!("wipe-source: kept {k}");
        }
        if let Some(warning) = &w.warning {
            println!("warning: {warning}");
        }
    }
}
