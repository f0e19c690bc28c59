//! The rotation sweep: refreshes every rotating token that is due within the
//! store's refresh window, before a reader has to wait for it.
//!
//! It reads the sparse `by_expiry` index shard by shard (a query, never a
//! scan) and hands each due record to [`InstallationStore::rotate`], the same
//! single-flight path request-time refreshes take. So a sweep racing another
//! sweep, a request or a background refresh still refreshes each token once:
//! whoever loses the lease reports `HeldElsewhere` or `NotDue` and moves on.
//!
//! The sweep stops *starting* work `stop_before` ahead of the Lambda deadline
//! and leaves the rest to the next run: a refresh cut off by the runtime
//! mid-call would hold its lease until it runs out, and one in flight is never
//! abandoned by us.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokenkeep_installations::{DueCursor, InstallationStore, RecordKey, RotateOutcome, schema};

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct SweepConfig {
    /// Refreshes in flight at once (Slack calls plus their KMS and table calls).
    pub concurrency: usize,
    /// Keys fetched per index query.
    pub page: usize,
    /// Stop starting new refreshes this long before the deadline.
    pub stop_before: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        // 8 in flight keeps well under Slack's oauth.v2.access rate tier while a
        // 30-minute schedule still clears thousands of tokens per run; 20 s is
        // two Slack timeouts plus the write, so a started refresh can finish.
        Self {
            concurrency: 8,
            page: 200,
            stop_before: Duration::from_secs(20),
        }
    }
}

/// What one sweep did; logged as one JSON line and returned to the runtime.
///
/// `due = refreshed + skipped_held + not_due + gone + failed + deferred`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Records the index listed as due within the window.
    pub due: usize,
    /// Refreshed by this sweep.
    pub refreshed: usize,
    /// Another process held the lease (it refreshes them).
    pub skipped_held: usize,
    /// Not due any more by the time we looked (refreshed by someone else).
    pub not_due: usize,
    /// Uninstalled, or already marked needs_reinstall.
    pub gone: usize,
    /// The refresh failed (Slack refused or timed out, storage error).
    pub failed: usize,
    /// Listed as due but not started: the deadline came first. The next run takes them.
    pub deferred: usize,
    /// Index queries that failed (that shard's remaining records wait for the next run).
    pub query_errors: usize,
    /// The sweep stopped early because the deadline was near.
    pub deadline_reached: bool,
    pub elapsed_ms: u64,
}

/// Sweeps every expiry shard once. Never fails as a whole: per-record errors
/// are counted (and logged with the tenant), so one bad installation can't
/// hold back the rest.
pub async fn sweep(
    store: &InstallationStore,
    now_secs: i64,
    deadline: Option<Instant>,
    cfg: &SweepConfig,
) -> SweepReport {
    let started = Instant::now();
    let before = now_secs + store.config().refresh_window_secs;
    let page = cfg.page.max(1);
    let out_of_time = |at: Instant| deadline.is_some_and(|d| at + cfg.stop_before >= d);

    let mut report = SweepReport::default();
    let mut listing = DueListing {
        store,
        before,
        page,
        shard: 0,
        cursor: None,
        buffer: Vec::new(),
        query_errors: 0,
    };
    let mut listed = 0usize;
    let mut deadline_reached = false;

    {
        // Keys are produced lazily, one per free slot, so the deadline is checked
        // right before each refresh starts and `buffer_unordered` bounds the work.
        let out_of_time = &out_of_time;
        let keys = stream::unfold(
            (&mut listing, &mut listed, &mut deadline_reached),
            move |(listing, listed, stop)| async move {
                if *stop || out_of_time(Instant::now()) {
                    *stop = true;
                    return None;
                }
                let key = listing.next().await?;
                *listed += 1;
                Some((key, (listing, listed, stop)))
            },
        );
        let mut outcomes = std::pin::pin!(
            keys.map(|key| rotate_one(store, key))
                .buffer_unordered(cfg.concurrency.max(1))
        );
        while let Some(outcome) = outcomes.next().await {
            match outcome {
                Ok(RotateOutcome::Refreshed) => report.refreshed += 1,
                Ok(RotateOutcome::HeldElsewhere) => report.skipped_held += 1,
                Ok(RotateOutcome::NotDue) => report.not_due += 1,
                Ok(RotateOutcome::Gone) => report.gone += 1,
                Err(()) => report.failed += 1,
            }
        }
    }

    // Keys already fetched but not started are reported; the index still lists them.
    report.deferred = listing.buffer.len();
    report.due = listed + report.deferred;
    report.query_errors = listing.query_errors;
    report.deadline_reached = deadline_reached;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report.log_and_emit();
    report
}

