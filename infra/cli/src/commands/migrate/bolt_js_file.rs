//! `bolt-js-file`: @slack/oauth's `FileInstallationStore` (Bolt for JavaScript).
//!
//! Layout: one folder per tenant: `{base}/{enterprise}` (org-wide installs),
//! `{base}/{enterprise}-{team}`, and for a plain workspace `{base}{team}` (the
//! library appends the team id to the base's name), where `base` is `baseDir`
//! or `baseDir/clientId`. A folder holds `app-latest` (the last install or refresh: the bot) and
//! `user-{user}-latest` (per user), and with history on timestamped copies
//! (`app-{ms}`, `user-{user}-{ms}`). Each file is the `Installation` object as
//! JSON. @slack/oauth keeps no install time, so the newest history copy's
//! timestamp stands in for it, else the file's modification time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use tokenkeep_installations::{
    ImportedRecord, InstallationMeta, RecordKey, SourceMetadata, Status, TenantKey,
};

use super::objects::Objects;
use super::sdk::{access, refresh, webhook};
use super::source::{Candidate, Scan, WIPED, describe_ids};
use crate::exit::Failure;

const KEYS: &[&str] = &[
    "team",
    "enterprise",
    "user",
    "bot",
    "incomingWebhook",
    "appId",
    "tokenType",
    "enterpriseUrl",
    "isEnterpriseInstall",
    "authVersion",
    "metadata",
];

#[derive(Debug, Clone)]
pub struct BoltJsFileStore {
    root: PathBuf,
}

fn read_dir(path: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(path)
        .map(|d| d.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn is_dir(entry: &std::fs::DirEntry) -> bool {
    entry.file_type().is_ok_and(|t| t.is_dir())
}

/// Slack ids: what @slack/oauth appends to the base directory for a workspace.
fn slack_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl BoltJsFileStore {
    /// A `FileInstallationStore` base directory (with the client id appended
    /// when the store was built with one and wrote under it).
    pub fn open(location: &str, client_id: &str) -> Result<Self, Failure> {
        let base = PathBuf::from(location.trim_end_matches('/'));
        let per_app = base.join(client_id);
        let uses_client_id = per_app.is_dir()
            || read_dir(&base).iter().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                is_dir(e) && name.strip_prefix(client_id).is_some_and(slack_id)
            });
        let store = Self {
            root: if uses_client_id {
                per_app
            } else {
                base.clone()
            },
        };
        if store.folders().is_empty() {
            return Err(Failure::msg(format!(
                "{}: no @slack/oauth installation folders there",
                base.display()
            )));
        }
        Ok(store)
    }

    pub fn describe(&self) -> String {
        self.root.display().to_string()
    }

    /// The tenant folders. @slack/oauth joins enterprise folders under the
    /// base (`base/E1`, `base/E1-T2`) but appends a workspace's team id to the
    /// base's own name (`baseT1`, a sibling), so both places are read.
    fn folders(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = read_dir(&self.root)
            .iter()
            .filter(|e| is_dir(e))
            .map(|e| e.path())
            .collect();
        if let (Some(parent), Some(name)) = (self.root.parent(), self.root.file_name()) {
            let name = name.to_string_lossy().into_owned();
            for e in read_dir(parent) {
                let sibling = e.file_name().to_string_lossy().into_owned();
                if is_dir(&e) && sibling.strip_prefix(&name).is_some_and(slack_id) {
                    out.push(e.path());
                }
            }
        }
        out.sort();
        out
    }

    /// Every file of every tenant folder.
    fn files(&self) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        for folder in self.folders() {
            for e in read_dir(&folder) {
                if e.file_type().is_ok_and(|t| t.is_file()) {
                    out.push((folder.clone(), e.file_name().to_string_lossy().into_owned()));
                }
            }
        }
        out.sort();
        out
    }

    pub async fn scan(&self) -> Result<Scan, Failure> {
        let mut scan = Scan::default();
        // Newest history timestamp per (folder, "app" | user id).
        let mut history: BTreeMap<(PathBuf, String), i64> = BTreeMap::new();
        let mut latest = Vec::new();
        for (folder, name) in self.files() {
            if let Some((owner, stamp)) = history_name(&name) {
                scan.entries_read += 1;
                let slot = history.entry((folder, owner)).or_default();
                *slot = (*slot).max(stamp.div_euclid(1000));
            } else if name == "app-latest"
                || (name.starts_with("user-") && name.ends_with("-latest"))
            {
                scan.entries_read += 1;
                latest.push((folder, name));
            }
        }
        for (folder, name) in latest {
            let path = folder.join(&name);
            let origin = path.display().to_string();
            let is_app = name == "app-latest";
            let owner = if is_app {
                "app".to_owned()
            } else {
                name["user-".len()..name.len() - "-latest".len()].to_owned()
            };
            let installed_at = match history.get(&(folder.clone(), owner)) {
                Some(t) => *t,
                None => mtime(&path).unwrap_or_default(),
            };
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    scan.skip(&origin, "an installation file", format!("can't read: {e}"));
                    continue;
                }
            };
            match parse(&origin, &bytes, installed_at, is_app) {
                Ok(Some(record)) => scan.candidates.push(Candidate { origin, record }),
                Ok(None) => {}
                Err((tenant, holds, why)) => scan.skip_tenant(tenant, &origin, holds, why),
            }
        }
        Ok(scan)
    }

    /// Rewrites every installation file (latest and history) of the given
    /// tenants with the tokens overwritten. Returns the files rewritten.
    pub async fn wipe(&self, tenants: &BTreeSet<TenantKey>) -> Result<usize, Failure> {
        let mut rewritten = 0;
        for (folder, name) in self.files() {
            if !(name.starts_with("app-") || name.starts_with("user-")) {
                continue;
            }
            let path = folder.join(&name);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if !tenant_of(&map).is_some_and(|t| tenants.contains(&t)) {
                continue;
            }
            if wipe_fields(&mut map) {
                let objects = Objects::Dir {
                    root: folder.clone(),
                };
                objects
                    .put(&name, serde_json::to_vec(&Value::Object(map))?)
                    .await?;
                rewritten += 1;
            }
        }
        Ok(rewritten)
    }
}

