//! The embedded durable queue of `tokenkeep dev`: one SQLite file.
//!
//! A job is committed before `enqueue` returns. A claim hides the job for
//! [`CLAIM_SECS`]; finishing deletes it, failing makes it visible again after
//! a short backoff, or moves it to `lazy_dead` after [`MAX_ATTEMPTS`](crate::MAX_ATTEMPTS)
//! runs. A process killed mid-job leaves the claim to expire, so the job runs
//! again after a restart.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension as _, params};
use tokenkeep_events::{JobOutcome, LazyJob, LazyQueue, Listeners, QueueError, run_job};
use tokenkeep_installations::InstallationStore;
use tokenkeep_slack_api::SlackClient;

/// How long a claimed job stays hidden: longer than any lazy listener should run.
pub const CLAIM_SECS: i64 = 15 * 60;
/// Wait before a failed job is tried again.
const RETRY_BACKOFF_SECS: i64 = 2;

#[derive(Debug, Clone)]
pub struct EmbeddedQueue {
    db: Arc<Mutex<Connection>>,
    max_attempts: u32,
}

fn err(e: rusqlite::Error) -> QueueError {
    QueueError::Receive(Box::new(e))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A job taken from the queue.
#[derive(Debug)]
pub struct Claimed {
    pub id: i64,
    pub attempts: u32,
    pub job: LazyJob,
}

impl EmbeddedQueue {
    /// Opens (or creates) the queue file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, QueueError> {
        let conn = Connection::open(path).map_err(err)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
             CREATE TABLE IF NOT EXISTS lazy_jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, body TEXT NOT NULL,
                 attempts INTEGER NOT NULL DEFAULT 0, visible_at INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS lazy_dead (id INTEGER PRIMARY KEY, body TEXT NOT NULL,
                 attempts INTEGER NOT NULL, dead_at INTEGER NOT NULL);",
        )
        .map_err(err)?;
        Ok(Self {
            db: Arc::new(Mutex::new(conn)),
            max_attempts: crate::MAX_ATTEMPTS,
        })
    }

    pub fn with_max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oldest visible job, hidden for [`CLAIM_SECS`] and its attempt counted.
    pub fn claim(&self, now: i64) -> Result<Option<Claimed>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        let row: Option<(i64, String, u32)> = tx
            .query_row(
                "SELECT id, body, attempts FROM lazy_jobs WHERE visible_at <= ?1 ORDER BY id LIMIT 1",
                params![now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(err)?;
        let Some((id, body, attempts)) = row else {
            return Ok(None);
        };
        tx.execute(
            "UPDATE lazy_jobs SET attempts = attempts + 1, visible_at = ?2 WHERE id = ?1",
            params![id, now + CLAIM_SECS],
        )
        .map_err(err)?;
        tx.commit().map_err(err)?;
        let job = serde_json::from_str(&body).map_err(QueueError::Malformed)?;
        Ok(Some(Claimed {
            id,
            attempts: attempts + 1,
            job,
        }))
    }

    pub fn finish(&self, id: i64) -> Result<(), QueueError> {
        self.conn()
            .execute("DELETE FROM lazy_jobs WHERE id = ?1", params![id])
            .map_err(err)?;
        Ok(())
    }

    /// A failed run: retried after a backoff, or dead-lettered (returns true).
    pub fn fail(&self, claimed: &Claimed, now: i64) -> Result<bool, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(err)?;
        let dead = claimed.attempts >= self.max_attempts;
        if dead {
            tx.execute(
                "INSERT INTO lazy_dead (id, body, attempts, dead_at) SELECT id, body, attempts, ?2 FROM lazy_jobs WHERE id = ?1",
                params![claimed.id, now],
            )
            .map_err(err)?;
            tx.execute("DELETE FROM lazy_jobs WHERE id = ?1", params![claimed.id])
                .map_err(err)?;
        } else {
            tx.execute(
                "UPDATE lazy_jobs SET visible_at = ?2 WHERE id = ?1",
                params![claimed.id, now + RETRY_BACKOFF_SECS],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(dead)
    }

    /// (waiting or claimed, dead-lettered) job counts.
    pub fn depth(&self) -> Result<(u64, u64), QueueError> {
        let conn = self.conn();
        let count = |table: &str| -> Result<u64, QueueError> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .map_err(err)
        };
        Ok((count("lazy_jobs")?, count("lazy_dead")?))
    }

    /// Claims and runs one job; `false` when none is visible.
    pub async fn run_one(
        &self,
        listeners: &Listeners,
        store: &Arc<InstallationStore>,
        slack: &SlackClient,
    ) -> Result<bool, QueueError> {
        let Some(claimed) = self.claim(now_secs())? else {
            return Ok(false);
        };
        let (request_id, listener) = (claimed.job.request_id.clone(), claimed.job.listener.clone());
        match run_job(listeners, store, slack, claimed.job.clone()).await {
            Ok(JobOutcome::Done | JobOutcome::TenantGone) => self.finish(claimed.id)?,
            Err(e) => {
                let dead = self.fail(&claimed, now_secs())?;
                tracing::error!(%request_id, %listener, attempts = claimed.attempts, dead, error = %e, "lazy job failed");
                if dead {
                    tokenkeep_runtime::emit_metric(crate::DEAD_LETTERED_METRIC, 1.0);
                }
            }
        }
        Ok(true)
    }

    /// The worker loop of `tokenkeep dev`: runs jobs as they become visible.
    pub async fn run_forever(
        self,
        listeners: Listeners,
        store: Arc<InstallationStore>,
        slack: SlackClient,
    ) {
        loop {
            match self.run_one(&listeners, &store, &slack).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::error!(error = %e, "embedded lazy queue failed"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait]
impl LazyQueue for EmbeddedQueue {
    async fn enqueue(&self, job: LazyJob) -> Result<(), QueueError> {
        let body = serde_json::to_string(&job).map_err(QueueError::Malformed)?;
        self.conn()
            // Visible at once (time 0 is before any claim's "now").
            .execute(
                "INSERT INTO lazy_jobs (body, attempts, visible_at) VALUES (?1, 0, 0)",
                params![body],
            )
            .map_err(|e| QueueError::Send(Box::new(e)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(n: usize) -> LazyJob {
        LazyJob {
            tenant: "T#-#T1".into(),
            listener: "command:/x".into(),
            index: 0,
            request_id: format!("r{n}"),
            payload: serde_json::json!({"n": n}),
        }
    }

    #[tokio::test]
    async fn jobs_survive_a_restart_and_dead_letter_after_bounded_attempts() {
        // Given a queue file with one job enqueued, then the process "restarted"
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lazy.db");
        EmbeddedQueue::open(&path)
            .unwrap()
            .enqueue(job(1))
            .await
            .unwrap();
        let q = EmbeddedQueue::open(&path).unwrap().with_max_attempts(2);
        // When it is claimed, the claim hides it; a claim that was never
        // finished (a killed worker) expires and the job is visible again
        let first = q.claim(1_000).unwrap().unwrap();
        assert_eq!(first.job, job(1));
        assert!(q.claim(1_001).unwrap().is_none());
        let again = q.claim(1_000 + CLAIM_SECS).unwrap().unwrap();
        assert_eq!(again.attempts, 2);
        // Then a failure at the last attempt dead-letters it
        assert!(q.fail(&again, 2_000).unwrap());
        assert_eq!(q.depth().unwrap(), (0, 1));
        assert!(q.claim(i64::MAX / 2).unwrap().is_none());
    }

    #[tokio::test]
    async fn a_failure_before_the_last_attempt_is_retried_after_a_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let q = EmbeddedQueue::open(dir.path().join("lazy.db")).unwrap();
        q.enqueue(job(2)).await.unwrap();
        let c = q.claim(100).unwrap().unwrap();
        assert!(!q.fail(&c, 100).unwrap());
        assert!(q.claim(100).unwrap().is_none());
        let c = q.claim(100 + RETRY_BACKOFF_SECS).unwrap().unwrap();
        q.finish(c.id).unwrap();
        assert_eq!(q.depth().unwrap(), (0, 0));
    }
}
