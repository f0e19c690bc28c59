//! `slack-sdk-file` and `slack-sdk-s3`: slack_sdk's `FileInstallationStore`
//! (a directory) and `AmazonS3InstallationStore` (a bucket). Both write the
//! same layout: per tenant a folder `{enterprise or none}-{team or none}` (in
//! S3 under the client id; in a directory under it when the store was given
//! one) holding `bot-latest`, `installer-latest`, `installer-{user}-latest`
//! and, with history on, timestamped copies. Each object is the JSON of the
//! model's attributes, `custom_values` included. The `*-latest` objects are
//! what the store's `find_*` methods read, so they are what is imported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::{Map, Value};
use tokenkeep_installations::{SourceMetadata, TenantKey};

use super::objects::Objects;
use super::sdk::{Latest, SdkEntry, access, is_wiped, refresh, webhook};
use super::source::{Scan, WIPED, parse_time_micros, secs_to_micros, split_scopes};
use crate::exit::Failure;

const INSTALLATION_KEYS: &[&str] = &[
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "enterprise_url",
    "team_id",
    "team_name",
    "bot_token",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_refresh_token",
    "bot_token_expires_at",
    "user_id",
    "user_token",
    "user_scopes",
    "user_refresh_token",
    "user_token_expires_at",
    "incoming_webhook_url",
    "incoming_webhook_channel",
    "incoming_webhook_channel_id",
    "incoming_webhook_configuration_url",
    "is_enterprise_install",
    "token_type",
    "installed_at",
    "custom_values",
];
const BOT_KEYS: &[&str] = &[
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "team_id",
    "team_name",
    "bot_token",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_refresh_token",
    "bot_token_expires_at",
    "is_enterprise_install",
    "installed_at",
    "custom_values",
];

/// A slack_sdk file or S3 store.
#[derive(Debug, Clone)]
pub struct SdkObjectStore {
    objects: Objects,
    /// Where the tenant folders are: `""` or `"{client_id}/"`.
    prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Bot,
    Installer,
    User,
    History,
}

fn classify(name: &str) -> Option<ObjectKind> {
    match name {
        "bot-latest" => Some(ObjectKind::Bot),
        "installer-latest" => Some(ObjectKind::Installer),
        n if n.starts_with("installer-") && n.ends_with("-latest") => Some(ObjectKind::User),
        n if n.starts_with("bot-") || n.starts_with("installer-") => Some(ObjectKind::History),
        _ => None,
    }
}

impl SdkObjectStore {
    /// A `FileInstallationStore` base directory. With a client id the store
    /// writes under `{base_dir}/{client_id}`; that folder is used when present.
    pub fn file(location: &str, client_id: &str) -> Result<Self, Failure> {
        let base = PathBuf::from(location);
        if !base.is_dir() {
            return Err(Failure::msg(format!(
                "{}: no such directory",
                base.display()
            )));
        }
        let per_app = base.join(client_id);
        let root = if per_app.is_dir() { per_app } else { base };
        Ok(Self {
            objects: Objects::Dir { root },
            prefix: String::new(),
        })
    }

    /// An `AmazonS3InstallationStore` bucket (`s3://bucket` or `bucket`); its
    /// keys start with the client id.
    pub fn s3(
        location: &str,
        client_id: &str,
        aws: &aws_config::SdkConfig,
    ) -> Result<Self, Failure> {
        let bucket = location
            .strip_prefix("s3://")
            .unwrap_or(location)
            .trim_end_matches('/');
        if bucket.is_empty() || bucket.contains('/') {
            return Err(Failure::config(format!(
                "{location:?}: expected s3://BUCKET (the store's keys start with the client id)"
            )));
        }
        let mut config = aws_sdk_s3::config::Builder::from(aws);
        // Emulators (AWS_ENDPOINT_URL) serve path-style requests only.
        if aws.endpoint_url().is_some() {
            config = config.force_path_style(true);
        }
        let client = aws_sdk_s3::Client::from_conf(config.build());
        Ok(Self {
            objects: Objects::S3 {
                client,
                bucket: bucket.to_owned(),
            },
            prefix: format!("{client_id}/"),
        })
    }

