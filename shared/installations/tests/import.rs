//! `InstallationStore::import_record` / `plan_import` (what `tokenkeep migrate`
//! writes through), on both repositories: an import never overrides what the
//! store knows better (a newer install or refresh, a purge), a rerun writes
//! nothing, the write is audited and sealed.

mod common;

use std::sync::Arc;

use common::{assert_no_plaintext, ctx, embedded_store, install, install_at};
use tokenkeep_envelope::KmsKeyProvider;
use tokenkeep_installations::testing::{emulator_kms_key, emulator_repository};
use tokenkeep_installations::{
    ImportOutcome, ImportedRecord, InstallationMeta, InstallationStore, LifecycleEvent,
    LifecycleOutcome, RecordKey, SourceMetadata, StoreConfig, StoreError, TenantKey,
};
use tokenkeep_slack_api::{AccessToken, RefreshToken};

fn imported(team: &str, installed_at: i64, expires_at: Option<i64>, token: &str) -> ImportedRecord {
    let tenant = TenantKey::new(None, Some(team)).unwrap();
    ImportedRecord {
        key: RecordKey::bot(tenant),
        meta: InstallationMeta {
            team_id: Some(team.into()),
            bot_scopes: vec!["chat:write".into()],
            token_type: Some("bot".into()),
            installed_at,
            token_expires_at: expires_at,
            ..InstallationMeta::default()
        },
        token: AccessToken::new(token),
        refresh_token: expires_at.map(|_| RefreshToken::new(format!("xoxe-1-refresh-of-{token}"))),
        incoming_webhook_url: None,
        source_metadata: Some(SourceMetadata::new(
            r#"{"plan":"gold","api_key":"sk-not-for-the-table"}"#,
        )),
    }
}

/// A user's record as an old store holds it (a long-lived user token).
fn imported_user(team: &str, user: &str, installed_at: i64, token: &str) -> ImportedRecord {
    let mut record = imported(team, installed_at, None, token);
    record.key = RecordKey::user(record.key.tenant.clone(), user).unwrap();
    record.meta.user_id = Some(user.into());
    record.meta.user_scopes = vec!["search:read".into()];
    record.meta.token_type = Some("user".into());
    record.source_metadata = None;
    record
}

