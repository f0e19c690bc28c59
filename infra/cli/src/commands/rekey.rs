//! `rekey`: moves every record's data key under another wrapping key.
//!
//! Only the wrapped data key changes (KMS `ReEncrypt`: the plaintext data key
//! never leaves KMS), so the sealed fields, the record version and its AAD stay
//! as they are. Records already under the target key are skipped, which makes
//! the command resumable: rerun it after an interruption and it continues.
//!
//! Each record goes through `InstallationStore::rekey_record`, which writes it
//! under the record's own refresh lease (why: see there). Records whose lease
//! is held by someone else are skipped and reported.

use std::sync::atomic::{AtomicUsize, Ordering};

use futures::stream::{self, StreamExt};
use serde_json::json;
use tokenkeep_envelope::EnvelopeError;
use tokenkeep_installations::{InstallationStore, RekeyOutcome, StoreError, StoredRecord};

use super::{all_records, describe_record};
use crate::exit::{FAILED, Failure, INCOMPLETE};
use crate::output::{Table, progress};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Done(RekeyOutcome),
    Failed(&'static str),
}

/// The key ids that name the target key (an alias or key id may come back as an ARN).
#[derive(Debug)]
struct Target {
    names: Vec<String>,
}

impl Target {
    fn matches(&self, key_id: &str) -> bool {
        self.names.iter().any(|n| n == key_id)
    }
}

/// One record through the store's [`InstallationStore::rekey_record`] (the
/// lease and the re-wrap are the store's); this only says why it failed.
async fn rekey_one(
    store: &InstallationStore,
    record: StoredRecord,
    target: &Target,
    to_key: &str,
    owner: &str,
    budget: &AtomicUsize,
    limit: usize,
) -> Step {
    let admit = || budget.fetch_add(1, Ordering::SeqCst) < limit;
    match store
        .rekey_record(record, to_key, |id| target.matches(id), owner, admit)
        .await
    {
        Ok(outcome) => Step::Done(outcome),
        Err(StoreError::Integrity) => {
            Step::Failed("data key failed to decrypt under its key and context")
        }
        Err(StoreError::Envelope(EnvelopeError::AccessDenied)) => {
            Step::Failed("key provider denied re-encrypt")
        }
        Err(StoreError::Envelope(EnvelopeError::Unavailable(_))) => {
            Step::Failed("key provider unavailable")
        }
        Err(StoreError::Envelope(_)) => Step::Failed("key provider error"),
        Err(_) => Step::Failed("storage error"),
    }
}

async fn resolve_target(op: &crate::store::OperatorStore, to_key: &str) -> Result<Target, Failure> {
    let mut names = vec![to_key.to_owned()];
    match &op.backend {
        crate::store::Backend::Embedded { .. } => {
            if !to_key.starts_with("local:") {
                return Err(Failure::config(
                    "the embedded store uses local keys: --to-key local:<name>",
                ));
            }
        }
        crate::store::Backend::DynamoDb { .. } => {
            let aws = op
                .aws
                .as_ref()
                .ok_or_else(|| Failure::msg("no AWS config"))?;
            // Records name the key by the ARN KMS returns; the operator may give an id or alias.
            let out = aws_sdk_kms::Client::new(aws)
                .describe_key()
                .key_id(to_key)
                .send()
                .await
                .map_err(|e| {
                    Failure::msg(format!(
                        "KMS key {to_key} can't be used: {}",
                        aws_sdk_kms::error::DisplayErrorContext(e)
                    ))
                })?;
            if let Some(meta) = out.key_metadata() {
                names.push(meta.key_id().to_owned());
                if let Some(arn) = meta.arn() {
                    names.push(arn.to_owned());
                }
            }
        }
    }
    Ok(Target { names })
}