    pub fn describe(&self) -> String {
        match &self.objects {
            Objects::S3 { .. } => format!("{}/{}", self.objects.describe(), self.prefix),
            Objects::Dir { .. } => self.objects.describe(),
        }
    }

    pub async fn scan(&self) -> Result<Scan, Failure> {
        let keys = self.objects.list(&self.prefix).await?;
        let mut scan = Scan::default();
        let mut latest = Latest::default();
        for key in &keys {
            let Some((_, name)) = key.rsplit_once('/') else {
                continue;
            };
            let Some(kind) = classify(name) else { continue };
            scan.entries_read += 1;
            if kind == ObjectKind::History {
                continue;
            }
            let bytes = match self.objects.get(key).await {
                Ok(b) => b,
                Err(why) => {
                    scan.skip(key, "an object of the store", why);
                    continue;
                }
            };
            let known = if kind == ObjectKind::Bot {
                BOT_KEYS
            } else {
                INSTALLATION_KEYS
            };
            let entry = match parse_entry(key, &bytes, known) {
                Ok(e) => e,
                Err((holds, why)) => {
                    scan.skip(key, holds, why);
                    continue;
                }
            };
            match kind {
                ObjectKind::Bot => latest.offer_bot(&mut scan, entry),
                ObjectKind::Installer => latest.offer_installation(&mut scan, entry, false, true),
                ObjectKind::User => latest.offer_installation(&mut scan, entry, true, true),
                ObjectKind::History => {}
            }
        }
        latest.into_candidates(&mut scan);
        Ok(scan)
    }

    /// Rewrites every object (latest and history) in the folders of the given
    /// tenants with its token fields overwritten. Returns the objects rewritten.
    pub async fn wipe(
        &self,
        tenants: &BTreeSet<TenantKey>,
    ) -> Result<(usize, Option<String>), Failure> {
        let keys = self.objects.list(&self.prefix).await?;
        let mut by_folder: BTreeMap<&str, Vec<&String>> = BTreeMap::new();
        for key in &keys {
            if let Some((folder, name)) = key.rsplit_once('/')
                && classify(name).is_some()
            {
                by_folder.entry(folder).or_default().push(key);
            }
        }
        let mut rewritten = 0;
        for (folder, keys) in by_folder {
            // A folder is the tenant its latest objects say it is.
            let mut tenant = None;
            for key in keys.iter().filter(|k| k.ends_with("-latest")) {
                if let Ok(bytes) = self.objects.get(key).await
                    && let Ok(entry) = parse_entry(key, &bytes, INSTALLATION_KEYS)
                {
                    tenant = entry.tenant().ok();
                    break;
                }
            }
            if !tenant.is_some_and(|t| tenants.contains(&t)) {
                tracing::debug!(folder, "not wiped: tenant not verified in tokenkeep");
                continue;
            }
            for key in keys {
                let Ok(bytes) = self.objects.get(key).await else {
                    continue;
                };
                let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(&bytes) else {
                    continue;
                };
                if wipe_fields(&mut map) {
                    self.objects
                        .put(key, serde_json::to_vec(&Value::Object(map))?)
                        .await?;
                    rewritten += 1;
                }
            }
        }
        Ok((rewritten, self.objects.versioning_warning().await))
    }
}

/// Overwrites the token fields of one slack_sdk JSON object; `true` if any changed.
fn wipe_fields(map: &mut Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, marker) in [
        ("bot_token", true),
        ("user_token", true),
        ("bot_refresh_token", false),
        ("user_refresh_token", false),
        ("incoming_webhook_url", false),
    ] {
        if let Some(v) = map.get_mut(name) {
            let wiped = if marker {
                Value::String(WIPED.into())
            } else {
                Value::Null
            };
            if !v.is_null() && *v != wiped {
                *v = wiped;
                changed = true;
            }
        }
    }
    changed
}

