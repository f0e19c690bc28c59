//! `export` / `import`: a logical backup of the store.
//!
//! The file holds records exactly as stored — sealed fields and wrapped data
//! keys, never plaintext — plus every tenant state and every record's
//! revocation tombstone, so a restore can't bring back a tenant that was
//! uninstalled or a user or bot token that was revoked. It is still
//! sensitive (whoever also holds the key can open it), hence mode 0600.
//!
//! Format: JSON lines; a header (format, app id), records, tenant states,
//! revocations, and an end line with counts, so a truncated file is refused
//! on import. Version 1 files (before revocations were exported) still import.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokenkeep_installations::{
    Expect, InstallationStore, RecordKey, RepoError, RevocationRestore, StoredRecord, TenantState,
};

use super::all_records;
use crate::exit::{FAILED, Failure};
use crate::output::{now_secs, progress};

const FORMAT: &str = "tokenkeep-export";
const FORMAT_VERSION: u32 = 2;
/// Versions `import` reads: 1 has no revocation lines (and its end line no
/// count of them).
const READABLE_VERSIONS: [u32; 2] = [1, 2];

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    Header {
        format: String,
        version: u32,
        app_id: String,
        exported_at: i64,
    },
    Record {
        record: Box<StoredRecord>,
    },
    Tenant {
        pk: String,
        state: TenantState,
    },
    /// A record's revocation tombstone (unix seconds).
    Revocation {
        pk: String,
        sk: String,
        revoked_at: i64,
    },
    End {
        records: usize,
        tenants: usize,
        #[serde(default)]
        revocations: usize,
    },
}

fn create_private(path: &Path, force: bool) -> Result<std::fs::File, Failure> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Failure::msg(format!(
            "{} exists (pass --force to replace it)",
            path.display()
        )),
        _ => Failure::msg(format!("can't create {}: {e}", path.display())),
    })?;
    // `mode` applies only to new files; a replaced one may have had wider permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