pub async fn rekey(
    op: &crate::store::OperatorStore,
    json: bool,
    to_key: &str,
    concurrency: usize,
    limit: Option<usize>,
) -> Result<(), Failure> {
    let store = &op.store;
    let target = resolve_target(op, to_key).await?;
    let records = all_records(store.repository().as_ref()).await?;
    let owner = format!(
        "tokenkeep-rekey-{}-{:08x}",
        std::process::id(),
        rand_suffix()
    );
    let budget = AtomicUsize::new(0);
    let limit = limit.unwrap_or(usize::MAX);
    let bar = progress(records.len() as u64, "rekey");
    let results: Vec<(StoredRecord, Step)> = stream::iter(records)
        .map(|r| {
            let (bar, target, owner, budget) = (&bar, &target, owner.as_str(), &budget);
            async move {
                let step = rekey_one(store, r.clone(), target, to_key, owner, budget, limit).await;
                bar.inc(1);
                (r, step)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();

    let count = |want: RekeyOutcome| {
        results
            .iter()
            .filter(|(_, s)| *s == Step::Done(want))
            .count()
    };
    let rekeyed = count(RekeyOutcome::Rekeyed);
    let already = count(RekeyOutcome::AlreadyUnderKey);
    let nothing = count(RekeyOutcome::NothingSealed);
    let gone = count(RekeyOutcome::Gone);
    let not_attempted = count(RekeyOutcome::NotAdmitted);
    let mut pending: Vec<(&StoredRecord, &'static str)> = Vec::new();
    let mut failed: Vec<(&StoredRecord, &'static str)> = Vec::new();
    for (r, s) in &results {
        match s {
            Step::Done(RekeyOutcome::Leased) => {
                pending.push((r, "refresh lease held; rerun later"))
            }
            Step::Done(RekeyOutcome::Contended) => {
                pending.push((r, "concurrent writes; rerun later"))
            }
            Step::Failed(why) => failed.push((r, why)),
            _ => {}
        }
    }
    pending.sort_by(|a, b| (&a.0.pk, &a.0.sk).cmp(&(&b.0.pk, &b.0.sk)));
    failed.sort_by(|a, b| (&a.0.pk, &a.0.sk).cmp(&(&b.0.pk, &b.0.sk)));
    // What is left to do: records still wrapped under another key, by key.
    // Until this is empty the old key must stay usable (kms:Decrypt in every
    // function's policy), or those installations stop opening.
    let mut left: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for (r, s) in &results {
        if matches!(
            s,
            Step::Done(RekeyOutcome::Leased | RekeyOutcome::Contended | RekeyOutcome::NotAdmitted)
                | Step::Failed(_)
        ) {
            *left.entry(r.data_key_id.as_str()).or_default() += 1;
        }
    }
    let left_total: usize = left.values().sum();

    if json {
        let list = |v: &[(&StoredRecord, &'static str)]| {
            v.iter()
                .map(|(r, why)| json!({"tenant": r.pk, "sk": r.sk, "reason": why}))
                .collect::<Vec<_>>()
        };
        println!(
            "{}",
            json!({
                "to_key": to_key, "total": results.len(), "rekeyed": rekeyed, "already_under_key": already,
                "nothing_sealed": nothing, "gone": gone, "not_attempted": not_attempted,
                "pending": list(&pending), "failed": list(&failed),
                "left_under_old_keys": left.iter().map(|(k, n)| json!({"key_id": k, "records": n})).collect::<Vec<_>>(),
                "left_total": left_total,
            })
        );
    } else {
        if !pending.is_empty() || !failed.is_empty() {
            let mut table = Table::new(&["RECORD", "RESULT"]);
            for (r, why) in pending.iter().chain(failed.iter()) {
                table.row(vec![describe_record(r), (*why).to_owned()]);
            }
            print!("{}", table.render());
        }
        println!(
            "rekey to {to_key}: {} record(s): {rekeyed} re-wrapped, {already} already under the key, {nothing} without sealed data, \
             {gone} gone, {} pending, {} failed{}",
            results.len(),
            pending.len(),
            failed.len(),
            if not_attempted > 0 {
                format!(", {not_attempted} not attempted (--limit)")
            } else {
                String::new()
            }
        );
        if left_total > 0 {
            let keys: Vec<String> = left.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            println!(
                "left to do: {left_total} record(s) still under the old key(s): {}. Keep kms:Decrypt on those keys in \
                 every function's policy until a rerun reports none left.",
                keys.join(", ")
            );
        }
        if failed.is_empty() && pending.is_empty() && not_attempted == 0 {
            println!(
                "done. Point TOKENKEEP_KMS_KEY_ID at {to_key} so new writes use it, then rerun rekey to catch \
                 records written under the old key meanwhile; the functions' policies must keep the old key \
                 until that rerun reports nothing left."
            );
        }
    }
    if !failed.is_empty() {
        Err(Failure::silent(FAILED))
    } else if !pending.is_empty() || not_attempted > 0 {
        Err(Failure::silent(INCOMPLETE))
    } else {
        Ok(())
    }
}

fn rand_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos ^ std::process::id().rotate_left(16)
}
