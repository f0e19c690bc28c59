//! `purge`: the operator's app_uninstalled. Same store path (`purge_tenant`),
//! so it leaves the same tombstone that keeps late writes, stale refreshes and
//! restores from bringing the tenant back.

use std::io::BufRead;

use serde_json::json;
use tokenkeep_installations::InstallationStore;

use super::resolve_tenant;
use crate::cli::TenantArgs;
use crate::exit::Failure;

pub async fn purge(
    store: &InstallationStore,
    json: bool,
    args: &TenantArgs,
    yes: bool,
) -> Result<(), Failure> {
    let tenant = resolve_tenant(store.repository().as_ref(), args).await?;
    // A tenant with no records left is still tombstoned: that is what keeps an
    // older export from bringing it back on import.
    if store
        .repository()
        .tenant_state(&tenant.pk())
        .await?
        .is_some_and(|s| s.purged)
    {
        if json {
            println!(
                "{}",
                json!({"tenant": tenant.pk(), "purged_records": 0, "already_purged": true})
            );
        } else {
            println!("tenant {tenant} is already purged; nothing to do");
        }
        return Ok(());
    }
    let records = store.list_tenant(&tenant).await?;
    if !yes {
        // Confirmation is typed, not a y/N: a tenant id can't be confirmed by reflex.
        let expected = tenant
            .team_id()
            .or(tenant.enterprise_id())
            .unwrap_or_default()
            .to_owned();
        eprintln!(
            "This deletes {} installation record(s) of {tenant} and tombstones the tenant; \
             it can't be restored from a backup.\nType {expected} to confirm: ",
            records.len()
        );
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line).unwrap_or(0);
        if read == 0 {
            return Err(Failure::msg(
                "no confirmation on stdin; nothing purged (pass --yes to skip the prompt)",
            ));
        }
        if line.trim() != expected {
            return Err(Failure::msg("confirmation did not match; nothing purged"));
        }
    }
    let n = store.purge_tenant_key(&tenant).await?;
    if json {
        println!(
            "{}",
            json!({"tenant": tenant.pk(), "purged_records": n, "already_purged": false})
        );
    } else {
        println!("purged {tenant}: {n} record(s) deleted, tenant tombstoned");
    }
    Ok(())
}