fn string(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn scopes(map: &Map<String, Value>, key: &str) -> Vec<String> {
    match map.get(key) {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => split_scopes(s),
        _ => Vec::new(),
    }
}

/// Unix seconds (µs) from a number or an ISO string; `Err` if present but unreadable.
fn time(map: &Map<String, Value>, key: &str) -> Result<Option<i64>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .and_then(secs_to_micros)
            .map(Some)
            .ok_or_else(|| format!("unreadable {key}")),
        Some(Value::String(s)) => parse_time_micros(s)
            .map(Some)
            .ok_or_else(|| format!("unreadable {key}")),
        Some(_) => Err(format!("unreadable {key}")),
    }
}

/// One object as an entry, or (what it holds, why it is skipped).
fn parse_entry(origin: &str, bytes: &[u8], known: &[&str]) -> Result<SdkEntry, (String, String)> {
    let value: Value = serde_json::from_slice(bytes).map_err(|_| {
        (
            format!("{} bytes", bytes.len()),
            "not JSON: unreadable object".to_owned(),
        )
    })?;
    let Value::Object(map) = value else {
        return Err((
            "a JSON value that is not an object".into(),
            "unknown schema version".into(),
        ));
    };
    let mut entry = SdkEntry {
        origin: origin.to_owned(),
        app_id: string(&map, "app_id"),
        enterprise_id: string(&map, "enterprise_id"),
        enterprise_name: string(&map, "enterprise_name"),
        enterprise_url: string(&map, "enterprise_url"),
        team_id: string(&map, "team_id"),
        team_name: string(&map, "team_name"),
        bot_token: access(string(&map, "bot_token")),
        bot_id: string(&map, "bot_id"),
        bot_user_id: string(&map, "bot_user_id"),
        bot_scopes: scopes(&map, "bot_scopes"),
        bot_refresh_token: refresh(string(&map, "bot_refresh_token")),
        user_id: string(&map, "user_id"),
        user_token: access(string(&map, "user_token")),
        user_scopes: scopes(&map, "user_scopes"),
        user_refresh_token: refresh(string(&map, "user_refresh_token")),
        incoming_webhook_url: webhook(string(&map, "incoming_webhook_url")),
        incoming_webhook_channel: string(&map, "incoming_webhook_channel"),
        incoming_webhook_channel_id: string(&map, "incoming_webhook_channel_id"),
        incoming_webhook_configuration_url: string(&map, "incoming_webhook_configuration_url"),
        is_enterprise_install: map
            .get("is_enterprise_install")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        bot_wiped: is_wiped(&string(&map, "bot_token")),
        user_wiped: is_wiped(&string(&map, "user_token")),
        token_type: string(&map, "token_type"),
        custom_values: match map.get("custom_values") {
            Some(Value::Object(c)) if !c.is_empty() => {
                Some(SourceMetadata::new(Value::Object(c.clone()).to_string()))
            }
            _ => None,
        },
        ..SdkEntry::default()
    };
    let holds = entry.holds();
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err((
            holds,
            format!(
                "unknown schema version (unknown keys {})",
                unknown.join(", ")
            ),
        ));
    }
    let installed = time(&map, "installed_at").map_err(|e| (holds.clone(), e))?;
    let Some(installed) = installed else {
        return Err((holds, "no installed_at".into()));
    };
    entry.order = (installed, 0);
    entry.bot_token_expires_at = time(&map, "bot_token_expires_at")
        .map_err(|e| (holds.clone(), e))?
        .map(|m| m.div_euclid(1_000_000));
    entry.user_token_expires_at = time(&map, "user_token_expires_at")
        .map_err(|e| (holds, e))?
        .map(|m| m.div_euclid(1_000_000));
    Ok(entry)
}
