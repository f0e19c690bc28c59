//! The store's security properties, on both repositories: sealed fields can't
//! be moved, edited or forged; the table never holds a plaintext secret; no
//! token reaches Debug output or the logs.

mod common;

use std::sync::Arc;

use common::{assert_no_plaintext, ctx, embedded_store, install, install_at};

use tokenkeep_envelope::KmsKeyProvider;
use tokenkeep_installations::testing::{emulator_kms_key, emulator_repository};
use tokenkeep_installations::{
    CountingStoreMetrics, Expect, Installation, InstallationStore, Outcome, ReadContext, RecordKey,
    Repository, StoreConfig, StoreError, StoreMetric, VerifiedTenant,
};
use tokenkeep_slack_api::OAuthV2Response;

async fn dynamo_store() -> (InstallationStore, aws_sdk_dynamodb::Client, String) {
    let (repo, client, table, _) = emulator_repository().await;
    let (kms, key) = emulator_kms_key().await;
    let store = InstallationStore::new(
        Arc::new(repo),
        Arc::new(KmsKeyProvider::new(kms, key)),
        StoreConfig::new("A1"),
    );
    (store, client, table)
}

/// Writes a hand-edited record over the stored one (as someone with table
/// write access could), keeping the conditional write honest.
async fn overwrite(
    repo: &dyn Repository,
    original: &tokenkeep_installations::StoredRecord,
    edited: &tokenkeep_installations::StoredRecord,
) {
    repo.put(
        edited,
        Expect::Version {
            version: original.version,
            generation: original.generation,
        },
    )
    .await
    .unwrap();
}

