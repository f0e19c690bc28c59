//! One module per command family. Every command reads records through the
//! store's repository and prints only metadata: nothing here ever opens a
//! token except `verify`, which discards what it opens.

pub mod dev;
pub mod inspect;
pub mod migrate;
pub mod purge;
pub mod rekey;
pub mod transfer;
pub mod verify;

use tokenkeep_installations::{RecordKind, Repository, StoredRecord, TenantKey};

use crate::cli::TenantArgs;
use crate::exit::Failure;

const PAGE: usize = 500;

/// Every installation record, page by page. Operator scale (thousands of
/// workspaces) fits in memory, and a known total gives progress bars an ETA.
pub async fn all_records(repo: &dyn Repository) -> Result<Vec<StoredRecord>, Failure> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = repo.scan_records(after, PAGE).await?;
        out.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    out.sort_by(|a, b| (&a.pk, &a.sk).cmp(&(&b.pk, &b.sk)));
    Ok(out)
}

/// The tenant the operator named. `--team T` alone also finds a workspace that
/// belongs to an org (pk `T#E#T`) when exactly one stored tenant matches.
pub async fn resolve_tenant(
    repo: &dyn Repository,
    args: &TenantArgs,
) -> Result<TenantKey, Failure> {
    let invalid = |_| {
        Failure::config("--team / --enterprise must be Slack ids (upper-case letters and digits)")
    };
    let key =
        TenantKey::new(args.enterprise.as_deref(), args.team.as_deref()).map_err(|e| match e {
            tokenkeep_installations::TenantError::Missing => {
                Failure::config("name a tenant with --team and/or --enterprise")
            }
            other => invalid(other),
        })?;
    if args.enterprise.is_some() {
        return Ok(key);
    }
    let team = args.team.as_deref().unwrap_or_default();
    let matches: Vec<TenantKey> = repo
        .scan_tenants()
        .await?
        .into_iter()
        .filter_map(|(pk, _)| TenantKey::from_pk(&pk).ok())
        .filter(|k| k.team_id() == Some(team))
        .collect();
    match matches.as_slice() {
        [] => Ok(key),
        [only] => Ok(only.clone()),
        many => Err(Failure::config(format!(
            "--team {team} matches several tenants ({}); add --enterprise",
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

pub fn record_label(kind: &RecordKind) -> String {
    match kind {
        RecordKind::Bot => "bot".to_owned(),
        RecordKind::User(u) => format!("user {u}"),
    }
}

/// A short human name for a record in reports: tenant key, record and team name.
pub fn describe_record(record: &StoredRecord) -> String {
    let kind = record
        .key()
        .map(|k| record_label(&k.kind))
        .unwrap_or_else(|_| record.sk.clone());
    match record
        .meta
        .team_name
        .as_deref()
        .or(record.meta.enterprise_name.as_deref())
    {
        Some(name) => format!("{} {kind} ({name})", record.pk),
        None => format!("{} {kind}", record.pk),
    }
}