pub async fn export(
    store: &InstallationStore,
    json: bool,
    out: &Path,
    force: bool,
) -> Result<(), Failure> {
    let repo = store.repository().as_ref();
    // Records before tenant states and revocations: a tenant purged or a
    // record revoked between the scans is exported with its tombstone, and
    // the tombstone wins on import.
    let records = all_records(repo).await?;
    let tenants = repo.scan_tenants().await?;
    let revocations = repo.scan_revocations().await?;
    let file = create_private(out, force)?;
    let mut w = BufWriter::new(file);
    let mut write = |line: &Line| -> Result<(), Failure> {
        serde_json::to_writer(&mut w, line)?;
        w.write_all(b"\n")?;
        Ok(())
    };
    write(&Line::Header {
        format: FORMAT.into(),
        version: FORMAT_VERSION,
        app_id: store.config().app_id.clone(),
        exported_at: now_secs(),
    })?;
    let bar = progress(records.len() as u64, "export");
    for record in &records {
        let mut record = record.clone();
        // Leases are runtime state, not data.
        record.lease_owner = None;
        record.lease_until = None;
        write(&Line::Record {
            record: Box::new(record),
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for (pk, state) in &tenants {
        write(&Line::Tenant {
            pk: pk.clone(),
            state: *state,
        })?;
    }
    for (key, revoked_at) in &revocations {
        write(&Line::Revocation {
            pk: key.pk(),
            sk: key.sk(),
            revoked_at: *revoked_at,
        })?;
    }
    write(&Line::End {
        records: records.len(),
        tenants: tenants.len(),
        revocations: revocations.len(),
    })?;
    let file = w
        .into_inner()
        .map_err(|e| Failure::msg(format!("writing {}: {}", out.display(), e.error())))?;
    file.sync_all()?;
    let purged = tenants.iter().filter(|(_, t)| t.purged).count();
    if json {
        println!(
            "{}",
            json!({"out": out, "records": records.len(), "tenants": tenants.len(), "purged_tenants": purged,
                   "revocations": revocations.len()})
        );
    } else {
        println!(
            "exported {} record(s), {} tenant state(s) ({purged} purged) and {} revocation(s) to {}",
            records.len(),
            tenants.len(),
            revocations.len(),
            out.display()
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imported {
    Created,
    Updated,
    /// The store already has this version or a newer one.
    KeptNewer,
    /// The tenant is purged or lives in another generation here: never revived.
    Refused,
    /// The record was revoked here at or after the copy's install: never revived.
    Revoked,
    Failed,
}

/// Whether this copy is of a grant revoked here (`None`: the store failed).
async fn revoked(
    store: &InstallationStore,
    key: &RecordKey,
    record: &StoredRecord,
) -> Option<bool> {
    store
        .revoked_since(key, record.meta.installed_at)
        .await
        .ok()
}

async fn import_record(store: &InstallationStore, mut record: StoredRecord) -> Imported {
    let repo = store.repository();
    record.lease_owner = None;
    record.lease_until = None;
    let Ok(key) = record.key() else {
        return Imported::Failed;
    };
    // Before the existing record: a revoke deletes the record, so a grant
    // stored since then starts at version 1 again and an older export's copy
    // of the revoked grant would otherwise look newer.
    match revoked(store, &key, &record).await {
        Some(true) => return Imported::Revoked,
        Some(false) => {}
        None => return Imported::Failed,
    }
    for _ in 0..3 {
        let existing = match repo.get(&key).await {
            Ok(e) => e,
            Err(_) => return Imported::Failed,
        };
        let (expect, done) = match &existing {
            None => (Expect::AbsentNotRevoked, Imported::Created),
            Some(e) if e.generation == record.generation && e.version < record.version => (
                Expect::Version {
                    version: e.version,
                    generation: e.generation,
                },
                Imported::Updated,
            ),
            Some(_) => return Imported::KeptNewer,
        };
        let absent = expect == Expect::AbsentNotRevoked;
        match repo.put(&record, expect).await {
            Ok(()) => return done,
            // The create fails when the tenant's live generation isn't this
            // record's (purged, or reinstalled since), when the record was
            // revoked meanwhile — or someone created it just now.
            Err(RepoError::ConditionFailed) if absent => match repo.get(&key).await {
                Ok(None) => {
                    return match revoked(store, &key, &record).await {
                        Some(true) => Imported::Revoked,
                        Some(false) => Imported::Refused,
                        None => Imported::Failed,
                    };
                }
                Ok(Some(_)) => continue,
                Err(_) => return Imported::Failed,
            },
            Err(RepoError::ConditionFailed) => continue,
            Err(_) => return Imported::Failed,
        }
    }
    Imported::KeptNewer
}

pub async fn import(store: &InstallationStore, json: bool, input: &Path) -> Result<(), Failure> {
    let file = std::fs::File::open(input)
        .map_err(|e| Failure::msg(format!("can't open {}: {e}", input.display())))?;
    let mut lines = BufReader::new(file).lines();
    let bad = |n: usize, what: &str| Failure::msg(format!("{} line {n}: {what}", input.display()));
    let first = lines
        .next()
        .transpose()?
        .ok_or_else(|| bad(1, "empty file"))?;
    match serde_json::from_str::<Line>(&first).map_err(|_| bad(1, "not a tokenkeep export"))? {
        Line::Header {
            format,
            version,
            app_id,
            ..
        } => {
            if format != FORMAT || !READABLE_VERSIONS.contains(&version) {
                return Err(bad(1, "unsupported export format"));
            }
            // The app id is in every data key's encryption context: records of
            // another app would import fine and then never open.
            if app_id != store.config().app_id {
                return Err(Failure::config(format!(
                    "the export is of app {app_id} but SLACK_CLIENT_ID is {}; its records would not open",
                    store.config().app_id
                )));
            }
        }
        _ => return Err(bad(1, "missing header")),
    }
    let (mut records, mut tenants, mut revocations, mut end) =
        (Vec::new(), Vec::new(), Vec::new(), None);
    for (i, line) in lines.enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        if end.is_some() {
            return Err(bad(i + 2, "data after the end line"));
        }
        // Don't echo the line: it holds sealed data.
        match serde_json::from_str::<Line>(&line).map_err(|_| bad(i + 2, "malformed line"))? {
            Line::Record { record } => records.push(*record),
            Line::Tenant { pk, state } => tenants.push((pk, state)),
            Line::Revocation { pk, sk, revoked_at } => {
                let key = RecordKey::from_keys(&pk, &sk)
                    .map_err(|_| bad(i + 2, "malformed revocation key"))?;
                revocations.push((key, revoked_at));
            }
            Line::End {
                records,
                tenants,
                revocations,
            } => end = Some((records, tenants, revocations)),
            Line::Header { .. } => return Err(bad(i + 2, "second header")),
        }
    }
    if end != Some((records.len(), tenants.len(), revocations.len())) {
        return Err(Failure::msg(format!(
            "{} is truncated or incomplete; nothing imported",
            input.display()
        )));
    }

    // Tenant states first: a tombstone must be in place before any record of
    // that tenant is offered, so the record's Expect::Absent refuses it.
    let repo = store.repository();
    let (mut restored, mut kept_tenants) = (0, 0);
    let bar = progress(tenants.len() as u64, "tenants");
    for (pk, state) in &tenants {
        if repo.restore_tenant(pk, *state).await? {
            restored += 1;
        } else {
            kept_tenants += 1;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    // Revocations next, for the same reason: each must be in place before a
    // copy of its record is offered.
    let (mut revocations_restored, mut revoked_now) = (0, 0);
    let bar = progress(revocations.len() as u64, "revocations");
    for (key, revoked_at) in &revocations {
        match store.restore_revocation(key, *revoked_at).await? {
            RevocationRestore::Kept => {}
            RevocationRestore::Written => revocations_restored += 1,
            RevocationRestore::RevokedRecord => {
                revocations_restored += 1;
                revoked_now += 1;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    let bar = progress(records.len() as u64, "import");
    let results: Vec<(String, Imported)> = stream::iter(records)
        .map(|r| {
            let bar = &bar;
            async move {
                let pk = r.pk.clone();
                let out = import_record(store, r).await;
                bar.inc(1);
                (pk, out)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    bar.finish_and_clear();
    let count = |want| results.iter().filter(|(_, r)| *r == want).count();
    let (created, updated, kept, refused, revoked, failed) = (
        count(Imported::Created),
        count(Imported::Updated),
        count(Imported::KeptNewer),
        count(Imported::Refused),
        count(Imported::Revoked),
        count(Imported::Failed),
    );
    if json {
        println!(
            "{}",
            json!({
                "tenants_restored": restored, "tenants_kept": kept_tenants,
                "records_created": created, "records_updated": updated, "records_kept_newer": kept,
                "records_refused": refused, "records_revoked": revoked, "records_failed": failed,
                "revocations_restored": revocations_restored, "records_revoked_by_restore": revoked_now,
            })
        );
    } else {
        println!(
            "tenants: {restored} restored, {kept_tenants} kept (store has same or newer)\n\
             revocations: {revocations_restored} restored ({revoked_now} record(s) revoked by them)\n\
             records: {created} created, {updated} updated, {kept} kept (store has same or newer), \
             {refused} refused (tenant purged or reinstalled), {revoked} revoked (refused: revoked since), \
             {failed} failed"
        );
        if failed > 0 {
            let mut names: Vec<_> = results
                .iter()
                .filter(|(_, r)| *r == Imported::Failed)
                .map(|(pk, _)| pk.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            println!("failed tenants: {}", names.join(", "));
        }
    }
    if failed > 0 {
        Err(Failure::silent(FAILED))
    } else {
        Ok(())
    }
}
