//! Single-flight token refresh.
//!
//! Slack refresh tokens are single-use and at most two access tokens are active
//! per installation, so two concurrent refreshes revoke a token another request
//! still holds. Refresh therefore happens once, at two levels:
//!
//! 1. In one process, one refresh per record at a time: callers for the same
//!    record queue on a per-key async mutex and re-read after it, finding the
//!    new version instead of refreshing again.
//! 2. Across processes, a lease on the record (conditional update on `version`,
//!    no live lease). Only the holder calls Slack; it seals the new pair under a
//!    fresh data key and writes it with `version + 1`, conditioned on still
//!    holding the lease (so an uninstall, which deletes the record, wins). The
//!    new pair is durable before any caller sees the new token. Others re-read
//!    until the version moves or the lease expires (then they take it over).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokenkeep_slack_api::{RefreshToken, SlackOAuth};
use zeroize::Zeroizing;

use crate::record::field;
use crate::{
    AuditRecord, Expect, InstallationStore, Outcome, RecordKey, RecordKind, RepoError, Status,
    StoreError, StoredRecord, TokenKind,
};

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct RefreshMetrics {
    /// Successful refreshes this process made at Slack.
    pub refreshed: AtomicU64,
    /// Refreshes Slack refused or that failed.
    pub failed: AtomicU64,
    /// Installations marked `needs_reinstall`.
    pub needs_reinstall: AtomicU64,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct RefreshState {
    pub(crate) slack: Option<Arc<dyn SlackOAuth>>,
    locks: Arc<Mutex<HashMap<RecordKey, Arc<tokio::sync::Mutex<()>>>>>,
    owner: Arc<OwnerId>,
    pub(crate) metrics: Arc<RefreshMetrics>,
}

/// Lease owner id: random per store instance (per Lambda sandbox / process).
#[derive(Debug)]
struct OwnerId(String);
impl Default for OwnerId {
    fn default() -> Self {
        Self(hex::encode(rand::random::<[u8; 12]>()))
    }
}

/// What the rotation sweep did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    Refreshed,
    /// Not due (any more): someone refreshed it already, or it isn't rotating.
    NotDue,
    /// Another process holds the lease; it will refresh.
    HeldElsewhere,
    /// Gone (uninstalled) or marked needs_reinstall.
    Gone,
}

/// How long a loser waits between re-reads while another process refreshes.
const POLL: Duration = Duration::from_millis(50);

enum Need {
    /// Refresh if expired; wait for another holder (request path).
    Expired,
    /// Refresh if due within the window; don't wait for another holder (sweep, background).
    Due,
}

enum Step {
    /// A usable record (fresh, or refreshed by us or someone else).
    Fresh(Box<StoredRecord>),
    HeldElsewhere,
    NotDue,
}

impl InstallationStore {
    pub fn refresh_metrics(&self) -> &RefreshMetrics {
        &self.refresh.metrics
    }