async fn revoked_records_stay_revoked(store: &InstallationStore) {
    let repo = store.repository();
    let now = store.clock().now_secs();
    // Given a workspace installed ten minutes ago (bot and installing user U1)
    let tenant = install_at(store, "TREVOKE", 1, now - 600).await;
    let u1 = RecordKey::user(tenant.key().clone(), "U1").unwrap();
    let u9 = RecordKey::user(tenant.key().clone(), "U9").unwrap();

    // When Slack revokes U1's token, and U9's (never stored here), five minutes ago
    let event = LifecycleEvent {
        event_id: "EvREVOKE1",
        event_time: now - 300,
    };
    let users = ["U1".to_owned(), "U9".to_owned()];
    assert_eq!(
        store
            .apply_tokens_revoked(&tenant, &event, &users, false)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { records: 1 }
    );
    // Then U1's record is gone and both users are tombstoned at the event's time
    assert!(repo.get(&u1).await.unwrap().is_none());
    assert_eq!(repo.revoked_at(&u1).await.unwrap(), Some(now - 300));
    assert_eq!(repo.revoked_at(&u9).await.unwrap(), Some(now - 300));

    // And a migration of U1's copy from before the revocation is refused as
    // revoked (planned and applied alike), as is one installed that very second
    for installed_at in [now - 600, now - 300] {
        let old = imported_user("TREVOKE", "U1", installed_at, "xoxp-old-copy");
        assert_eq!(
            store.plan_import(&old).await.unwrap(),
            ImportOutcome::Revoked
        );
        assert_eq!(
            store.import_record(&old, &ctx()).await.unwrap(),
            ImportOutcome::Revoked
        );
        assert!(
            repo.get(&u1).await.unwrap().is_none(),
            "revoked user revived"
        );
    }
    assert_eq!(
        store
            .import_record(
                &imported_user("TREVOKE", "U9", now - 400, "xoxp-u9"),
                &ctx()
            )
            .await
            .unwrap(),
        ImportOutcome::Revoked,
        "a user revoked before its record was migrated stays out"
    );
    // And a copy of a grant Slack issued after the revocation is accepted
    let newer = imported_user("TREVOKE", "U1", now - 100, "xoxp-granted-since");
    assert_eq!(
        store.import_record(&newer, &ctx()).await.unwrap(),
        ImportOutcome::Created
    );
    assert_eq!(
        store
            .user_token(&tenant, "U1", &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxp-granted-since"
    );
    // And the bot, which the event did not name, is untouched
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxb-bot-TREVOKE-1"
    );

    // When the app deletes the bot (Bolt's delete_bot)
    assert!(store.delete_bot(&tenant).await.unwrap());
    // Then it is tombstoned at the store's now, and its old copy is refused
    let bot = RecordKey::bot(tenant.key().clone());
    assert!(repo.revoked_at(&bot).await.unwrap().unwrap() >= now);
    assert_eq!(
        store
            .import_record(&imported("TREVOKE", now - 600, None, "xoxb-old"), &ctx())
            .await
            .unwrap(),
        ImportOutcome::Revoked
    );
    assert!(matches!(
        store.bot_token(&tenant, &ctx()).await,
        Err(StoreError::NotInstalled)
    ));

    // When the workspace is installed again through OAuth (a new grant)
    install_at(store, "TREVOKE", 2, now + 5).await;
    // Then the new bot and user are stored, and the tombstones stay for the old copies
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxb-bot-TREVOKE-2"
    );
    assert_eq!(
        store
            .user_token(&tenant, "U1", &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxp-user-TREVOKE-2"
    );
    assert_eq!(repo.revoked_at(&u1).await.unwrap(), Some(now - 300));
    assert_eq!(
        store
            .plan_import(&imported_user("TREVOKE", "U1", now - 600, "xoxp-old-copy"))
            .await
            .unwrap(),
        ImportOutcome::Revoked
    );
}

#[tokio::test]
async fn revoked_records_stay_revoked_on_the_embedded_store() {
    let (store, _d, _k) = embedded_store().await;
    revoked_records_stay_revoked(&store).await;
}

#[tokio::test]
async fn revoked_records_stay_revoked_on_dynamodb() {
    let (repo, _, _, _) = emulator_repository().await;
    let (kms, key) = emulator_kms_key().await;
    let store = InstallationStore::new(
        Arc::new(repo),
        Arc::new(KmsKeyProvider::new(kms, key)),
        StoreConfig::new("A1"),
    );
    revoked_records_stay_revoked(&store).await;
}