/// `app-1700000000123` → ("app", ms); `user-U1-1700000000123` → ("U1", ms).
fn history_name(name: &str) -> Option<(String, i64)> {
    let (head, stamp) = name.rsplit_once('-')?;
    let stamp: i64 = stamp.parse().ok()?;
    if head == "app" {
        Some(("app".into(), stamp))
    } else {
        head.strip_prefix("user-").map(|u| (u.to_owned(), stamp))
    }
}

fn mtime(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    jiff::Timestamp::try_from(modified)
        .ok()
        .map(|t| t.as_second())
}

fn wipe_fields(map: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for part in ["bot", "user"] {
        if let Some(Value::Object(grant)) = map.get_mut(part) {
            if grant
                .get("token")
                .is_some_and(|t| t.is_string() && t.as_str() != Some(WIPED))
            {
                grant.insert("token".into(), Value::String(WIPED.into()));
                changed = true;
            }
            changed |= grant.remove("refreshToken").is_some();
        }
    }
    if let Some(Value::Object(hook)) = map.get_mut("incomingWebhook") {
        changed |= hook.remove("url").is_some();
    }
    changed
}

fn id_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?.get("id")?.as_str().map(str::to_owned)
}

fn name_of(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)?.get("name")?.as_str().map(str::to_owned)
}

fn tenant_of(map: &Map<String, Value>) -> Option<TenantKey> {
    let org = map
        .get("isEnterpriseInstall")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    TenantKey::for_lookup(
        id_of(map, "enterprise").as_deref(),
        id_of(map, "team").as_deref(),
        org,
    )
    .ok()
}

fn str_field(grant: Option<&Value>, key: &str) -> Option<String> {
    grant?.get(key)?.as_str().map(str::to_owned)
}