fn flip_b64(value: &str, index: usize) -> String {
    use base64::Engine;
    let mut bytes = base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap();
    let i = index.min(bytes.len() - 1);
    bytes[i] ^= 0x01;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every way of editing a sealed record must fail to open, never yield a
/// different plaintext.
/// Returns how many reads failed closed (each one a `DecryptFailed` count).
async fn tamper_matrix(store: &InstallationStore) -> usize {
    let a = install(store, "TA", 1).await;
    let b = install(store, "TB", 1).await;
    let repo = store.repository().as_ref();
    let bot_a = RecordKey::bot(a.key().clone());
    let user_a = RecordKey::user(a.key().clone(), "U1").unwrap();
    let bot_b = RecordKey::bot(b.key().clone());
    let pristine = repo.get(&bot_a).await.unwrap().unwrap();
    assert_eq!(
        store.bot_token(&a, &ctx()).await.unwrap().expose_secret(),
        "xoxb-bot-TA-1"
    );

    type Edit = Box<dyn Fn(&mut tokenkeep_installations::StoredRecord)>;
    let user_rec = repo.get(&user_a).await.unwrap().unwrap();
    let b_rec = repo.get(&bot_b).await.unwrap().unwrap();
    let cases: Vec<(&str, Edit)> = vec![
        (
            "format byte",
            Box::new(|r| {
                let v = r.sealed["token"].clone();
                r.sealed.insert("token".into(), flip_b64(&v, 0));
            }),
        ),
        (
            "nonce",
            Box::new(|r| {
                let v = r.sealed["token"].clone();
                r.sealed.insert("token".into(), flip_b64(&v, 5));
            }),
        ),
        (
            "ciphertext",
            Box::new(|r| {
                let v = r.sealed["token"].clone();
                r.sealed.insert("token".into(), flip_b64(&v, 15));
            }),
        ),
        (
            "tag",
            Box::new(|r| {
                let v = r.sealed["token"].clone();
                r.sealed.insert("token".into(), flip_b64(&v, usize::MAX));
            }),
        ),
        (
            "encrypted data key",
            Box::new(|r| {
                r.data_key = flip_b64(&r.data_key.clone(), 40);
            }),
        ),
        (
            "field swap",
            Box::new(|r| {
                let rt = r.sealed["refresh_token"].clone();
                r.sealed.insert("token".into(), rt);
            }),
        ),
        ("from another record (user)", {
            let u = user_rec.clone();
            Box::new(move |r| {
                r.sealed = u.sealed.clone();
                r.data_key = u.data_key.clone();
                r.data_key_id = u.data_key_id.clone();
            })
        }),
        ("from another tenant", {
            let o = b_rec.clone();
            Box::new(move |r| {
                r.sealed = o.sealed.clone();
                r.data_key = o.data_key.clone();
                r.data_key_id = o.data_key_id.clone();
            })
        }),
        (
            "scopes widened",
            Box::new(|r| r.meta.bot_scopes.push("admin".into())),
        ),
        (
            "team renamed",
            Box::new(|r| r.meta.team_name = Some("Other".into())),
        ),
        (
            "expiry extended",
            Box::new(|r| r.meta.token_expires_at = r.meta.token_expires_at.map(|t| t + 3600)),
        ),
        (
            "enterprise flag",
            Box::new(|r| r.meta.is_enterprise_install = true),
        ),
        // Without its refresh token the record would read as non-rotating and
        // its expired token be served as is.
        (
            "refresh token deleted",
            Box::new(|r| {
                r.sealed.remove("refresh_token");
            }),
        ),
        (
            "webhook deleted",
            Box::new(|r| {
                r.sealed.remove("incoming_webhook_url");
            }),
        ),
        ("format downgraded", Box::new(|r| r.format = 1)),
    ];
    for (name, edit) in cases {
        let current = repo.get(&bot_a).await.unwrap().unwrap();
        let mut edited = pristine.clone();
        edit(&mut edited);
        edited.version = current.version; // same version: only the edit differs
        overwrite(repo, &current, &edited).await;
        let result = store.bot_token(&a, &ctx()).await;
        assert!(
            matches!(result, Err(StoreError::Integrity)),
            "{name}: expected an integrity failure, got {result:?}"
        );
    }
    // A version change without re-sealing (a replayed older item, or a forged bump) fails too.
    let current = repo.get(&bot_a).await.unwrap().unwrap();
    let mut bumped = pristine.clone();
    bumped.version = current.version + 1;
    overwrite(repo, &current, &bumped).await;
    assert!(
        matches!(
            store.bot_token(&a, &ctx()).await,
            Err(StoreError::Integrity)
        ),
        "version bump"
    );

    // Restoring the pristine item at its own version opens again: the checks
    // above failed because of the edits, not because the record was broken.
    let current = repo.get(&bot_a).await.unwrap().unwrap();
    overwrite(repo, &current, &pristine).await;
    assert_eq!(
        store.bot_token(&a, &ctx()).await.unwrap().expose_secret(),
        "xoxb-bot-TA-1"
    );
    assert_eq!(
        store.bot_token(&b, &ctx()).await.unwrap().expose_secret(),
        "xoxb-bot-TB-1"
    );

    // Every failed read was audited as such.
    let audit = repo
        .query_audit(Some(&a.key().pk()), 0, 1000)
        .await
        .unwrap();
    let refused = audit
        .iter()
        .filter(|r| r.outcome == Outcome::DecryptFailed)
        .count();
    assert_eq!(refused, 16);
    refused
}

/// Table access that bypasses the repository, as someone with write access
/// to the table (or a partial restore) has.
enum Raw {
    Embedded(std::path::PathBuf),
    Dynamo(aws_sdk_dynamodb::Client, String),
}

enum RawItem {
    Row(
        String,
        String,
        i64,
        i64,
        Option<String>,
        Option<i64>,
        String,
    ),
    Item(std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>),
}

impl Raw {
    async fn snapshot(&self, key: &RecordKey) -> RawItem {
        match self {
            Raw::Embedded(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.query_row(
                    "SELECT pk, sk, version, generation, exp_shard, expires_at, body FROM records WHERE pk = ?1 AND sk = ?2",
                    [key.pk(), key.sk()],
                    |r| Ok(RawItem::Row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)),
                )
                .unwrap()
            }
            Raw::Dynamo(client, table) => {
                let out = client
                    .get_item()
                    .table_name(table)
                    .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(key.pk()))
                    .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(key.sk()))
                    .consistent_read(true)
                    .send()
                    .await
                    .unwrap();
                RawItem::Item(out.item.unwrap())
            }
        }
    }

    async fn put_back(&self, item: &RawItem) {
        match (self, item) {
            (Raw::Embedded(path), RawItem::Row(pk, sk, v, g, shard, exp, body)) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.execute(
                    "INSERT OR REPLACE INTO records (pk, sk, version, generation, exp_shard, expires_at, lease_owner, lease_until, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7)",
                    rusqlite::params![pk, sk, v, g, shard, exp, body],
                )
                .unwrap();
            }
            (Raw::Dynamo(client, table), RawItem::Item(item)) => {
                client
                    .put_item()
                    .table_name(table)
                    .set_item(Some(item.clone()))
                    .send()
                    .await
                    .unwrap();
            }
            _ => unreachable!("snapshot and put_back on the same backend"),
        }
    }
}