async fn import_rules(store: &InstallationStore) {
    let repo = store.repository();
    let now = store.clock().now_secs();
    let first = imported(
        "TIMP",
        now - 600,
        Some(now + 40_000),
        "xoxe.xoxb-imported-1",
    );

    // Given nothing stored: a plan says create and writes nothing.
    assert_eq!(
        store.plan_import(&first).await.unwrap(),
        ImportOutcome::Created
    );
    assert!(repo.get(&first.key).await.unwrap().is_none());
    assert!(
        repo.tenant_state(&first.key.pk()).await.unwrap().is_none(),
        "a plan opens no tenant"
    );

    // When imported: created, readable, sealed, audited.
    assert_eq!(
        store.import_record(&first, &ctx()).await.unwrap(),
        ImportOutcome::Created
    );
    let tenant = store
        .tenant_for_job(&first.key.tenant)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxe.xoxb-imported-1"
    );
    let stored = repo.get(&first.key).await.unwrap().unwrap();
    assert!(
        stored.sealed.contains_key("source_metadata"),
        "custom values are kept, sealed"
    );
    let dump = serde_json::to_string(&stored).unwrap();
    assert_no_plaintext(&dump, "imported record");
    assert!(
        !dump.contains("sk-not-for-the-table"),
        "custom values never in plaintext attributes"
    );
    store.verify_record(&stored, &ctx()).await.unwrap();
    let audit = repo
        .query_audit(Some(&first.key.pk()), 0, 100)
        .await
        .unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|a| a.actor == "test" && a.version == 1)
            .count(),
        3,
        "import, read and verify audited: {audit:?}"
    );

    // A rerun: unchanged, nothing written.
    assert_eq!(
        store.import_record(&first, &ctx()).await.unwrap(),
        ImportOutcome::Unchanged
    );
    assert_eq!(repo.get(&first.key).await.unwrap().unwrap().version, 1);

    // An older copy (earlier install) is kept out.
    let older = imported("TIMP", now - 6000, Some(now + 40_000), "xoxe.xoxb-older");
    assert_eq!(
        store.import_record(&older, &ctx()).await.unwrap(),
        ImportOutcome::KeptNewer
    );
    // The same install refreshed by the source since (later expiry): replaces,
    // since the stored refresh token is spent.
    let refreshed = imported(
        "TIMP",
        now - 600,
        Some(now + 43_000),
        "xoxe.xoxb-refreshed-by-source",
    );
    assert_eq!(
        store.import_record(&refreshed, &ctx()).await.unwrap(),
        ImportOutcome::Replaced
    );
    assert_eq!(
        store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .expose_secret(),
        "xoxe.xoxb-refreshed-by-source"
    );
    assert_eq!(repo.get(&first.key).await.unwrap().unwrap().version, 2);
    // ...and the first copy (earlier expiry) no longer counts as newer.
    assert_eq!(
        store.import_record(&first, &ctx()).await.unwrap(),
        ImportOutcome::KeptNewer
    );

    // A tenant reinstalled through tokenkeep (OAuth, installed now) beats any import of before.
    install(store, "TNEW", 1).await;
    let stale = imported("TNEW", now - 60, None, "xoxb-from-the-old-store");
    assert_eq!(
        store.import_record(&stale, &ctx()).await.unwrap(),
        ImportOutcome::KeptNewer
    );

    // A purged tenant is never brought back, however new the import.
    let verified = store
        .tenant_for_job(&first.key.tenant)
        .await
        .unwrap()
        .unwrap();
    store.purge_tenant(&verified).await.unwrap();
    let newest = imported(
        "TIMP",
        now + 60,
        Some(now + 50_000),
        "xoxe.xoxb-after-purge",
    );
    assert_eq!(
        store.plan_import(&newest).await.unwrap(),
        ImportOutcome::Refused
    );
    assert_eq!(
        store.import_record(&newest, &ctx()).await.unwrap(),
        ImportOutcome::Refused
    );
    assert!(repo.get(&newest.key).await.unwrap().is_none());
    assert!(
        repo.tenant_state(&newest.key.pk())
            .await
            .unwrap()
            .unwrap()
            .purged
    );
}

#[tokio::test]
async fn import_rules_on_the_embedded_store() {
    let (store, _d, _k) = embedded_store().await;
    import_rules(&store).await;
}

#[tokio::test]
async fn import_rules_on_dynamodb() {
    let (repo, _, _, _) = emulator_repository().await;
    let (kms, key) = emulator_kms_key().await;
    let store = InstallationStore::new(
        Arc::new(repo),
        Arc::new(KmsKeyProvider::new(kms, key)),
        StoreConfig::new("A1"),
    );
    import_rules(&store).await;
}

#[test]
fn imported_records_show_no_secret_in_debug() {
    let record = imported("TDBG", 1, Some(2), "xoxe.xoxb-debug-secret");
    let shown = format!("{record:?}");
    assert!(
        !shown.contains("debug-secret") && !shown.contains("gold"),
        "{shown}"
    );
}
