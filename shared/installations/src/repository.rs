use async_trait::async_trait;

use crate::{AuditRecord, Expect, RecordKey, RepoError, StoredRecord, TenantState};

/// A position in the expiry index: the last due key a page returned and its
/// expiry (the index's sort key). Opaque to callers; pass it back to
/// [`Repository::query_due`] for the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueCursor {
    pub(crate) expires_at: i64,
    pub(crate) key: RecordKey,
}

/// Storage for sealed records, tenant generations, record revocation
/// tombstones, OAuth states, event ids and audit records. Implementations: [`crate::DynamoRepository`],
/// [`crate::EmbeddedRepository`]; both pass `tests/repository_conformance.rs`.
///
/// Every write is conditional; a failed condition is `RepoError::ConditionFailed`
/// and changes nothing. Times are unix seconds unless named `_ms`.
#[async_trait]
pub trait Repository: Send + Sync + std::fmt::Debug {
    /// Strongly consistent read of one record.
    async fn get(&self, key: &RecordKey) -> Result<Option<StoredRecord>, RepoError>;

    /// A record and its tenant's state, read together (the token read checks
    /// the record belongs to the live generation). Strongly consistent; the
    /// default makes both reads concurrently, DynamoDB makes one round trip.
    async fn get_with_tenant(
        &self,
        key: &RecordKey,
    ) -> Result<(Option<StoredRecord>, Option<TenantState>), RepoError> {
        let pk = key.pk();
        let (record, tenant) = tokio::join!(self.get(key), self.tenant_state(&pk));
        Ok((record?, tenant?))
    }

    /// Every installation record (bot and users) of a tenant partition.
    async fn list_tenant(&self, pk: &str) -> Result<Vec<StoredRecord>, RepoError>;

    /// Writes a whole record under `expect` (see [`Expect`]). A successful write
    /// clears any refresh lease.
    async fn put(&self, record: &StoredRecord, expect: Expect) -> Result<(), RepoError>;

    /// Deletes one record if present; returns whether it existed. Leaves no
    /// trace: for a grant Slack or an operator revoked use [`Repository::revoke`].
    async fn delete(&self, key: &RecordKey) -> Result<bool, RepoError>;

    /// Revokes one record: deletes it if present and leaves its revocation
    /// tombstone (`revoked_at`, unix seconds), in one atomic write. Returns
    /// whether a record existed. Idempotent; a tombstone only moves later
    /// (a revoke older than the stored tombstone keeps the stored time and
    /// still deletes the record).
    ///
    /// The tombstone is what stops an import or a migration from bringing back
    /// a copy of the record taken before the revocation (see
    /// [`Expect::AbsentNotRevoked`]). It is not a record: no record read,
    /// listing, scan or index returns it, and a tenant purge keeps it.
    async fn revoke(&self, key: &RecordKey, revoked_at: i64) -> Result<bool, RepoError>;

    /// When the record at `key` was last revoked, if ever (strongly consistent).
    async fn revoked_at(&self, key: &RecordKey) -> Result<Option<i64>, RepoError>;

    /// Writes a revocation tombstone without touching the record, unless the
    /// stored one is as late or later; returns whether it wrote. For the
    /// export import (tombstones survive a restore) and for a revocation
    /// older than the grant now stored (its older copies stay revoked).
    async fn restore_revocation(&self, key: &RecordKey, revoked_at: i64)
    -> Result<bool, RepoError>;

    /// Every revocation tombstone, by record key (for export, like
    /// [`Repository::scan_tenants`]).
    async fn scan_revocations(&self) -> Result<Vec<(RecordKey, i64)>, RepoError>;

    /// The tenant's generation state, if it was ever installed or purged.
    async fn tenant_state(&self, pk: &str) -> Result<Option<TenantState>, RepoError>;

    /// The generation new records of this tenant must carry: the live one, or
    /// a new one (previous + 1) when the tenant is purged or unknown.
    async fn open_generation(&self, pk: &str) -> Result<u64, RepoError>;