/// A consistent item of a purged or superseded generation written back never
/// opens: the read checks the tenant's live generation.
async fn purged_generation_does_not_open(store: &InstallationStore, raw: Raw) {
    let a = install(store, "TG", 1).await;
    let bot = RecordKey::bot(a.key().clone());
    let old = raw.snapshot(&bot).await;
    store.purge_tenant(&a).await.unwrap();

    // Back under the purged generation (a purge that stopped half-way looks the same).
    raw.put_back(&old).await;
    let read = store.bot_token(&a, &ctx()).await;
    assert!(
        matches!(read, Err(StoreError::NotInstalled)),
        "a purged generation's record must not open: {read:?}"
    );
    // Purging again (Slack's retry of app_uninstalled) finishes the job.
    assert_eq!(store.purge_tenant(&a).await.unwrap(), 1);
    assert!(store.list_tenant(a.key()).await.unwrap().is_empty());

    // A reinstall opens generation + 1; the old item written over it does not open.
    install_at(store, "TG", 2, store.clock().now_secs() + 1).await;
    assert_eq!(
        store.bot_token(&a, &ctx()).await.unwrap().expose_secret(),
        "xoxb-bot-TG-2"
    );
    raw.put_back(&old).await;
    let read = store.bot_token(&a, &ctx()).await;
    assert!(
        matches!(read, Err(StoreError::NotInstalled)),
        "an older generation's record must not open: {read:?}"
    );
}

#[tokio::test]
async fn purged_generation_does_not_open_embedded() {
    let (store, dir, _k) = embedded_store().await;
    purged_generation_does_not_open(&store, Raw::Embedded(dir.path().join("store.db"))).await;
}

#[tokio::test]
async fn purged_generation_does_not_open_dynamodb() {
    let (store, client, table) = dynamo_store().await;
    purged_generation_does_not_open(&store, Raw::Dynamo(client, table)).await;
}

#[tokio::test]
async fn tamper_matrix_embedded() {
    let (store, _d, _k) = embedded_store().await;
    let metrics = Arc::new(CountingStoreMetrics::default());
    let store = store.with_metrics(metrics.clone());
    let refused = tamper_matrix(&store).await;
    // Each refused read was counted on the store's metrics seam too.
    assert_eq!(metrics.count_of(StoreMetric::DecryptFailed), refused);
}

#[tokio::test]
async fn tamper_matrix_dynamodb_and_kms_on_the_emulator() {
    let (store, _, _) = dynamo_store().await;
    let metrics = Arc::new(CountingStoreMetrics::default());
    let store = store.with_metrics(metrics.clone());
    let refused = tamper_matrix(&store).await;
    assert_eq!(metrics.count_of(StoreMetric::DecryptFailed), refused);
}

#[tokio::test]
async fn raw_dynamodb_table_holds_no_plaintext_secret() {
    let (store, client, table) = dynamo_store().await;
    for n in 0..100 {
        install(&store, &format!("TS{n}"), n).await;
    }
    let mut dump = String::new();
    let mut items = 0;
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(&table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        items += out.items().len();
        dump.push_str(&format!("{:?}", out.items()));
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    assert!(
        items >= 300,
        "bot + user + tenant items for 100 installs, got {items}"
    );
    assert_no_plaintext(&dump, "raw DynamoDB scan");
}

#[tokio::test]
async fn raw_embedded_file_holds_no_plaintext_secret() {
    let (store, dir, _k) = embedded_store().await;
    for n in 0..100 {
        install(&store, &format!("TS{n}"), n).await;
    }
    // Read the database file and its WAL byte for byte.
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        bytes.extend(std::fs::read(entry.unwrap().path()).unwrap());
    }
    assert!(bytes.len() > 10_000);
    assert_no_plaintext(&String::from_utf8_lossy(&bytes), "embedded database files");
}

