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
//!
//! Between Slack's answer and the write the new pair exists only in this
//! process: the old refresh token is spent. So, in order:
//!
//! - everything that can stall or fail (opening the record, the new data key)
//!   happens before the Slack call;
//! - right before it the lease is renewed unless it was taken under a second
//!   ago (a holder whose lease ran out while KMS stalled finds someone else
//!   took over and never sends the token), and
//!   a request-path refresh starts only if its deadline leaves
//!   [`StoreConfig::refresh_reserve`](crate::StoreConfig::refresh_reserve);
//! - after it the conditional write is retried with backoff and jitter on any
//!   transient error for as long as the lease (and the caller's deadline)
//!   allows, and the lease is kept if it still fails: releasing it would let
//!   the next reader send the spent token and condemn the installation.
//!
//! The window no design closes: the process dying (or the write failing for
//! the whole lease) with the only copy of the new pair in memory. It is kept
//! to one Slack round trip plus the write, and every AWS call has a timeout
//! that fits inside the lease (`tokenkeep_runtime::aws`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};

use tokenkeep_slack_api::{RefreshToken, SlackOAuth};

use crate::record::field;
use crate::{
    Expect, InstallationStore, Outcome, ReadContext, RecordKey, RepoError, Status, StoreError,
    StoredRecord, TokenKind,
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

type LockMap = Arc<Mutex<HashMap<RecordKey, Arc<tokio::sync::Mutex<()>>>>>;

#[derive(Debug, Default, Clone)]
pub(crate) struct RefreshState {
    pub(crate) slack: Option<Arc<dyn SlackOAuth>>,
    locks: LockMap,
    owner: Arc<OwnerId>,
    pub(crate) metrics: Arc<RefreshMetrics>,
}

/// The in-process lock on one record (level 1 of the single flight). Dropping
/// it unlocks and removes the map entry when nobody else is queued, so the map
/// only holds records being refreshed right now.
struct KeyLock {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    locks: LockMap,
    key: RecordKey,
}

impl Drop for KeyLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody else is queued for this key.
        if locks
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

impl RefreshState {
    fn entry(&self, key: &RecordKey) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(key.clone()).or_default().clone()
    }

    fn guard(&self, key: &RecordKey, guard: tokio::sync::OwnedMutexGuard<()>) -> KeyLock {
        KeyLock {
            guard: Some(guard),
            locks: self.locks.clone(),
            key: key.clone(),
        }
    }

    /// Waits for the record's lock; `true` alongside when another task held it first.
    async fn lock(&self, key: &RecordKey) -> (KeyLock, bool) {
        let entry = self.entry(key);
        match entry.clone().try_lock_owned() {
            Ok(g) => (self.guard(key, g), false),
            Err(_) => (self.guard(key, entry.lock_owned().await), true),
        }
    }

    /// The record's lock if nobody in this process holds it.
    fn try_lock(&self, key: &RecordKey) -> Option<KeyLock> {
        let lock = self
            .entry(key)
            .try_lock_owned()
            .ok()
            .map(|g| self.guard(key, g));
        if lock.is_none() {
            // Drops the entry again if it was created just now for nothing.
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            if locks
                .get(key)
                .is_some_and(|l| Arc::strong_count(l) == 1 && l.try_lock().is_ok())
            {
                locks.remove(key);
            }
        }
        lock
    }
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

/// A lease taken less than this long ago (on both the store's clock and the
/// monotonic one) is not renewed before the Slack call: it has nearly its
/// whole term left, so the renewal could only confirm it. A stall past this
/// (KMS, say) is what the renewal is for, and then it runs.
const RENEW_AFTER: Duration = Duration::from_secs(1);

/// The new pair's write stops retrying this long before the lease runs out,
/// so a retry never lands after another process could have taken the lease
/// (it also covers the lease's `until` being written in whole seconds).
const LEASE_MARGIN: Duration = Duration::from_secs(2);

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

/// When this process took the lease, on the store's clock (what the lease's
/// `until` is written in) and the monotonic one (what a stall shows on).
#[derive(Clone, Copy)]
struct Leased {
    at_ms: i64,
    at: Instant,
}

impl Leased {
    fn is_recent(&self, now_ms: i64) -> bool {
        let renew_after_ms = RENEW_AFTER.as_millis() as i64;
        now_ms - self.at_ms < renew_after_ms && self.at.elapsed() < RENEW_AFTER
    }
}

/// What one lease-holding attempt came to.
enum Attempt {
    Refreshed(Box<StoredRecord>),
    /// Our lease ran out before the Slack call and someone else holds or used
    /// it: nothing was sent; re-read.
    LeaseLost,
}

/// A failed attempt, and whether the lease may be released. After Slack
/// answered it may not: the stored refresh token is spent, and a reader that
/// took the lease would send it again.
struct Failed {
    error: StoreError,
    release_lease: bool,
}

impl From<StoreError> for Failed {
    fn from(error: StoreError) -> Self {
        Self {
            error,
            release_lease: true,
        }
    }
}

impl From<RepoError> for Failed {
    fn from(e: RepoError) -> Self {
        StoreError::from(e).into()
    }
}

/// Retried with backoff: the write failed without a verdict on its condition.
fn transient(e: &RepoError) -> bool {
    matches!(e, RepoError::Unavailable(_) | RepoError::Backend(_))
}

impl InstallationStore {
    pub fn refresh_metrics(&self) -> &RefreshMetrics {
        &self.refresh.metrics
    }

    /// Request path: the token expired; returns the new token (and version) or fails.
    pub(crate) async fn refresh_blocking(
        &self,
        key: &RecordKey,
        seen: StoredRecord,
        deadline: Option<Instant>,
    ) -> Result<(String, u64), StoreError> {
        let record = match self.refresh_record(key, seen, deadline).await? {
            Step::Fresh(r) => r,
            Step::HeldElsewhere | Step::NotDue => return Err(StoreError::Expired),
        };
        let token = self
            .sealer
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
        // The lock is taken before spawning and moves into the task: a burst of
        // readers must start one rotation, not one each.
        let Some(lock) = self.refresh.try_lock(&key) else {
            // Someone in this process is already refreshing it: nothing to start.
            return;
        };
        let store = self.clone();
        tokio::spawn(async move {
            let result = store.rotate_locked(&key).await;
            drop(lock);
            if let Err(e) = result {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, "background refresh failed");
            }
        });
    }

    /// Rotation sweep: refreshes the record if it is due, unless another
    /// process holds its lease. Same single-flight path as the request path.
    pub async fn rotate(&self, key: &RecordKey) -> Result<RotateOutcome, StoreError> {
        let (_one_per_process, _) = self.refresh.lock(key).await;
        self.rotate_locked(key).await
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
        match self
            .refresh_under_lock(key, seen, Need::Due, false, None)
            .await
        {
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
        deadline: Option<Instant>,
    ) -> Result<Step, StoreError> {
        // A caller that queued behind another refresh in this process re-reads:
        // `seen` predates that refresh, and acting on it would fail the lease
        // on a stale version and sleep a POLL with the lock held, one caller
        // after another.
        let (_one_per_process, queued) = self.refresh.lock(key).await;
        self.refresh_under_lock(key, seen, Need::Expired, queued, deadline)
            .await
    }

    async fn refresh_under_lock(
        &self,
        key: &RecordKey,
        mut record: StoredRecord,
        need: Need,
        reread: bool,
        deadline: Option<Instant>,
    ) -> Result<Step, StoreError> {
        let lease_secs = self.config().lease_secs;
        // Bounded wait: one full lease (a dead holder's lease runs out) plus slack.
        let wait_until = self.clock().now_millis() + (lease_secs + 5) * 1000;
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
            let leased = Leased {
                at_ms: self.clock().now_millis(),
                at: Instant::now(),
            };
            if self.lease(key, &record, owner, now).await? {
                match self
                    .refresh_with_lease(key, &record, owner, leased, deadline)
                    .await?
                {
                    Attempt::Refreshed(r) => return Ok(Step::Fresh(r)),
                    Attempt::LeaseLost => {}
                }
            }
            if matches!(need, Need::Due) {
                return Ok(Step::HeldElsewhere);
            }
            if self.clock().now_millis() >= wait_until
                || deadline.is_some_and(|d| Instant::now() + POLL >= d)
            {
                return Err(StoreError::Expired);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// We hold the lease: call Slack once, persist the new pair, then return it.
    /// Takes the record's refresh lease for `owner`, or renews it if `owner`
    /// holds it: one term from `now`, only while the record is still at the
    /// version and generation read.
    async fn lease(
        &self,
        key: &RecordKey,
        record: &StoredRecord,
        owner: &str,
        now: i64,
    ) -> Result<bool, RepoError> {
        self.repository()
            .try_lease(
                key,
                record.version,
                record.generation,
                owner,
                now,
                now + self.config().lease_secs,
            )
            .await
    }

    async fn refresh_with_lease(
        &self,
        key: &RecordKey,
        record: &StoredRecord,
        owner: &str,
        leased: Leased,
        deadline: Option<Instant>,
    ) -> Result<Attempt, StoreError> {
        let outcome = match self.refresh.slack.clone() {
            Some(slack) => {
                self.call_slack_and_persist(&*slack, key, record, owner, leased, deadline)
                    .await
            }
            None => Err(StoreError::Expired.into()),
        };
        if let Err(Failed {
            release_lease: true,
            ..
        }) = &outcome
        {
            // A failure before Slack answered: let the next reader try at once
            // rather than wait out the lease. Only drops our own lease.
            self.release_own_lease(key, owner).await;
        }
        if matches!(outcome, Ok(Attempt::LeaseLost)) {
            // Nothing was read past the record we already had, and nothing sent.
            return Ok(Attempt::LeaseLost);
        }
        let audit_outcome = match &outcome {
            Ok(_) => Outcome::Ok,
            Err(Failed {
                error: StoreError::Integrity,
                ..
            }) => Outcome::DecryptFailed,
            Err(_) => Outcome::RefreshFailed,
        };
        // The refresh token was read: that is audited like any token read.
        let ctx = ReadContext::new("tokenkeep-refresh", owner, "refresh");
        self.audit(self.audit_record(
            key,
            TokenKind::of_record(key),
            &ctx,
            audit_outcome,
            record.version,
        ))
        .await?;
        outcome.map_err(|f| f.error)
    }

    async fn call_slack_and_persist(
        &self,
        slack: &dyn SlackOAuth,
        key: &RecordKey,
        record: &StoredRecord,
        owner: &str,
        leased: Leased,
        deadline: Option<Instant>,
    ) -> Result<Attempt, Failed> {
        let fields = self.sealer.open_fields(record).await?;
        let refresh_token = fields
            .iter()
            .find(|(n, _)| n == field::REFRESH_TOKEN)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(RefreshToken::new)
            .ok_or(StoreError::Integrity)?;

        // The new pair's data key comes first: once Slack answers, the old
        // refresh token is spent, so nothing that can fail (KMS) may stand
        // between Slack's answer and the conditional write.
        let data_key = self.sealer.new_data_key(key).await?;

        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left < self.config().refresh_reserve {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), left_ms = left.as_millis() as u64,
                    "too little time left to refresh and write the new pair; not calling slack");
                return Err(StoreError::Expired.into());
            }
        }
        // Renew the lease right before the call if the opens above took long
        // enough that it may have run out: if someone else took over since,
        // the token we hold may already be spent.
        let lease_secs = self.config().lease_secs;
        let lease_term = Duration::from_secs(lease_secs.max(0) as u64);
        let lease_ends = if leased.is_recent(self.clock().now_millis()) {
            leased.at + lease_term
        } else {
            if !self
                .lease(key, record, owner, self.clock().now_secs())
                .await?
            {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), metric = "RefreshLeaseLost",
                    "refresh lease lost before the slack call (a stall outlived it); not calling slack");
                return Ok(Attempt::LeaseLost);
            }
            Instant::now() + lease_term
        };

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
                return Err(StoreError::Refresh(e).into());
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
                return Err(StoreError::Refresh(e).into());
            }
        };
        // From here on the stored refresh token is spent.
        let spent = |error: StoreError| Failed {
            error,
            release_lease: false,
        };
        let (Some(access), Some(refresh)) = (
            response.access_token.as_ref(),
            response.refresh_token.as_ref(),
        ) else {
            tracing::error!(tenant = %key.pk(), sk = %key.sk(), metric = "RefreshPairLost",
                "slack's refresh answer has no token pair; the stored refresh token may be spent");
            return Err(spent(StoreError::Invalid(
                "refresh answer without a token pair",
            )));
        };
        let now = self.clock().now_secs();
        let mut meta = record.meta.clone();
        meta.token_expires_at = response.expires_in.map(|s| now + s);
        let mut secrets: Vec<(&str, &str)> = Vec::with_capacity(fields.len());
        for (name, value) in &fields {
            let value = match name.as_str() {
                field::TOKEN => access.expose_secret(),
                field::REFRESH_TOKEN => refresh.expose_secret(),
                _ => std::str::from_utf8(value).map_err(|_| spent(StoreError::Integrity))?,
            };
            secrets.push((name.as_str(), value));
        }
        let next = self
            .sealer
            .seal_with(
                Some(data_key),
                key,
                meta,
                record.version + 1,
                record.generation,
                &secrets,
            )
            .map_err(spent)?;
        let expect = Expect::Leased {
            version: record.version,
            generation: record.generation,
            owner: owner.to_owned(),
        };

        // Retry until the lease (less a margin) or the caller's deadline ends.
        let write_until = deadline
            .map_or(lease_ends, |d| d.min(lease_ends))
            .checked_sub(LEASE_MARGIN)
            .unwrap_or(lease_ends);
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(25))
            .with_max_delay(Duration::from_millis(800))
            .with_jitter()
            .without_max_times();
        let mut attempts = 0u32;
        let written = (|| {
            attempts += 1;
            self.repository().put(&next, expect.clone())
        })
        .retry(backoff)
        .when(|e| transient(e) && Instant::now() < write_until)
        .notify(|e, wait| {
            tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, retry_in_ms = wait.as_millis() as u64,
                "writing the refreshed pair failed; retrying under the lease");
        })
        .await;
        match written {
            Ok(()) => {
                self.refresh
                    .metrics
                    .refreshed
                    .fetch_add(1, Ordering::Relaxed);
                tracing::info!(tenant = %key.pk(), sk = %key.sk(), version = next.version, attempts, "token refreshed");
                Ok(Attempt::Refreshed(Box::new(next)))
            }
            // Uninstalled (record deleted) while we were at Slack: the
            // uninstall wins and nothing is resurrected.
            Err(RepoError::ConditionFailed) => {
                tracing::warn!(tenant = %key.pk(), sk = %key.sk(), "refresh result discarded: record changed or gone");
                Err(spent(StoreError::NotInstalled))
            }
            Err(e) => {
                self.refresh.metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(tenant = %key.pk(), sk = %key.sk(), error = %e, attempts, metric = "RefreshPairLost",
                    "the refreshed pair could not be written within the lease; the lease is kept until it runs out");
                Err(spent(e.into()))
            }
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
            .sealer
            .seal(key, meta, record.version + 1, record.generation, &[])
            .await?;
        let expect = Expect::Leased {
            version: record.version,
            generation: record.generation,
            owner: owner.to_owned(),
        };
        match self.repository().put(&next, expect).await {
            Ok(()) => {
                self.count(crate::StoreMetric::NeedsReinstall);
                Ok(())
            }
            Err(RepoError::ConditionFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
