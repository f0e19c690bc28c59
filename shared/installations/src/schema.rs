//! Table layout: one installations table (single-table design) and one audit
//! table. `create_tables` and the SAM template both follow these names; a test
//! parses `template.yaml` and compares.

/// Partition key of both tables.
pub const PK: &str = "pk";
/// Sort key of both tables.
pub const SK: &str = "sk";
/// Sparse GSI over rotating installations, so the rotation sweep never scans.
pub const GSI_BY_EXPIRY: &str = "by_expiry";
/// GSI partition key: `EXP#{0..EXPIRY_SHARDS}`; set only on records with a rotating token.
pub const GSI_EXPIRY_PK: &str = "exp_shard";
/// GSI sort key: the earliest `expires_at` (unix seconds) among the record's rotating tokens.
pub const GSI_EXPIRY_SK: &str = "expires_at";
/// TTL attribute (unix seconds) on states, event ids and audit records.
pub const TTL_ATTRIBUTE: &str = "ttl";
/// Shards of the expiry index: spreads the sweep's reads over partitions.
pub const EXPIRY_SHARDS: u32 = 16;

/// Sort key of a bot installation.
pub const SK_BOT: &str = "BOT";
/// Sort-key prefix of user installations (`USER#{user_id}`).
pub const SK_USER_PREFIX: &str = "USER#";
/// Sort key of the tenant item holding the generation and tombstone.
pub const SK_TENANT: &str = "TENANT";
/// Sort-key prefix of a record's revocation tombstone: `REVOKED#` then the
/// record's own sort key (`REVOKED#BOT`, `REVOKED#USER#{user_id}`), in the
/// record's tenant partition. Neither `BOT` nor `USER#`, so no record query
/// or scan reads it; it carries no `exp_shard`, so the expiry index never
/// holds it.
pub const SK_REVOKED_PREFIX: &str = "REVOKED#";

/// Default table names for `tokenkeep dev` and tests.
pub const DEFAULT_TABLE: &str = "tokenkeep-installations";
pub const DEFAULT_AUDIT_TABLE: &str = "tokenkeep-audit";

/// How long an OAuth state is valid.
pub const STATE_TTL_SECS: i64 = 600;
/// How long an event id is remembered for retry dedupe (Slack retries within minutes).
pub const EVENT_TTL_SECS: i64 = 3600;
/// How long audit records are kept.
pub const AUDIT_TTL_SECS: i64 = 90 * 24 * 3600;

/// The expiry shard of a tenant partition key: a stable hash, so every record of
/// a tenant lands in the same shard.
pub fn expiry_shard(pk: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(pk.as_bytes());
    format!("EXP#{}", u32::from(digest[0]) % EXPIRY_SHARDS)
}
