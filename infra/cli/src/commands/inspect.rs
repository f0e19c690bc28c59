//! `list`, `show`, `audit`: metadata only. Sealed fields, wrapped data keys and
//! tokens are never printed; the JSON is built field by field for that reason
//! rather than by serializing whole records.

use serde_json::{Value, json};
use tokenkeep_installations::{AuditRecord, InstallationStore, Outcome, StoredRecord};

use super::{all_records, record_label, resolve_tenant};
use crate::cli::TenantArgs;
use crate::exit::Failure;
use crate::output::{Table, now_secs, parse_duration, utc};

fn record_json(r: &StoredRecord) -> Value {
    let m = &r.meta;
    let kind = r
        .key()
        .map(|k| record_label(&k.kind))
        .unwrap_or_else(|_| r.sk.clone());
    json!({
        "tenant": r.pk,
        "record": kind,
        "enterprise_id": m.enterprise_id,
        "enterprise_name": m.enterprise_name,
        "team_id": m.team_id,
        "team_name": m.team_name,
        "is_enterprise_install": m.is_enterprise_install,
        "user_id": m.user_id,
        "bot_user_id": m.bot_user_id,
        "bot_scopes": m.bot_scopes,
        "user_scopes": m.user_scopes,
        "status": m.status.as_str(),
        "installed_at": m.installed_at,
        "token_expires_at": m.token_expires_at,
        "rotating": r.sealed.contains_key("refresh_token"),
        "sealed_fields": r.sealed.keys().collect::<Vec<_>>(),
        "version": r.version,
        "generation": r.generation,
        "key_id": r.data_key_id,
        "lease_until": r.lease_until,
    })
}

fn scopes(r: &StoredRecord) -> String {
    let s = if r.sk == "BOT" {
        &r.meta.bot_scopes
    } else {
        &r.meta.user_scopes
    };
    if s.is_empty() {
        "-".into()
    } else {
        s.join(",")
    }
}

fn expiry(r: &StoredRecord, now: i64) -> String {
    match r.meta.token_expires_at {
        None => "-".into(),
        Some(t) if t <= now => format!("{} (expired)", utc(t)),
        Some(t) => utc(t),
    }
}

pub async fn list(store: &InstallationStore, json: bool, purged: bool) -> Result<(), Failure> {
    let repo = store.repository().as_ref();
    let records = all_records(repo).await?;
    let tenants = repo.scan_tenants().await?;
    let tombstones: Vec<_> = tenants.iter().filter(|(_, t)| t.purged).collect();
    if json {
        let mut out = json!({ "records": records.iter().map(record_json).collect::<Vec<_>>() });
        if purged {
            out["purged"] = tombstones
                .iter()
                .map(|(pk, t)| json!({"tenant": pk, "generation": t.generation, "purged_at": t.purged_at}))
                .collect();
        }
        println!("{out}");
        return Ok(());
    }
    let now = now_secs();
    let mut table = Table::new(&[
        "TENANT", "NAME", "RECORD", "STATUS", "SCOPES", "EXPIRES", "VERSION",
    ]);
    for r in &records {
        let kind = r
            .key()
            .map(|k| record_label(&k.kind))
            .unwrap_or_else(|_| r.sk.clone());
        let name = r
            .meta
            .team_name
            .clone()
            .or_else(|| r.meta.enterprise_name.clone())
            .unwrap_or_else(|| "-".into());
        table.row(vec![
            r.pk.clone(),
            name,
            kind,
            r.meta.status.as_str().into(),
            scopes(r),
            expiry(r, now),
            r.version.to_string(),
        ]);
    }
    print!("{}", table.render());
    let live: std::collections::BTreeSet<_> = records.iter().map(|r| &r.pk).collect();
    println!(
        "{} tenants, {} records, {} purged tenants",
        live.len(),
        records.len(),
        tombstones.len()
    );
    if purged && !tombstones.is_empty() {
        let mut t = Table::new(&["PURGED TENANT", "GENERATION", "PURGED AT"]);
        for (pk, s) in &tombstones {
            t.row(vec![
                pk.clone(),
                s.generation.to_string(),
                s.purged_at.map_or("-".into(), |ms| utc(ms / 1000)),
            ]);
        }
        print!("\n{}", t.render());
    }
    Ok(())
}