#[tokio::test]
async fn token_reads_are_audited_with_actor_request_and_reason() {
    let (store, _d, _k) = embedded_store().await;
    let tenant = install(&store, "TQ", 1).await;
    store
        .bot_token(&tenant, &ReadContext::new("events", "req-9", "app_mention"))
        .await
        .unwrap();
    let audit = store
        .repository()
        .query_audit(Some(&tenant.key().pk()), 0, 10)
        .await
        .unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].request_id.as_str(),
            audit[0].reason.as_str()
        ),
        ("events", "req-9", "app_mention")
    );
    assert_eq!(audit[0].outcome, Outcome::Ok);
}

#[tokio::test]
async fn org_wide_install_and_bolt_lookup_rules() {
    let (store, _d, _k) = embedded_store().await;
    let resp: OAuthV2Response = serde_json::from_value(serde_json::json!({
        "ok": true, "app_id": "A1", "access_token": "xoxb-org", "token_type": "bot", "scope": "chat:write",
        "bot_user_id": "UB", "team": null, "enterprise": {"id": "E1", "name": "Org"}, "is_enterprise_install": true,
        "authed_user": {"id": "U9"}
    }))
    .unwrap();
    let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
    assert_eq!(tenant.key().pk(), "T#E1#-");
    store
        .store_installation(
            &tenant,
            &Installation::from_oauth_response(resp, 0).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxb-org"
    );
    // Bolt: a user lookup without a user record falls back to the bot.
    let q = tokenkeep_installations::InstallationQuery {
        tenant: &tenant,
        user_id: Some("U9"),
    };
    let info = store.fetch_installation(&q).await.unwrap().unwrap();
    assert_eq!(info.kind, tokenkeep_installations::RecordKind::Bot);
    assert!(info.meta.is_enterprise_install);

    // Reinstall: new version, new data key, new token.
    let before = store
        .repository()
        .get(&RecordKey::bot(tenant.key().clone()))
        .await
        .unwrap()
        .unwrap();
    let again: OAuthV2Response = serde_json::from_value(serde_json::json!({
        "ok": true, "app_id": "A1", "access_token": "xoxb-org-2", "token_type": "bot", "scope": "chat:write",
        "team": null, "enterprise": {"id": "E1"}, "is_enterprise_install": true
    }))
    .unwrap();
    store
        .store_installation(
            &tenant,
            &Installation::from_oauth_response(again, 1).unwrap(),
        )
        .await
        .unwrap();
    let after = store
        .repository()
        .get(&RecordKey::bot(tenant.key().clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.version, before.version + 1);
    assert_ne!(after.data_key, before.data_key);
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxb-org-2"
    );

    // Purge, then reinstall: a new generation.
    store.purge_tenant(&tenant).await.unwrap();
    assert!(matches!(
        store.bot_token(&tenant, &ctx()).await,
        Err(StoreError::NotInstalled)
    ));
    let third: OAuthV2Response = serde_json::from_value(serde_json::json!({
        "ok": true, "access_token": "xoxb-org-3", "team": null, "enterprise": {"id": "E1"}, "is_enterprise_install": true
    }))
    .unwrap();
    // The exchange started after the purge (a purge at or after it would refuse the install).
    let exchanged_at = store.clock().now_secs() + 1;
    store
        .store_installation(
            &tenant,
            &Installation::from_oauth_response(third, exchanged_at).unwrap(),
        )
        .await
        .unwrap();
    let reborn = store
        .repository()
        .get(&RecordKey::bot(tenant.key().clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reborn.generation, before.generation + 1);
    assert_eq!(reborn.version, 1);
}

#[tokio::test]
async fn oauth_states_are_single_use_and_malformed_ones_cost_nothing() {
    let (store, _d, _k) = embedded_store().await;
    let state = store.issue_state().await.unwrap();
    assert_eq!(state.len(), 64);
    assert!(store.consume_state(&state).await.unwrap());
    assert!(!store.consume_state(&state).await.unwrap(), "replay");
    assert!(!store.consume_state("not-a-state").await.unwrap());
    assert!(!store.consume_state(&"g".repeat(64)).await.unwrap());
}
