//! `verify`: opens every sealed field of every record and throws the plaintext
//! away. Finds records that were tampered with in the table, moved between
//! tenants, or wrapped under a key this deployment can't use.

use futures::stream::{self, StreamExt};
use serde_json::json;
use tokenkeep_envelope::EnvelopeError;
use tokenkeep_installations::{
    InstallationStore, ReadContext, StoreError, StoredRecord, VerifyError,
};

use super::{all_records, describe_record};
use crate::exit::{FAILED, Failure};
use crate::output::{Table, progress};

/// Why a record failed, without any secret: error kinds only.
fn envelope_reason(e: &EnvelopeError) -> &'static str {
    match e {
        EnvelopeError::Decrypt => "data key failed to decrypt (wrong key or encryption context)",
        EnvelopeError::AccessDenied => "key provider denied access to the data key",
        EnvelopeError::Unavailable(_) => "key provider unavailable",
        EnvelopeError::Format(_) => "malformed envelope",
        _ => "key provider error",
    }
}

async fn check(
    store: &InstallationStore,
    record: &StoredRecord,
    run: &ReadContext,
) -> Result<(), &'static str> {
    if record.key().is_err() {
        return Err("malformed record key");
    }
    store.verify_record(record, run).await.map_err(|e| match e {
        VerifyError::DataKey(e) => envelope_reason(&e),
        VerifyError::Field => {
            "sealed field failed authentication (tampered ciphertext or bound attribute)"
        }
        VerifyError::Store(StoreError::Repository(_)) => {
            "storage error (the audit record could not be written)"
        }
        VerifyError::Store(_) => "storage error",
    })
}

pub async fn verify(
    store: &InstallationStore,
    json: bool,
    concurrency: usize,
) -> Result<(), Failure> {
    let records = all_records(store.repository().as_ref()).await?;
    // Every record opened is audited under this run's id (reason `verify`).
    let run_id = format!(
        "verify-{}-{}",
        std::process::id(),
        store.clock().now_millis()
    );
    let run = ReadContext::new("tokenkeep verify", run_id, "verify");
    let bar = progress(records.len() as u64, "verify");
    let results: Vec<(usize, Result<(), &'static str>)> = stream::iter(records.iter().enumerate())
        .map(|(i, r)| {
            let (bar, run) = (&bar, &run);
            async move {
                let result = check(store, r, run).await;
                bar.inc(1);
                (i, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    let mut failed: Vec<(&StoredRecord, &'static str)> = results
        .into_iter()
        .filter_map(|(i, r)| r.err().map(|why| (&records[i], why)))
        .collect();
    failed.sort_by(|a, b| (&a.0.pk, &a.0.sk).cmp(&(&b.0.pk, &b.0.sk)));

    if json {
        let out = json!({
            "checked": records.len(),
            "ok": records.len() - failed.len(),
            "failed": failed.iter().map(|(r, why)| json!({
                "tenant": r.pk, "sk": r.sk, "team_name": r.meta.team_name, "key_id": r.data_key_id, "reason": why,
            })).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        if !failed.is_empty() {
            let mut table = Table::new(&["FAILED RECORD", "KEY", "REASON"]);
            for (r, why) in &failed {
                table.row(vec![
                    describe_record(r),
                    r.data_key_id.clone(),
                    (*why).to_owned(),
                ]);
            }
            print!("{}", table.render());
        }
        println!(
            "verified {} record(s): {} ok, {} failed",
            records.len(),
            records.len() - failed.len(),
            failed.len()
        );
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::silent(FAILED))
    }
}