pub async fn show(store: &InstallationStore, json: bool, args: &TenantArgs) -> Result<(), Failure> {
    let repo = store.repository().as_ref();
    let tenant = resolve_tenant(repo, args).await?;
    let records = repo.list_tenant(&tenant.pk()).await?;
    let state = repo.tenant_state(&tenant.pk()).await?;
    if json {
        let out = json!({
            "tenant": tenant.pk(),
            "state": state.map(|s| json!({"generation": s.generation, "purged": s.purged, "purged_at": s.purged_at})),
            "records": records.iter().map(record_json).collect::<Vec<_>>(),
        });
        println!("{out}");
    } else {
        let now = now_secs();
        match state {
            None => println!("tenant {tenant}: never installed"),
            Some(s) if s.purged => println!(
                "tenant {tenant}: PURGED (generation {}, at {})",
                s.generation,
                s.purged_at.map_or("-".into(), |ms| utc(ms / 1000))
            ),
            Some(s) => println!("tenant {tenant}: live, generation {}", s.generation),
        }
        for r in &records {
            let m = &r.meta;
            let kind = r
                .key()
                .map(|k| record_label(&k.kind))
                .unwrap_or_else(|_| r.sk.clone());
            println!();
            println!("  record        {kind}");
            println!(
                "  team          {} {}",
                m.team_id.as_deref().unwrap_or("-"),
                m.team_name.as_deref().unwrap_or("")
            );
            println!(
                "  enterprise    {} {}",
                m.enterprise_id.as_deref().unwrap_or("-"),
                m.enterprise_name.as_deref().unwrap_or("")
            );
            println!("  org-wide      {}", m.is_enterprise_install);
            if let Some(u) = &m.bot_user_id {
                println!("  bot user      {u}");
            }
            println!("  scopes        {}", scopes(r));
            println!("  status        {}", m.status.as_str());
            println!("  installed     {}", utc(m.installed_at));
            println!("  expires       {}", expiry(r, now));
            println!(
                "  sealed        {}",
                r.sealed.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            println!(
                "  key           {}",
                if r.data_key_id.is_empty() {
                    "-"
                } else {
                    &r.data_key_id
                }
            );
            println!(
                "  version       {} (generation {})",
                r.version, r.generation
            );
            if let Some(until) = r.lease_until.filter(|u| *u >= now) {
                println!("  refresh lease held until {}", utc(until));
            }
        }
        if records.is_empty() && !state.is_some_and(|s| s.purged) {
            println!("  no installation records");
        }
    }
    if records.is_empty() && state.is_none() {
        return Err(Failure::silent(crate::exit::FAILED));
    }
    Ok(())
}

/// `failed` selects every outcome except ok; any other value one outcome.
fn outcome_filter(value: &str) -> Result<Box<dyn Fn(Outcome) -> bool>, Failure> {
    let all = [
        Outcome::Ok,
        Outcome::NotInstalled,
        Outcome::NeedsReinstall,
        Outcome::DecryptFailed,
        Outcome::RefreshFailed,
        Outcome::Expired,
        Outcome::Failed,
    ];
    if value == "failed" {
        return Ok(Box::new(|o| o != Outcome::Ok));
    }
    let wanted = all
        .into_iter()
        .find(|o| o.as_str() == value)
        .ok_or_else(|| Failure::config(format!("unknown --outcome {value:?}")))?;
    Ok(Box::new(move |o| o == wanted))
}

pub async fn audit(
    store: &InstallationStore,
    json: bool,
    args: &TenantArgs,
    since: &str,
    outcome: Option<&str>,
    limit: usize,
) -> Result<(), Failure> {
    let repo = store.repository().as_ref();
    let since_secs = parse_duration(since).ok_or_else(|| {
        Failure::config(format!(
            "--since {since:?}: expected e.g. 90s, 30m, 12h, 7d"
        ))
    })?;
    let tenant = if args.team.is_some() || args.enterprise.is_some() {
        Some(resolve_tenant(repo, args).await?.pk())
    } else {
        None
    };
    let filter = match outcome {
        Some(o) => outcome_filter(o)?,
        None => Box::new(|_| true),
    };
    let since_ms = (now_secs() - since_secs) * 1000;
    // The filter runs after the query, so ask for more than `limit` when filtering.
    let fetch = if outcome.is_some() {
        limit.saturating_mul(20).max(10_000)
    } else {
        limit
    };
    let mut records: Vec<AuditRecord> =
        repo.query_audit(tenant.as_deref(), since_ms, fetch).await?;
    records.retain(|r| filter(r.outcome));
    records.truncate(limit);
    if json {
        // AuditRecord holds no token by construction (see its docs).
        println!("{}", serde_json::to_string(&records)?);
        return Ok(());
    }
    let mut table = Table::new(&[
        "TIME", "TENANT", "TOKEN", "USER", "ACTOR", "REASON", "OUTCOME", "VERSION", "REQUEST",
    ]);
    for r in &records {
        table.row(vec![
            format!(
                "{}.{:03}",
                utc(r.at_ms.div_euclid(1000)).trim_end_matches('Z'),
                r.at_ms.rem_euclid(1000)
            ),
            r.tenant.clone(),
            serde_json::to_value(&r.token_kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            r.user_id.clone().unwrap_or_else(|| "-".into()),
            r.actor.clone(),
            r.reason.clone(),
            r.outcome.as_str().into(),
            r.version.to_string(),
            r.request_id.clone(),
        ]);
    }
    print!("{}", table.render());
    println!(
        "{} audited reads since {}",
        records.len(),
        utc(since_ms / 1000)
    );
    Ok(())
}
