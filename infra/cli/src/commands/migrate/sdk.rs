//! slack_sdk's installation model (Bolt for Python), shared by its four stores.
//!
//! Every slack_sdk store keeps two kinds of entries: `Installation` (one per
//! install, with the installing user's grant and the bot's) and `Bot` (the bot
//! half). What tokenkeep imports is what the store's own `find_bot` /
//! `find_installation(user_id=…)` would answer: per tenant the latest bot, and
//! per user the latest installation, where "latest" is the source's order
//! (`installed_at`, then insertion order for ties). History is read, not imported.

use std::collections::BTreeMap;

use tokenkeep_installations::{
    ImportedRecord, InstallationMeta, RecordKey, SourceMetadata, Status, TenantKey,
};
use tokenkeep_slack_api::{AccessToken, RefreshToken, WebhookUrl};

use super::source::{Candidate, Scan, describe_ids, token_value};

/// One `Installation` or `Bot` entry of a slack_sdk store; a `Bot` has no user fields.
#[derive(Debug, Default)]
pub struct SdkEntry {
    /// Row id, file path or object key.
    pub origin: String,
    /// The source's "latest" order: install time (µs), then insertion order.
    pub order: (i64, i64),
    pub app_id: Option<String>,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    pub enterprise_url: Option<String>,
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub bot_token: Option<AccessToken>,
    pub bot_id: Option<String>,
    pub bot_user_id: Option<String>,
    pub bot_scopes: Vec<String>,
    pub bot_refresh_token: Option<RefreshToken>,
    pub bot_token_expires_at: Option<i64>,
    pub user_id: Option<String>,
    pub user_token: Option<AccessToken>,
    pub user_scopes: Vec<String>,
    pub user_refresh_token: Option<RefreshToken>,
    pub user_token_expires_at: Option<i64>,
    pub incoming_webhook_url: Option<WebhookUrl>,
    pub incoming_webhook_channel: Option<String>,
    pub incoming_webhook_channel_id: Option<String>,
    pub incoming_webhook_configuration_url: Option<String>,
    pub is_enterprise_install: bool,
    pub token_type: Option<String>,
    /// `custom_values` (file and S3 stores keep them; the SQL stores don't), as JSON.
    pub custom_values: Option<SourceMetadata>,
    /// The bot / user token was overwritten by an earlier `--wipe-source`.
    pub bot_wiped: bool,
    pub user_wiped: bool,
}

/// Why a record without its token is skipped.
fn missing(wiped: bool, what: &str) -> String {
    if wiped {
        format!("{what} wiped by an earlier `migrate --wipe-source` (it lives in tokenkeep)")
    } else {
        format!("bot installation without its {what}")
    }
}