    /// Marks the tenant purged (tombstone, `purged_at` = `now_ms` unless
    /// already set) and deletes all its records. Idempotent; returns how many
    /// records were deleted.
    ///
    /// Revocation tombstones of the tenant's records are kept: the tenant
    /// tombstone covers the purged generation, but only a record's own
    /// tombstone still refuses its pre-revocation copy once the tenant is
    /// reinstalled (a new generation, into which a migration creates records).
    async fn purge_tenant(&self, pk: &str, now_ms: i64) -> Result<usize, RepoError>;

    /// Takes the refresh lease on a record at `version`/`generation` if nobody
    /// else holds an unexpired one, or renews it (new `until`) if `owner`
    /// already holds it. Does not change the version. `Ok(false)` when the
    /// version moved, the record is gone, or someone else holds the lease.
    ///
    /// Renewal is what the refresh path calls right before Slack: a holder
    /// whose lease ran out during a stalled KMS call learns here that someone
    /// else took over (the version moved or their lease is live) and never
    /// sends the refresh token they may have spent already.
    async fn try_lease(
        &self,
        key: &RecordKey,
        version: u64,
        generation: u64,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, RepoError>;

    /// Drops the lease if `owner` holds it (a failed refresh lets others try).
    async fn release_lease(&self, key: &RecordKey, owner: &str) -> Result<(), RepoError>;

    /// Keys of records whose rotating token expires at or before `before`, in one
    /// expiry shard (index query, never a scan), earliest expiry first, at most
    /// `limit`, starting after `after`. The cursor of the answer is where the next
    /// page starts (`None`: the shard has nothing more), so a sweep reads each due
    /// key once however many stay due (DynamoDB's `LastEvaluatedKey`).
    async fn query_due(
        &self,
        shard: &str,
        before: i64,
        after: Option<&DueCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<DueCursor>), RepoError>;

    /// A page of all records (operator commands: list, verify, rekey, export).
    async fn scan_records(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<(String, String)>), RepoError>;

    /// All tenant states (for export, so tombstones survive a restore).
    async fn scan_tenants(&self) -> Result<Vec<(String, TenantState)>, RepoError>;

    /// Restores a tenant state unless the stored one is newer (higher generation,
    /// or the same generation already purged).
    async fn restore_tenant(&self, pk: &str, state: TenantState) -> Result<bool, RepoError>;

    /// Stores an OAuth state nonce until `expires_at`.
    async fn put_state(&self, nonce: &str, expires_at: i64) -> Result<(), RepoError>;

    /// Consumes a state exactly once: `true` for the single caller that deletes
    /// an unexpired state, `false` for unknown, expired or already consumed.
    async fn consume_state(&self, nonce: &str, now: i64) -> Result<bool, RepoError>;

    /// Records an event id; `true` the first time, `false` for a retry.
    async fn record_event(
        &self,
        event_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, RepoError>;

    /// Whether an unexpired event id was recorded, without recording it
    /// (lifecycle events are recorded only once they took effect).
    async fn event_seen(&self, event_id: &str, now: i64) -> Result<bool, RepoError>;

    /// Durably appends one audit record.
    async fn append_audit(&self, record: &AuditRecord, expires_at: i64) -> Result<(), RepoError>;

    /// Appends an audit record and records `event_id` (as [`Repository::record_event`])
    /// in one atomic write: `Ok(true)` when both were written, `Ok(false)` when
    /// the event id was already recorded and unexpired (nothing written), an
    /// error when neither was. The events path's token read and dedupe claim
    /// are one write this way: a failure leaves no claim behind that would
    /// turn Slack's retry into a silent drop.
    async fn append_audit_claiming(
        &self,
        record: &AuditRecord,
        expires_at: i64,
        event_id: &str,
        now: i64,
        event_expires_at: i64,
    ) -> Result<bool, RepoError>;

    /// Audit records since `since_ms`, for one tenant or all, oldest first.
    async fn query_audit(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, RepoError>;
}
