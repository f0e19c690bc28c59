//! The audit group commit: one thread writes every queued audit row (and its
//! event claim) in shared transactions.
//!
//! A caller queues its row and awaits the outcome of the transaction that
//! holds it, so a token read is still never answered before its audit record
//! is durable. What is shared is the commit: its locks and its WAL frames (the
//! log tables' last pages), which cost the same for one row as for a hundred.
//! Under load the thread lingers briefly before each commit to let a batch
//! form; when the previous batch held a single row (an idle store) it commits
//! at once, so a lone request pays no linger.
//!
//! The thread owns no connection: it takes the store's writer connection for
//! each batch, like every other write. A panic while committing a batch fails
//! that batch's callers (their senders drop) and the thread goes on; the
//! thread stops when the repository is dropped, after draining the queue.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{Connection, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::{CLAIM_EVENT, INSERT_AUDIT, backend};
use crate::RepoError;

/// How long a busy queue waits for more rows before committing.
const LINGER: Duration = Duration::from_micros(400);
/// A batch this large commits without waiting out the linger.
const MAX_BATCH: usize = 256;

pub(super) struct PendingAudit {
    pub(super) tenant: String,
    pub(super) sk: String,
    pub(super) at_ms: i64,
    pub(super) ttl: i64,
    pub(super) body: String,
    /// An event id to record with the row; the row is written only if this
    /// is the first claim (see `Repository::append_audit_claiming`).
    pub(super) claim: Option<EventClaim>,
    /// `Ok(true)`: committed; `Ok(false)`: the claim was a duplicate, nothing written.
    pub(super) done: oneshot::Sender<Result<bool, RepoError>>,
}

pub(super) struct EventClaim {
    pub(super) event_id: String,
    pub(super) now: i64,
    pub(super) expires_at: i64,
}

#[derive(Default)]
struct Queue {
    rows: Vec<PendingAudit>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Signalled when the queue stops being empty, fills a batch, or closes.
    wake: Condvar,
}

pub(super) struct AuditWriter {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriter {
    pub(super) fn start(conn: Arc<Mutex<Connection>>) -> Result<Self, RepoError> {
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("tokenkeep-audit".into())
            .spawn({
                let shared = shared.clone();
                move || run(&shared, &conn)
            })
            .map_err(|e| RepoError::Backend(Box::new(e)))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Queues a row; the caller awaits `row.done`.
    pub(super) fn submit(&self, row: PendingAudit) {
        let mut q = lock(&self.shared.queue);
        q.rows.push(row);
        // Wake the thread only when it may be waiting for this: the first row
        // of an empty queue, or a full batch cutting a linger short.
        if q.rows.len() == 1 || q.rows.len() == MAX_BATCH {
            self.shared.wake.notify_one();
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        lock(&self.shared.queue).closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing here is left half-changed by a panic: safe to go on using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn run(shared: &Shared, conn: &Mutex<Connection>) {
    let mut busy = false;
    loop {
        let batch = {
            let mut q = lock(&shared.queue);
            while q.rows.is_empty() && !q.closed {
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            if q.rows.is_empty() {
                return; // closed and drained
            }
            if busy && !q.closed {
                let until = Instant::now() + LINGER;
                while q.rows.len() < MAX_BATCH && !q.closed {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = shared
                        .wake
                        .wait_timeout(q, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            std::mem::take(&mut q.rows)
        };
        busy = batch.len() > 1;
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit_batch(&mut lock(conn), batch);
        }));
        if committed.is_err() {
            tracing::error!("audit batch commit panicked; its reads were refused");
        }
    }
}

/// One transaction for the whole batch; if it fails, each row is retried in
/// a transaction of its own so every caller gets its own row's outcome (and
/// a claim never commits without its audit row).
fn commit_batch(conn: &mut Connection, batch: Vec<PendingAudit>) {
    let together = (|| -> rusqlite::Result<Vec<bool>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = batch
            .iter()
            .map(|row| write_row(&tx, row))
            .collect::<rusqlite::Result<Vec<bool>>>()?;
        tx.commit()?;
        Ok(written)
    })();
    match together {
        Ok(written) => {
            for (row, written) in batch.into_iter().zip(written) {
                let _ = row.done.send(Ok(written));
            }
        }
        Err(_) => {
            for row in batch {
                let one = (|| -> rusqlite::Result<bool> {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let written = write_row(&tx, &row)?;
                    tx.commit()?;
                    Ok(written)
                })()
                .map_err(backend);
                let _ = row.done.send(one);
            }
        }
    }
}

/// Writes one queued row (and its claim) inside the caller's transaction.
fn write_row(conn: &Connection, row: &PendingAudit) -> rusqlite::Result<bool> {
    if let Some(claim) = &row.claim {
        let claimed = conn.prepare_cached(CLAIM_EVENT)?.execute(params![
            claim.event_id,
            claim.expires_at,
            claim.now
        ])? == 1;
        if !claimed {
            return Ok(false);
        }
    }
    conn.prepare_cached(INSERT_AUDIT)?
        .execute(params![row.tenant, row.sk, row.at_ms, row.ttl, row.body])?;
    Ok(true)
}