    fn key_lock(&self, key: &RecordKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.refresh.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    fn drop_key_lock(&self, key: &RecordKey) {
        let mut locks = self.refresh.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map and no waiter hold it: nobody else is queued for this key.
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    /// Request path: the token expired; returns the new token (and version) or fails.
    pub(crate) async fn refresh_blocking(
        &self,
        key: &RecordKey,
        seen: StoredRecord,
    ) -> Result<(String, u64), StoreError> {
        let record = match self.refresh_record(key, seen, Need::Expired).await? {
            Step::Fresh(r) => r,
            Step::HeldElsewhere | Step::NotDue => return Err(StoreError::Expired),
        };
        let token = self
            .open_field(&record, field::TOKEN)
            .await?
            .ok_or(StoreError::NotInstalled)?;
        let token = String::from_utf8(token.to_vec()).map_err(|_| StoreError::Integrity)?;
        Ok((token, record.version))
    }

    /// Due-but-valid: refresh on a background task; the caller doesn't wait.
    pub(crate) fn refresh_in_background(&self, key: RecordKey) {
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        // Fix: the per-key lock is taken here, before spawning, and handed to
        // the task. Checking it with a `try_lock` that was dropped at once let
        // every concurrent reader pass the check before the first task ran, so
        // a burst of N reads spawned N rotations (each a table read and a lease
        // attempt, only the first of them useful).
        let lock = self.key_lock(&key);
        let Ok(guard) = lock.clone().try_lock_owned() else {
            // Someone in this process is already refreshing it: nothing to start.
            return;
        };
        drop(lock);
        let store = self.clone();
        tokio::spawn(async move {
            let result = store.rotate_locked(&key).await;
            drop(guard);
            store.drop_key_lock(&key);
            if let Err(e) = result {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, "background refresh failed");
            }
        });
    }

    /// Rotation sweep: refreshes the record if it is due, unless another
    /// process holds its lease. Same single-flight path as the request path.
    pub async fn rotate(&self, key: &RecordKey) -> Result<RotateOutcome, StoreError> {
        let lock = self.key_lock(key);
        let result = {
            let _one_per_process = lock.lock().await;
            self.rotate_locked(key).await
        };
        drop(lock);
        self.drop_key_lock(key);
        result
    }

    /// `rotate` with the per-key lock held: the record is read under the lock,
    /// so a refresh this process just finished is seen, not repeated.
    async fn rotate_locked(&self, key: &RecordKey) -> Result<RotateOutcome, StoreError> {
        let Some(seen) = self.repository().get(key).await? else {
            return Ok(RotateOutcome::Gone);
        };
        if seen.meta.status == Status::NeedsReinstall {
            return Ok(RotateOutcome::Gone);
        }
        let version = seen.version;
        match self.refresh_under_lock(key, seen, Need::Due, false).await {
            Ok(Step::Fresh(r)) if r.version > version => Ok(RotateOutcome::Refreshed),
            Ok(Step::Fresh(_)) | Ok(Step::NotDue) => Ok(RotateOutcome::NotDue),
            Ok(Step::HeldElsewhere) => Ok(RotateOutcome::HeldElsewhere),
            Err(StoreError::NotInstalled | StoreError::NeedsReinstall) => Ok(RotateOutcome::Gone),
            Err(e) => Err(e),
        }
    }

    fn needs(&self, record: &StoredRecord, need: &Need, now: i64) -> bool {
        if !record.sealed.contains_key(field::REFRESH_TOKEN) {
            return false;
        }
        match (record.meta.token_expires_at, need) {
            (Some(t), Need::Expired) => t <= now,
            (Some(t), Need::Due) => t - self.config().refresh_window_secs <= now,
            (None, _) => false,
        }
    }

    async fn refresh_record(
        &self,
        key: &RecordKey,
        seen: StoredRecord,
        need: Need,
    ) -> Result<Step, StoreError> {
        let lock = self.key_lock(key);
        let result = {
            // Fix: a caller that had to queue behind another refresh in this
            // process re-reads before deciding. `seen` predates that refresh;
            // acting on it made every queued caller fail its lease attempt on
            // the stale version and then sleep a full POLL while still holding
            // the lock, so N readers of one expired token waited ~N x 50 ms in
            // turn (64 readers: over 3 s, past Slack's 3 s ack deadline).
            let (_one_per_process, queued) = match lock.try_lock() {
                Ok(guard) => (guard, false),
                Err(_) => (lock.lock().await, true),
            };
            self.refresh_under_lock(key, seen, need, queued).await
        };
        drop(lock);
        self.drop_key_lock(key);
        result
    }

    async fn refresh_under_lock(
        &self,
        key: &RecordKey,
        mut record: StoredRecord,
        need: Need,
        reread: bool,
    ) -> Result<Step, StoreError> {
        let lease_secs = self.config().lease_secs;
        // Bounded wait: one full lease (a dead holder's lease runs out) plus slack.
        let deadline = self.clock().now_millis() + (lease_secs + 5) * 1000;
        let mut first = !reread;
        loop {
            if !first {
                record = self
                    .repository()
                    .get(key)
                    .await?
                    .ok_or(StoreError::NotInstalled)?;
            }
            first = false;
            if record.meta.status == Status::NeedsReinstall {
                return Err(StoreError::NeedsReinstall);
            }
            let now = self.clock().now_secs();
            if !self.needs(&record, &need, now) {
                return Ok(match need {
                    Need::Expired => Step::Fresh(Box::new(record)),
                    Need::Due => Step::NotDue,
                });
            }
            let owner = self.refresh.owner.0.as_str();
            if self
                .repository()
                .try_lease(
                    key,
                    record.version,
                    record.generation,
                    owner,
                    now,
                    now + lease_secs,
                )
                .await?
            {
                return self
                    .refresh_with_lease(key, record, owner)
                    .await
                    .map(|r| Step::Fresh(Box::new(r)));
            }
            if matches!(need, Need::Due) {
                return Ok(Step::HeldElsewhere);
            }
            if self.clock().now_millis() >= deadline {
                return Err(StoreError::Expired);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// We hold the lease: call Slack once, persist the new pair, then return it.
    async fn refresh_with_lease(
        &self,
        key: &RecordKey,
        record: StoredRecord,
        owner: &str,
    ) -> Result<StoredRecord, StoreError> {
        let slack = self.refresh.slack.clone().ok_or(StoreError::Expired);
        let outcome = match slack {
            Ok(slack) => {
                self.call_slack_and_persist(&*slack, key, &record, owner)
                    .await
            }
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            // Fix: a failure before the Slack call (KMS down while opening the
            // refresh token) or after it (sealing, the write) returned with the
            // lease still held, so every reader of the expired token polled
            // until it ran out (lease_secs + 5 s, far past Slack's 3 s ack) even
            // once KMS was back. Releasing is idempotent and only drops our
            // own lease; the paths that already released it are unaffected.
            if let Err(e) = self.repository().release_lease(key, owner).await {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, "could not release the refresh lease");
            }
        }
        let audit_outcome = match &outcome {
            Ok(_) => Outcome::Ok,
            Err(StoreError::Integrity) => Outcome::DecryptFailed,
            Err(_) => Outcome::RefreshFailed,
        };
        let user_id = match &key.kind {
            RecordKind::User(u) => Some(u.clone()),
            RecordKind::Bot => None,
        };
        // The refresh token was read: that is audited like any token read.
        self.audit(AuditRecord {
            tenant: key.pk(),
            at_ms: self.clock().now_millis(),
            token_kind: if user_id.is_some() {
                TokenKind::User
            } else {
                TokenKind::Bot
            },
            user_id,
            actor: "tokenkeep-refresh".into(),
            request_id: owner.to_owned(),
            reason: "refresh".into(),
            outcome: audit_outcome,
            version: record.version,
        })
        .await?;
        outcome
    }

    async fn call_slack_and_persist(
        &self,
        slack: &dyn SlackOAuth,
        key: &RecordKey,
        record: &StoredRecord,
        owner: &str,
    ) -> Result<StoredRecord, StoreError> {
        let mut fields: Vec<(String, Zeroizing<Vec<u8>>)> = Vec::new();
        for name in record.sealed.keys() {
            if let Some(v) = self.open_field(record, name).await? {
                fields.push((name.clone(), v));
            }
        }
        let refresh_token = fields
            .iter()
            .find(|(n, _)| n == field::REFRESH_TOKEN)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(RefreshToken::new)
            .ok_or(StoreError::Integrity)?;

        // The new pair's data key comes first: once Slack answers, the old
        // refresh token is spent, so nothing that can fail (KMS) may stand
        // between Slack's answer and the conditional write.
        let data_key = self.new_data_key(key).await?;
        let response = match slack.refresh(&refresh_token).await {
            Ok(r) => r,
            Err(e) if e.is_revoked() => {
                // The grant is dead: mark it, never fall back to the old token.
                self.refresh.metrics.failed.fetch_add(1, Ordering::Relaxed);
                self.refresh
                    .metrics
                    .needs_reinstall
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), metric = "RefreshFailed", slack_error = %e,
                    "refresh refused by slack; installation needs reinstall");
                self.mark_needs_reinstall(key, record, owner).await?;
                return Err(StoreError::Refresh(e));
            }
            Err(e) => {
                // Not retried: the refresh token is single-use and Slack may have
                // acted on this call (timeout, 5xx). The lease is released so the
                // next reader retries with the stored refresh token; if Slack did
                // rotate, that retry gets invalid_refresh_token and the installation
                // is marked needs_reinstall rather than silently using a stale token.
                self.refresh.metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), metric = "RefreshFailed", slack_error = %e,
                    ambiguous = e.is_ambiguous(), "refresh failed");
                self.repository().release_lease(key, owner).await?;
                return Err(StoreError::Refresh(e));
            }
        };
        let (Some(access), Some(refresh)) = (
            response.access_token.as_ref(),
            response.refresh_token.as_ref(),
        ) else {
            self.repository().release_lease(key, owner).await?;
            return Err(StoreError::Invalid("refresh answer without a token pair"));
        };
        let now = self.clock().now_secs();
        let mut meta = record.meta.clone();
        meta.token_expires_at = response.expires_in.map(|s| now + s);
        let mut secrets: Vec<(&str, &str)> = Vec::with_capacity(fields.len());
        for (name, value) in &fields {
            let value = match name.as_str() {
                field::TOKEN => access.expose_secret(),
                field::REFRESH_TOKEN => refresh.expose_secret(),
                _ => std::str::from_utf8(value).map_err(|_| StoreError::Integrity)?,
            };
            secrets.push((name.as_str(), value));
        }
        let next = self.seal_record_with(
            Some(data_key),
            key,
            meta,
            record.version + 1,
            record.generation,
            &secrets,
        )?;
        let expect = Expect::Leased {
            version: record.version,
            generation: record.generation,
            owner: owner.to_owned(),
        };
        match self.repository().put(&next, expect).await {
            Ok(()) => {
                self.refresh
                    .metrics
                    .refreshed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(tenant = %key.pk(), sk = %key.sk(), version = next.version, "token refreshed");
                Ok(next)
            }
            // Uninstalled (record deleted) or lease lost while we were at Slack:
            // the uninstall wins and nothing is resurrected.
            Err(RepoError::ConditionFailed) => {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), "refresh result discarded: record changed or gone");
                Err(StoreError::NotInstalled)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn mark_needs_reinstall(
        &self,
        key: &RecordKey,
        record: &StoredRecord,
        owner: &str,
    ) -> Result<(), StoreError> {
        let mut meta = record.meta.clone();
        meta.status = Status::NeedsReinstall;
        meta.token_expires_at = None;
        // No secrets kept: the grant is dead, and a dead token has no use here.
        let next = self
            .seal_record(key, meta, record.version + 1, record.generation, &[])
            .await?;
        let expect = Expect::Leased {
            version: record.version,
            generation: record.generation,
            owner: owner.to_owned(),
        };
        match self.repository().put(&next, expect).await {
            Ok(()) | Err(RepoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