async fn rotate_one(store: &InstallationStore, key: RecordKey) -> Result<RotateOutcome, ()> {
    store.rotate(&key).await.map_err(|e| {
        tracing::warn!(tenant = %key.pk(), sk = %key.sk(), error = %e, "rotation failed");
    })
}

/// Walks the due records of every shard, page by page, each page starting
/// where the last one stopped (the index cursor). Records that stay due
/// (held elsewhere, failed) are behind the cursor and not listed again, so a
/// sweep over N due records makes N / page queries however many stay due.
struct DueListing<'a> {
    store: &'a InstallationStore,
    before: i64,
    page: usize,
    shard: u32,
    cursor: Option<DueCursor>,
    /// Fetched keys not handed out yet, in reverse order (popped from the end).
    buffer: Vec<RecordKey>,
    query_errors: usize,
}

impl DueListing<'_> {
    async fn next(&mut self) -> Option<RecordKey> {
        loop {
            if let Some(key) = self.buffer.pop() {
                return Some(key);
            }
            if self.shard >= schema::EXPIRY_SHARDS {
                return None;
            }
            let shard = format!("EXP#{}", self.shard);
            match self
                .store
                .repository()
                .query_due(&shard, self.before, self.cursor.as_ref(), self.page)
                .await
            {
                Ok((mut keys, next)) => {
                    match next {
                        Some(cursor) => self.cursor = Some(cursor),
                        None => self.next_shard(),
                    }
                    keys.reverse();
                    self.buffer = keys;
                }
                Err(e) => {
                    tracing::warn!(shard = %shard, error = %e, "expiry index query failed; shard left for the next run");
                    self.query_errors += 1;
                    self.next_shard();
                }
            }
        }
    }

    fn next_shard(&mut self) {
        self.shard += 1;
        self.cursor = None;
    }
}

impl SweepReport {
    /// One summary line (JSON through the runtime's tracing subscriber) and
    /// the EMF metrics the template's alarms watch.
    fn log_and_emit(&self) {
        tracing::info!(
            target: "tokenkeep::rotation",
            due = self.due,
            refreshed = self.refreshed,
            skipped_held = self.skipped_held,
            not_due = self.not_due,
            gone = self.gone,
            failed = self.failed,
            deferred = self.deferred,
            query_errors = self.query_errors,
            deadline_reached = self.deadline_reached,
            elapsed_ms = self.elapsed_ms,
            "rotation sweep finished"
        );
        tokenkeep_runtime::emit_metric("RefreshFailed", self.failed as f64);
        tokenkeep_runtime::emit_metric("RotationRefreshed", self.refreshed as f64);
        tokenkeep_runtime::emit_metric("RotationDeferred", self.deferred as f64);
    }
}

#[cfg(test)]
mod tests {
    /// The sample event `sam local invoke` / `cargo lambda invoke` use is what
    /// the handler accepts.
    #[test]
    fn scheduled_event_fixture_parses() {
        let raw = include_str!("../../../events/scheduled.json");
        let event: serde_json::Value = serde_json::from_str(raw).unwrap();
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert!(
            event["resources"][0]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:events:")
        );
    }
}