/// Secrets read from a source column or key: empty and wiped values are absent.
pub fn access(raw: Option<String>) -> Option<AccessToken> {
    token_value(raw).map(AccessToken::new)
}
pub fn refresh(raw: Option<String>) -> Option<RefreshToken> {
    token_value(raw).map(RefreshToken::new)
}
pub fn webhook(raw: Option<String>) -> Option<WebhookUrl> {
    token_value(raw).map(WebhookUrl::new)
}
pub fn is_wiped(raw: &Option<String>) -> bool {
    raw.as_deref() == Some(super::source::WIPED)
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

impl SdkEntry {
    pub fn tenant(&self) -> Result<TenantKey, tokenkeep_installations::TenantError> {
        TenantKey::for_lookup(
            non_empty(&self.enterprise_id),
            non_empty(&self.team_id),
            self.is_enterprise_install,
        )
    }

    pub fn installed_at_secs(&self) -> i64 {
        self.order.0.div_euclid(1_000_000)
    }

    /// The ids an entry holds, for skip reports.
    pub fn holds(&self) -> String {
        let mut s = describe_ids(
            non_empty(&self.enterprise_id),
            non_empty(&self.team_id),
            non_empty(&self.user_id),
        );
        let fields: Vec<&str> = [
            ("bot token", self.bot_token.is_some()),
            ("bot refresh token", self.bot_refresh_token.is_some()),
            ("user token", self.user_token.is_some()),
            ("user refresh token", self.user_refresh_token.is_some()),
            ("incoming webhook", self.incoming_webhook_url.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        s.push_str(&format!(
            "; {}",
            if fields.is_empty() {
                "no token".to_owned()
            } else {
                fields.join(", ")
            }
        ));
        s
    }

    fn base_meta(&self) -> InstallationMeta {
        InstallationMeta {
            app_id: self.app_id.clone().filter(|s| !s.is_empty()),
            enterprise_id: non_empty(&self.enterprise_id).map(str::to_owned),
            enterprise_name: self.enterprise_name.clone(),
            enterprise_url: self.enterprise_url.clone(),
            team_id: non_empty(&self.team_id).map(str::to_owned),
            team_name: self.team_name.clone(),
            bot_id: self.bot_id.clone(),
            bot_user_id: self.bot_user_id.clone(),
            bot_scopes: self.bot_scopes.clone(),
            user_id: non_empty(&self.user_id).map(str::to_owned),
            user_scopes: Vec::new(),
            token_type: None,
            is_enterprise_install: self.is_enterprise_install,
            installed_at: self.installed_at_secs(),
            status: Status::Active,
            token_expires_at: None,
            incoming_webhook_channel: None,
            incoming_webhook_channel_id: None,
            incoming_webhook_configuration_url: None,
        }
    }
}

/// Collects entries and picks the latest per tenant (bots) and per tenant and
/// user (installations), as the slack_sdk stores' `find_*` methods do.
#[derive(Debug, Default)]
pub struct Latest {
    bots: BTreeMap<TenantKey, SdkEntry>,
    installers: BTreeMap<TenantKey, SdkEntry>,
    users: BTreeMap<(TenantKey, String), SdkEntry>,
}

impl Latest {
    /// A `Bot` entry (bots table, `bot-latest`).
    pub fn offer_bot(&mut self, scan: &mut Scan, entry: SdkEntry) {
        let Ok(tenant) = entry.tenant() else {
            scan.skip(
                &entry.origin,
                entry.holds(),
                "malformed or missing team / enterprise id",
            );
            return;
        };
        keep_latest(self.bots.entry(tenant), entry);
    }

    /// An `Installation` entry that is the tenant's latest (`installer-latest`)
    /// or any installation row (the latest wins).
    pub fn offer_installation(
        &mut self,
        scan: &mut Scan,
        entry: SdkEntry,
        per_user: bool,
        per_tenant: bool,
    ) {
        let Ok(tenant) = entry.tenant() else {
            scan.skip(
                &entry.origin,
                entry.holds(),
                "malformed or missing team / enterprise id",
            );
            return;
        };
        if per_user {
            let Some(user) = non_empty(&entry.user_id).map(str::to_owned) else {
                scan.skip_tenant(
                    Some(tenant),
                    &entry.origin,
                    entry.holds(),
                    "installation without a user id",
                );
                return;
            };
            if per_tenant {
                let copy = entry.shallow_copy();
                keep_latest(self.installers.entry(tenant.clone()), copy);
            }
            keep_latest(self.users.entry((tenant, user)), entry);
        } else if per_tenant {
            keep_latest(self.installers.entry(tenant), entry);
        }
    }

    /// Turns the latest entries into records.
    pub fn into_candidates(self, scan: &mut Scan) {
        let Latest {
            mut bots,
            mut installers,
            users,
        } = self;
        let tenants: std::collections::BTreeSet<TenantKey> = bots
            .keys()
            .chain(installers.keys())
            .chain(users.keys().map(|(t, _)| t))
            .cloned()
            .collect();
        for tenant in &tenants {
            let installer = installers.remove(tenant);
            match bots.remove(tenant) {
                Some(bot) => bot_record(scan, tenant, &bot, installer.as_ref()),
                // A store without bot entries (older versions, `save` only):
                // the installation's bot half is the bot.
                None => match &installer {
                    Some(i) if i.bot_token.is_some() => bot_record(scan, tenant, i, Some(i)),
                    Some(i) if i.bot_id.is_some() || i.bot_refresh_token.is_some() => scan
                        .skip_tenant(
                            Some(tenant.clone()),
                            &i.origin,
                            i.holds(),
                            missing(i.bot_wiped, "bot token"),
                        ),
                    _ => {}
                },
            }
        }
        for ((tenant, user), entry) in users {
            user_record(scan, &tenant, &user, &entry);
        }
    }
}

impl SdkEntry {
    /// The same entry without secrets beyond what a tenant-level view needs
    /// (the installer's webhook and bot half); tokens are cloned secret types.
    fn shallow_copy(&self) -> SdkEntry {
        SdkEntry {
            origin: self.origin.clone(),
            order: self.order,
            app_id: self.app_id.clone(),
            enterprise_id: self.enterprise_id.clone(),
            enterprise_name: self.enterprise_name.clone(),
            enterprise_url: self.enterprise_url.clone(),
            team_id: self.team_id.clone(),
            team_name: self.team_name.clone(),
            bot_token: self.bot_token.clone(),
            bot_id: self.bot_id.clone(),
            bot_user_id: self.bot_user_id.clone(),
            bot_scopes: self.bot_scopes.clone(),
            bot_refresh_token: self.bot_refresh_token.clone(),
            bot_token_expires_at: self.bot_token_expires_at,
            user_id: self.user_id.clone(),
            user_token: None,
            user_scopes: Vec::new(),
            user_refresh_token: None,
            user_token_expires_at: None,
            incoming_webhook_url: self.incoming_webhook_url.clone(),
            incoming_webhook_channel: self.incoming_webhook_channel.clone(),
            incoming_webhook_channel_id: self.incoming_webhook_channel_id.clone(),
            incoming_webhook_configuration_url: self.incoming_webhook_configuration_url.clone(),
            is_enterprise_install: self.is_enterprise_install,
            token_type: self.token_type.clone(),
            custom_values: self.custom_values.clone(),
            bot_wiped: self.bot_wiped,
            user_wiped: false,
        }
    }
}

fn keep_latest<K: Ord>(slot: std::collections::btree_map::Entry<'_, K, SdkEntry>, entry: SdkEntry) {
    use std::collections::btree_map::Entry;
    match slot {
        Entry::Vacant(v) => {
            v.insert(entry);
        }
        Entry::Occupied(mut o) => {
            if entry.order > o.get().order {
                o.insert(entry);
            }
        }
    }
}

fn bot_record(scan: &mut Scan, tenant: &TenantKey, bot: &SdkEntry, installer: Option<&SdkEntry>) {
    let Some(token) = bot.bot_token.clone() else {
        scan.skip_tenant(
            Some(tenant.clone()),
            &bot.origin,
            bot.holds(),
            missing(bot.bot_wiped, "bot token"),
        );
        return;
    };
    let mut meta = bot.base_meta();
    meta.token_type = Some("bot".into());
    meta.token_expires_at = bot.bot_token_expires_at;
    // The webhook and the org URL live on installations, not on bot entries.
    let mut incoming_webhook_url = None;
    if let Some(i) = installer {
        meta.enterprise_url = meta.enterprise_url.or_else(|| i.enterprise_url.clone());
        meta.user_id = meta
            .user_id
            .or_else(|| non_empty(&i.user_id).map(str::to_owned));
        if let Some(url) = &i.incoming_webhook_url {
            incoming_webhook_url = Some(url.clone());
            meta.incoming_webhook_channel = i.incoming_webhook_channel.clone();
            meta.incoming_webhook_channel_id = i.incoming_webhook_channel_id.clone();
            meta.incoming_webhook_configuration_url = i.incoming_webhook_configuration_url.clone();
        }
    }
    scan.candidates.push(Candidate {
        origin: bot.origin.clone(),
        record: ImportedRecord {
            key: RecordKey::bot(tenant.clone()),
            meta,
            token,
            refresh_token: bot.bot_refresh_token.clone(),
            incoming_webhook_url,
            source_metadata: bot.custom_values.clone(),
        },
    });
}

fn user_record(scan: &mut Scan, tenant: &TenantKey, user: &str, entry: &SdkEntry) {
    let Some(token) = entry.user_token.clone() else {
        if entry.user_wiped {
            scan.skip_tenant(
                Some(tenant.clone()),
                &entry.origin,
                entry.holds(),
                missing(true, "user token"),
            );
        } else if entry.user_refresh_token.is_some() {
            scan.skip_tenant(
                Some(tenant.clone()),
                &entry.origin,
                entry.holds(),
                "user refresh token without its user token",
            );
        }
        // A bot-only install by this user: no user grant to import.
        return;
    };
    let Ok(key) = RecordKey::user(tenant.clone(), user) else {
        scan.skip_tenant(
            Some(tenant.clone()),
            &entry.origin,
            entry.holds(),
            "malformed user id",
        );
        return;
    };
    let mut meta = entry.base_meta();
    meta.user_scopes = entry.user_scopes.clone();
    meta.token_type = Some("user".into());
    meta.token_expires_at = entry.user_token_expires_at;
    scan.candidates.push(Candidate {
        origin: entry.origin.clone(),
        record: ImportedRecord {
            key,
            meta,
            token,
            refresh_token: entry.user_refresh_token.clone(),
            incoming_webhook_url: None,
            source_metadata: entry.custom_values.clone(),
        },
    });
}