fn scopes(grant: Option<&Value>) -> Vec<String> {
    grant
        .and_then(|g| g.get("scopes"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn expires(grant: Option<&Value>) -> Option<i64> {
    grant?.get("expiresAt")?.as_f64().map(|s| s as i64)
}

type Refusal = (Option<TenantKey>, String, String);

/// `app-latest` → the bot record; `user-*-latest` → that user's record.
fn parse(
    origin: &str,
    bytes: &[u8],
    installed_at: i64,
    is_app: bool,
) -> Result<Option<ImportedRecord>, Refusal> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        (
            None,
            format!("{} bytes", bytes.len()),
            "not JSON: unreadable installation file".to_owned(),
        )
    })?;
    let Value::Object(map) = value else {
        return Err((
            None,
            "a JSON value that is not an object".into(),
            "unknown schema version".into(),
        ));
    };
    let (bot, user, hook) = (map.get("bot"), map.get("user"), map.get("incomingWebhook"));
    let tenant = tenant_of(&map);
    let user_id = str_field(user, "id");
    let mut holds = describe_ids(
        id_of(&map, "enterprise").as_deref(),
        id_of(&map, "team").as_deref(),
        user_id.as_deref(),
    );
    let fields: Vec<&str> = [
        ("bot token", str_field(bot, "token").is_some()),
        (
            "bot refresh token",
            str_field(bot, "refreshToken").is_some(),
        ),
        ("user token", str_field(user, "token").is_some()),
        (
            "user refresh token",
            str_field(user, "refreshToken").is_some(),
        ),
        ("incoming webhook", str_field(hook, "url").is_some()),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.then_some(n))
    .collect();
    holds.push_str(&format!(
        "; {}",
        if fields.is_empty() {
            "no token".to_owned()
        } else {
            fields.join(", ")
        }
    ));
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err((
            tenant,
            holds,
            format!(
                "unknown schema version (unknown keys {})",
                unknown.join(", ")
            ),
        ));
    }
    if map.get("authVersion").and_then(Value::as_str) == Some("v1") {
        return Err((
            tenant,
            holds,
            "classic app install (oauth.access, authVersion v1): not supported".into(),
        ));
    }
    let Some(tenant) = tenant else {
        return Err((
            None,
            holds,
            "malformed or missing team / enterprise id".into(),
        ));
    };
    let org = map
        .get("isEnterpriseInstall")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut meta = InstallationMeta {
        app_id: map.get("appId").and_then(Value::as_str).map(str::to_owned),
        enterprise_id: id_of(&map, "enterprise"),
        enterprise_name: name_of(&map, "enterprise"),
        enterprise_url: map
            .get("enterpriseUrl")
            .and_then(Value::as_str)
            .map(str::to_owned),
        team_id: id_of(&map, "team"),
        team_name: name_of(&map, "team"),
        bot_id: str_field(bot, "id"),
        bot_user_id: str_field(bot, "userId"),
        bot_scopes: scopes(bot),
        user_id: user_id.clone(),
        user_scopes: Vec::new(),
        token_type: None,
        is_enterprise_install: org,
        installed_at,
        status: Status::Active,
        token_expires_at: None,
        incoming_webhook_channel: None,
        incoming_webhook_channel_id: None,
        incoming_webhook_configuration_url: None,
    };
    let source_metadata = map
        .get("metadata")
        .filter(|m| !m.is_null())
        .map(|m| SourceMetadata::new(serde_json::json!({ "metadata": m }).to_string()));
    if is_app {
        let Some(bot) = bot.filter(|b| b.is_object()) else {
            // A user-token-only install: its user file carries the grant.
            return Ok(None);
        };
        let Some(token) = access(str_field(Some(bot), "token")) else {
            let why = match str_field(Some(bot), "token").as_deref() == Some(WIPED) {
                true => {
                    "bot token wiped by an earlier `migrate --wipe-source` (it lives in tokenkeep)"
                }
                false => "bot installation without its bot token",
            };
            return Err((Some(tenant), holds, why.into()));
        };
        meta.token_type = Some("bot".into());
        meta.token_expires_at = expires(Some(bot));
        let url = webhook(str_field(hook, "url"));
        if url.is_some() {
            meta.incoming_webhook_channel = str_field(hook, "channel");
            meta.incoming_webhook_channel_id = str_field(hook, "channelId");
            meta.incoming_webhook_configuration_url = str_field(hook, "configurationUrl");
        }
        let record = ImportedRecord {
            key: RecordKey::bot(tenant.clone()),
            meta,
            token,
            refresh_token: refresh(str_field(Some(bot), "refreshToken")),
            incoming_webhook_url: url,
            source_metadata,
        };
        return Ok(Some(record));
    }
    let Some(token) = access(str_field(user, "token")) else {
        if str_field(user, "token").as_deref() == Some(WIPED) {
            return Err((
                Some(tenant),
                holds,
                "user token wiped by an earlier `migrate --wipe-source` (it lives in tokenkeep)"
                    .into(),
            ));
        }
        if str_field(user, "refreshToken").is_some() {
            return Err((
                Some(tenant),
                holds,
                "user refresh token without its user token".into(),
            ));
        }
        return Ok(None);
    };
    let Some(key) = user_id
        .as_deref()
        .and_then(|u| RecordKey::user(tenant.clone(), u).ok())
    else {
        return Err((
            Some(tenant),
            holds,
            format!("malformed user id in {origin}"),
        ));
    };
    meta.user_scopes = scopes(user);
    meta.token_type = Some("user".into());
    meta.token_expires_at = expires(user);
    let record = ImportedRecord {
        key,
        meta,
        token,
        refresh_token: refresh(str_field(user, "refreshToken")),
        incoming_webhook_url: None,
        source_metadata,
    };
    Ok(Some(record))
}
