//! Helpers shared by the store test binaries.
#![allow(dead_code)]

use std::sync::Arc;

use tokenkeep_installations::testing::local_keys;
use tokenkeep_installations::{
    EmbeddedRepository, Installation, InstallationStore, ReadContext, StoreConfig, VerifiedTenant,
};
use tokenkeep_slack_api::OAuthV2Response;

pub fn oauth_response(team: &str, n: usize) -> OAuthV2Response {
    serde_json::from_value(serde_json::json!({
        "ok": true,
        "app_id": "A1",
        "access_token": format!("xoxb-bot-{team}-{n}"),
        "refresh_token": format!("xoxe-1-refresh-{team}-{n}"),
        "expires_in": 43200,
        "token_type": "bot",
        "scope": "chat:write,app_mentions:read",
        "bot_user_id": "UBOT",
        "team": { "id": team, "name": "Team" },
        "enterprise": null,
        "is_enterprise_install": false,
        "authed_user": {
            "id": "U1", "scope": "search:read", "token_type": "user",
            "access_token": format!("xoxp-user-{team}-{n}"),
            "refresh_token": format!("xoxe-1-user-refresh-{team}-{n}"),
            "expires_in": 43200
        },
        "incoming_webhook": {
            "channel": "#general", "channel_id": "C1",
            "configuration_url": "https://example.slack.com/services/B1",
            "url": format!("https://hooks.slack.com/services/{team}/B1/secret{n}")
        }
    }))
    .unwrap()
}

pub async fn install(store: &InstallationStore, team: &str, n: usize) -> VerifiedTenant {
    install_at(store, team, n, store.clock().now_secs()).await
}

/// An install whose code exchange started at `exchanged_at` (unix seconds).
/// A tenant purged in that second or later refuses it, so a test that
/// reinstalls right after a purge passes the next second.
pub async fn install_at(
    store: &InstallationStore,
    team: &str,
    n: usize,
    exchanged_at: i64,
) -> VerifiedTenant {
    let resp = oauth_response(team, n);
    let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
    let inst = Installation::from_oauth_response(resp, exchanged_at).unwrap();
    store.store_installation(&tenant, &inst).await.unwrap();
    tenant
}

pub fn ctx() -> ReadContext {
    ReadContext::new("test", "req-1", "unit test")
}

pub async fn embedded_store() -> (InstallationStore, tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let repo = EmbeddedRepository::open(dir.path().join("store.db")).unwrap();
    let (keys, key_dir) = local_keys();
    (
        InstallationStore::new(Arc::new(repo), keys, StoreConfig::new("A1")),
        dir,
        key_dir,
    )
}

pub fn assert_no_plaintext(dump: &str, what: &str) {
    // Token-shaped, not bare "xox": random base64 ciphertext contains "xox" by
    // chance, but never "xoxb-" (no '-' or '.' in the standard alphabet).
    let token_shaped = ["xoxb-", "xoxp-", "xoxe-", "xoxe.", "xoxa-", "xoxr-"];
    assert!(
        !token_shaped.iter().any(|t| dump.contains(t)),
        "{what} contains a token"
    );
    assert!(
        !dump.contains("hooks.slack.com"),
        "{what} contains a webhook URL"
    );
}
