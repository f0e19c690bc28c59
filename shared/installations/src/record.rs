//! What a repository stores: sealed records, tenant generations, and the
//! conditions writes are made under. Repositories never see plaintext secrets.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{InstallationMeta, RecordKey};

/// Sealed field names. They are part of each field's AAD.
pub mod field {
    pub const TOKEN: &str = "token";
    pub const REFRESH_TOKEN: &str = "refresh_token";
    pub const INCOMING_WEBHOOK_URL: &str = "incoming_webhook_url";
    /// Custom values / metadata an imported record carried in its source store.
    /// Sealed: nobody can vouch that they hold no secret.
    pub const SOURCE_METADATA: &str = "source_metadata";
}

/// One installation item as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRecord {
    pub pk: String,
    pub sk: String,
    /// +1 on every write that changes sealed data or bound attributes.
    pub version: u64,
    /// The tenant generation this record belongs to (see [`TenantState`]).
    pub generation: u64,
    #[serde(flatten)]
    pub meta: InstallationMeta,
    /// The data key, wrapped by the key provider (base64), and the key that wraps it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_key: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_key_id: String,
    /// Sealed fields (base64 of the sealed bytes), by field name.
    #[serde(default)]
    pub sealed: BTreeMap<String, String>,
    /// How the fields' AAD is built. From [`RECORD_FORMAT`] on, every field's
    /// AAD names the whole set of sealed fields, so deleting one (say the
    /// refresh token, to have an expired token served as if it didn't rotate)
    /// makes the others fail to open. Items written before carry no attribute
    /// (format 1) and open as they were sealed; their next write re-seals.
    #[serde(default = "legacy_format")]
    pub format: u8,
    /// Expiry index keys; present only when the record holds a rotating token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp_shard: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Refresh lease; changed without re-sealing, so not bound into the AAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
}

/// The record format new writes use (see [`StoredRecord::format`]).
pub const RECORD_FORMAT: u8 = 2;

fn legacy_format() -> u8 {
    1
}

impl StoredRecord {
    pub fn key(&self) -> Result<RecordKey, crate::TenantError> {
        RecordKey::from_keys(&self.pk, &self.sk)
    }
}

/// The tenant item: which generation is live, and whether it was purged.
///
/// A purge marks the tenant (a tombstone) before deleting its records; a new
/// install opens generation + 1. Records of another generation, or of a purged
/// one, can't be created: that is what keeps a late OAuth callback, a stale
/// refresh or an import from a backup from bringing an uninstalled tenant back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    pub generation: u64,
    pub purged: bool,
    /// When the generation was first purged, unix milliseconds (an install
    /// whose code exchange started before it is refused). Tombstones written
    /// by older versions hold seconds, which read as long ago: they refuse nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<i64>,
}

/// The condition a record write is made under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Create: no record under this key, and the tenant's live generation is
    /// the record's generation and not purged.
    Absent,
    /// As `Absent`, and the key's revocation tombstone (if any) is older than
    /// the record's `installed_at`. The import paths create with it: a copy
    /// taken before a revocation can't land after the check that read the
    /// tombstone, however a `tokens_revoked` interleaves with the import.
    AbsentNotRevoked,
    /// Replace the record that has exactly this version and generation.
    Version { version: u64, generation: u64 },
    /// As `Version`, and the caller still holds the refresh lease.
    Leased {
        version: u64,
        generation: u64,
        owner: String,
    },
}
