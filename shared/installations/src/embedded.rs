//! The embedded repository: one SQLite file, for `tokenkeep dev` and tests.
//!
//! WAL mode with `synchronous=NORMAL`: a committed transaction survives the
//! process being killed (-9), which is the failure `tokenkeep dev` must
//! survive; only an OS crash may lose the last commits. Each conditional write
//! is one `BEGIN IMMEDIATE` transaction, which gives the same all-or-nothing
//! semantics as DynamoDB's condition expressions.
//!
//! Calls run inline under a mutex rather than on `spawn_blocking`: every
//! statement here is a primary-key lookup or write taking microseconds, less
//! than a thread hand-off would cost.
//!
//! Audit appends are group-committed by one thread (`audit_writer`): each
//! caller's future resolves only after the transaction holding its row has
//! committed (or with that row's own error), so a token read is still never
//! answered before its audit record is durable; under load one commit (its
//! locks and WAL frames) is shared by many reads.
//!
//! Revocation tombstones live in their own table (`revocations`), so no
//! record query can mistake one for a record; `revoke` deletes the record and
//! raises its tombstone in one transaction.
//!
//! An append may carry an event claim (`append_audit_claiming`): the claim
//! and its audit row commit in the same transaction, or neither does (a
//! duplicate's row is skipped), so the events path writes once per event.
//!
//! Two files. The main file (`store.db`) holds installations: records,
//! tenants, revocations. The log file beside it (`store-log.db`, attached as
//! `log`) holds what is written per request: the audit log, event claims and
//! OAuth states. No transaction writes both, so none needs to be atomic across
//! them (SQLite doesn't make WAL transactions atomic across attached files).
//! The split keeps per-event writes out of the main file, which is what lets
//! token reads come from the in-process cache (`read_cache`) until an
//! installation actually changes. The audit log is a rowid table, so an append
//! lands on its last page: a batch of reads writes one table page and one
//! index page, not one random page per tenant.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

mod audit_writer;
mod read_cache;

use audit_writer::{AuditWriter, EventClaim, PendingAudit};

use crate::{
    AuditRecord, DueCursor, Expect, RecordKey, RepoError, Repository, StoredRecord, TenantState,
};

pub struct EmbeddedRepository {
    /// The one connection that writes (every conditional write and the audit
    /// group commit).
    conn: Arc<Mutex<Connection>>,
    /// Read-only connections for plain reads. In WAL mode a reader never waits
    /// for the writer, so a token read doesn't queue behind a group commit
    /// (empty for an in-memory database, which one connection only can see).
    readers: Vec<Mutex<Connection>>,
    /// Token reads (`get_with_tenant`) of a file-backed store.
    cache: Option<read_cache::ReadCache>,
    path: String,
    audit: AuditWriter,
}

/// Read connections of a file-backed store.
const READERS: usize = 2;

fn open_reader(path: &Path) -> Result<Connection, RepoError> {
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(backend)?;
    // Token reads come from the read cache, so these pages are rarely read
    // twice: a small page cache keeps the process's memory down.
    conn.pragma_update(None, "cache_size", READER_CACHE_KIB)
        .map_err(backend)?;
    Ok(conn)
}

/// Page cache per read connection, KiB (negative: SQLite's unit for KiB).
const READER_CACHE_KIB: i64 = -256;

/// The log file of the store at `path`: `store.db` → `store-log.db`.
fn log_path(path: &Path) -> std::path::PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-log.{}", ext.to_string_lossy()),
        None => format!("{stem}-log"),
    };
    path.with_file_name(name)
}

/// Attaches the log file as `log` (read-only on a read-only connection).
fn attach_log(conn: &Connection, log: &str) -> Result<(), RepoError> {
    conn.execute("ATTACH DATABASE ?1 AS log", [log])
        .map_err(backend)?;
    Ok(())
}

const INSERT_AUDIT: &str =
    "INSERT INTO log.audit_log (tenant, sk, at_ms, ttl, body) VALUES (?1, ?2, ?3, ?4, ?5)";
/// Records an event id unless an unexpired claim exists: one changed row means
/// this caller is the first.
const CLAIM_EVENT: &str = "INSERT INTO log.events (event_id, ttl) VALUES (?1, ?2)
     ON CONFLICT (event_id) DO UPDATE SET ttl = excluded.ttl WHERE events.ttl <= ?3";

impl std::fmt::Debug for EmbeddedRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedRepository")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend(e: rusqlite::Error) -> RepoError {
    match e {
        rusqlite::Error::SqliteFailure(ref f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            RepoError::Unavailable(Box::new(e))
        }
        other => RepoError::Backend(Box::new(other)),
    }
}

fn corrupt(e: serde_json::Error) -> RepoError {
    RepoError::Corrupt(e.to_string())
}

/// The main file: installations.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    pk TEXT NOT NULL, sk TEXT NOT NULL,
    version INTEGER NOT NULL, generation INTEGER NOT NULL,
    exp_shard TEXT, expires_at INTEGER,
    lease_owner TEXT, lease_until INTEGER,
    body TEXT NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS by_expiry ON records (exp_shard, expires_at) WHERE exp_shard IS NOT NULL;
CREATE TABLE IF NOT EXISTS tenants (
    pk TEXT PRIMARY KEY, generation INTEGER NOT NULL, purged INTEGER NOT NULL, purged_at INTEGER
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocations (
    pk TEXT NOT NULL, sk TEXT NOT NULL, revoked_at INTEGER NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
";

/// The log file (attached as `log`): what is written per request.
const LOG_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log.states (nonce TEXT PRIMARY KEY, ttl INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log.events (event_id TEXT PRIMARY KEY, ttl INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log.audit_log (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL, sk TEXT NOT NULL, at_ms INTEGER NOT NULL, ttl INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log.audit_log_by_time ON audit_log (at_ms);
";

/// Stores written before the split kept the log tables in the main file (the
/// audit log keyed by tenant). Moved once, in one transaction; the two files
/// aren't committed atomically together, so a crash in the middle can at
/// worst copy the audit rows twice on the next start, never lose one.
const MOVE_LEGACY_LOG: &str = "
BEGIN IMMEDIATE;
INSERT OR IGNORE INTO log.states (nonce, ttl) SELECT nonce, ttl FROM main.states;
INSERT OR IGNORE INTO log.events (event_id, ttl) SELECT event_id, ttl FROM main.events;
INSERT INTO log.audit_log (tenant, sk, at_ms, ttl, body)
    SELECT tenant, sk, at_ms, ttl, body FROM main.audit ORDER BY at_ms, sk;
DROP TABLE main.states;
DROP TABLE main.events;
DROP TABLE main.audit;
COMMIT;
";

impl EmbeddedRepository {
    /// Opens (creating if missing) the database file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RepoError> {
        let path = path.as_ref();
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| RepoError::Backend(Box::new(e)))?;
        }
        let log = log_path(path).display().to_string();
        let conn = Connection::open(path).map_err(backend)?;
        let mut repo = Self::init(conn, path.display().to_string(), &log)?;
        // After init, so the schemas exist and both files are in WAL mode.
        repo.readers = (0..READERS)
            .map(|_| {
                let reader = open_reader(path)?;
                attach_log(&reader, &log)?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<_, RepoError>>()?;
        repo.cache = Some(read_cache::ReadCache::open(path)?);
        Ok(repo)
    }

    /// A private in-memory database (tests, benchmarks).
    pub fn in_memory() -> Result<Self, RepoError> {
        Self::init(
            Connection::open_in_memory().map_err(backend)?,
            ":memory:".into(),
            ":memory:",
        )
    }

    fn init(conn: Connection, path: String, log: &str) -> Result<Self, RepoError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        attach_log(&conn, log)?;
        for (schema, cache_kib) in [("main", -512), ("log", -512)] {
            conn.pragma_update(Some(schema), "journal_mode", "WAL")
                .map_err(backend)?;
            conn.pragma_update(Some(schema), "synchronous", "NORMAL")
                .map_err(backend)?;
            // The log's hot pages are its tables' last pages; installation
            // reads mostly come from the read cache. Small caches keep the
            // process's memory within budget.
            conn.pragma_update(Some(schema), "cache_size", cache_kib)
                .map_err(backend)?;
        }
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.execute_batch(LOG_SCHEMA).map_err(backend)?;
        let legacy: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = 'audit')",
                [],
                |r| r.get(0),
            )
            .map_err(backend)?;
        if legacy {
            conn.execute_batch(MOVE_LEGACY_LOG).map_err(backend)?;
        }
        let conn = Arc::new(Mutex::new(conn));
        Ok(Self {
            audit: AuditWriter::start(conn.clone())?,
            conn,
            readers: Vec::new(),
            cache: None,
            path,
        })
    }

    /// Queues a row for the group commit and waits for its transaction.
    async fn queue_audit(
        &self,
        record: &AuditRecord,
        expires_at: i64,
        claim: Option<EventClaim>,
    ) -> Result<bool, RepoError> {
        let body = serde_json::to_string(record).map_err(corrupt)?;
        let (done, committed) = oneshot::channel();
        let row = PendingAudit {
            tenant: record.tenant.clone(),
            sk: record.sort_key(rand::random()),
            at_ms: record.at_ms,
            ttl: expires_at,
            body,
            claim,
            done,
        };
        self.audit.submit(row);
        // The sender is dropped without sending only if its batch's commit panicked.
        committed
            .await
            .map_err(|_| RepoError::Backend("audit commit loop failed".into()))?
    }

    /// A read connection: the first one free, else the one this call's turn
    /// names (a short wait: reads are primary-key lookups). A read sees every
    /// write committed before it started, on any connection or process.
    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.conn();
        }
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let turn = TURN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.readers.len();
        self.readers[turn].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock can't leave SQLite half-written (the
        // transaction rolls back on drop), so a poisoned lock is safe to reuse.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn read_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<(String, Option<String>, Option<i64>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
}

fn decode(parts: (String, Option<String>, Option<i64>)) -> Result<StoredRecord, RepoError> {
    let (body, lease_owner, lease_until) = parts;
    let mut record: StoredRecord = serde_json::from_str(&body).map_err(corrupt)?;
    record.lease_owner = lease_owner;
    record.lease_until = lease_until;
    Ok(record)
}

fn tenant_row(conn: &Connection, pk: &str) -> Result<Option<TenantState>, RepoError> {
    conn.prepare_cached("SELECT generation, purged, purged_at FROM tenants WHERE pk = ?1")
        .map_err(backend)?
        .query_row([pk], |r| {
            Ok(TenantState {
                generation: r.get::<_, i64>(0)? as u64,
                purged: r.get::<_, i64>(1)? != 0,
                purged_at: r.get(2)?,
            })
        })
        .optional()
        .map_err(backend)
}

fn revocation_row(conn: &Connection, key: &RecordKey) -> Result<Option<i64>, RepoError> {
    conn.prepare_cached("SELECT revoked_at FROM revocations WHERE pk = ?1 AND sk = ?2")
        .map_err(backend)?
        .query_row(params![key.pk(), key.sk()], |r| r.get(0))
        .optional()
        .map_err(backend)
}

/// Writes a tombstone at `revoked_at` unless the stored one is as late; one
/// changed row means it wrote.
const RAISE_REVOCATION: &str = "INSERT INTO revocations (pk, sk, revoked_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (pk, sk) DO UPDATE SET revoked_at = excluded.revoked_at
     WHERE revocations.revoked_at < excluded.revoked_at";

#[async_trait]
impl Repository for EmbeddedRepository {
    async fn get(&self, key: &RecordKey) -> Result<Option<StoredRecord>, RepoError> {
        let conn = self.reader();
        let row = conn
            .prepare_cached(
                "SELECT body, lease_owner, lease_until FROM records WHERE pk = ?1 AND sk = ?2",
            )
            .map_err(backend)?
            .query_row(params![key.pk(), key.sk()], read_record)
            .optional()
            .map_err(backend)?;
        row.map(decode).transpose()
    }

    /// Both rows as one snapshot; from the read cache when file-backed.
    async fn get_with_tenant(
        &self,
        key: &RecordKey,
    ) -> Result<(Option<StoredRecord>, Option<TenantState>), RepoError> {
        match &self.cache {
            Some(cache) => cache.get_with_tenant(key),
            None => read_cache::read_pair(&mut self.conn(), &key.pk(), &key.sk()),
        }
    }

    async fn list_tenant(&self, pk: &str) -> Result<Vec<StoredRecord>, RepoError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT body, lease_owner, lease_until FROM records WHERE pk = ?1 ORDER BY sk",
            )
            .map_err(backend)?;
        let rows = stmt.query_map([pk], read_record).map_err(backend)?;
        rows.map(|r| r.map_err(backend).and_then(decode)).collect()
    }

    async fn put(&self, record: &StoredRecord, expect: Expect) -> Result<(), RepoError> {
        let mut stored = record.clone();
        stored.lease_owner = None;
        stored.lease_until = None;
        let body = serde_json::to_string(&stored).map_err(corrupt)?;
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let current: Option<(i64, i64, Option<String>, Option<i64>)> = tx
            .query_row(
                "SELECT version, generation, lease_owner, lease_until FROM records WHERE pk = ?1 AND sk = ?2",
                params![record.pk, record.sk],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(backend)?;
        let ok = match (&expect, &current) {
            (Expect::Absent, None) => {
                let tenant = tenant_row(&tx, &record.pk)?;
                tenant.is_some_and(|t| t.generation == record.generation && !t.purged)
            }
            (Expect::AbsentNotRevoked, None) => {
                let tenant = tenant_row(&tx, &record.pk)?;
                let key = record
                    .key()
                    .map_err(|e| RepoError::Corrupt(e.to_string()))?;
                tenant.is_some_and(|t| t.generation == record.generation && !t.purged)
                    && revocation_row(&tx, &key)?.is_none_or(|t| t < record.meta.installed_at)
            }
            (
                Expect::Version {
                    version,
                    generation,
                },
                Some((v, g, _, _)),
            ) => *v as u64 == *version && *g as u64 == *generation,
            (
                Expect::Leased {
                    version,
                    generation,
                    owner,
                },
                Some((v, g, o, _)),
            ) => {
                *v as u64 == *version
                    && *g as u64 == *generation
                    && o.as_deref() == Some(owner.as_str())
            }
            _ => false,
        };
        if !ok {
            return Err(RepoError::ConditionFailed);
        }
        tx.execute(
            "INSERT OR REPLACE INTO records (pk, sk, version, generation, exp_shard, expires_at, lease_owner, lease_until, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, NULL, ?7)",
            params![
                record.pk,
                record.sk,
                record.version as i64,
                record.generation as i64,
                record.exp_shard,
                record.expires_at,
                body
            ],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)
    }

    async fn delete(&self, key: &RecordKey) -> Result<bool, RepoError> {
        let conn = self.conn();
        let n = conn
            .execute(
                "DELETE FROM records WHERE pk = ?1 AND sk = ?2",
                params![key.pk(), key.sk()],
            )
            .map_err(backend)?;
        Ok(n > 0)
    }

    async fn revoke(&self, key: &RecordKey, revoked_at: i64) -> Result<bool, RepoError> {
        let (pk, sk) = (key.pk(), key.sk());
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let n = tx
            .execute(
                "DELETE FROM records WHERE pk = ?1 AND sk = ?2",
                params![pk, sk],
            )
            .map_err(backend)?;
        tx.prepare_cached(RAISE_REVOCATION)
            .map_err(backend)?
            .execute(params![pk, sk, revoked_at])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(n > 0)
    }

    async fn revoked_at(&self, key: &RecordKey) -> Result<Option<i64>, RepoError> {
        revocation_row(&self.reader(), key)
    }

    async fn restore_revocation(
        &self,
        key: &RecordKey,
        revoked_at: i64,
    ) -> Result<bool, RepoError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(RAISE_REVOCATION)
            .map_err(backend)?
            .execute(params![key.pk(), key.sk(), revoked_at])
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn scan_revocations(&self) -> Result<Vec<(RecordKey, i64)>, RepoError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare("SELECT pk, sk, revoked_at FROM revocations ORDER BY pk, sk")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(backend)?;
        rows.map(|row| {
            let (pk, sk, at) = row.map_err(backend)?;
            let key =
                RecordKey::from_keys(&pk, &sk).map_err(|e| RepoError::Corrupt(e.to_string()))?;
            Ok((key, at))
        })
        .collect()
    }

    async fn tenant_state(&self, pk: &str) -> Result<Option<TenantState>, RepoError> {
        tenant_row(&self.reader(), pk)
    }

    async fn open_generation(&self, pk: &str) -> Result<u64, RepoError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let generation = match tenant_row(&tx, pk)? {
            Some(t) if !t.purged => t.generation,
            prior => {
                let next = prior.map_or(1, |t| t.generation + 1);
                tx.execute(
                    "INSERT OR REPLACE INTO tenants (pk, generation, purged, purged_at) VALUES (?1, ?2, 0, NULL)",
                    params![pk, next as i64],
                )
                .map_err(backend)?;
                next
            }
        };
        tx.commit().map_err(backend)?;
        Ok(generation)
    }

    async fn purge_tenant(&self, pk: &str, now: i64) -> Result<usize, RepoError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let generation = tenant_row(&tx, pk)?.map_or(0, |t| t.generation);
        tx.execute(
            "INSERT INTO tenants (pk, generation, purged, purged_at) VALUES (?1, ?2, 1, ?3)
             ON CONFLICT (pk) DO UPDATE SET purged = 1, purged_at = COALESCE(tenants.purged_at, ?3)",
            params![pk, generation as i64, now],
        )
        .map_err(backend)?;
        // Records only: revocation tombstones outlive the purge (see
        // `Repository::purge_tenant`).
        let n = tx
            .execute("DELETE FROM records WHERE pk = ?1", [pk])
            .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(n)
    }

    async fn try_lease(
        &self,
        key: &RecordKey,
        version: u64,
        generation: u64,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool, RepoError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(
                "UPDATE records SET lease_owner = ?1, lease_until = ?2
                 WHERE pk = ?3 AND sk = ?4 AND version = ?5 AND generation = ?6
                   AND (lease_until IS NULL OR lease_until < ?7 OR lease_owner = ?1)",
            )
            .map_err(backend)?
            .execute(params![
                owner,
                until,
                key.pk(),
                key.sk(),
                version as i64,
                generation as i64,
                now
            ])
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn release_lease(&self, key: &RecordKey, owner: &str) -> Result<(), RepoError> {
        let conn = self.conn();
        conn.execute(
            "UPDATE records SET lease_owner = NULL, lease_until = NULL WHERE pk = ?1 AND sk = ?2 AND lease_owner = ?3",
            params![key.pk(), key.sk(), owner],
        )
        .map_err(backend)?;
        Ok(())
    }

    async fn query_due(
        &self,
        shard: &str,
        before: i64,
        after: Option<&DueCursor>,
        limit: usize,
    ) -> Result<(Vec<RecordKey>, Option<DueCursor>), RepoError> {
        // (expires_at, pk, sk) is a total order the index already holds
        // (a WITHOUT ROWID index ends in the primary key), so the cursor is a
        // row-value comparison and each page is an index range read.
        let (after_exp, after_pk, after_sk) = match after {
            Some(c) => (c.expires_at, c.key.pk(), c.key.sk()),
            None => (i64::MIN, String::new(), String::new()),
        };
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT pk, sk, expires_at FROM records
                 WHERE exp_shard = ?1 AND expires_at <= ?2 AND (expires_at, pk, sk) > (?3, ?4, ?5)
                 ORDER BY expires_at, pk, sk LIMIT ?6",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(
                params![shard, before, after_exp, after_pk, after_sk, limit as i64],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .map_err(backend)?;
        let mut keys = Vec::new();
        let mut last = None;
        for row in rows {
            let (pk, sk, expires_at) = row.map_err(backend)?;
            let key =
                RecordKey::from_keys(&pk, &sk).map_err(|e| RepoError::Corrupt(e.to_string()))?;
            last = Some(DueCursor {
                expires_at,
                key: key.clone(),
            });
            keys.push(key);
        }
        // A short page is the end of the shard.
        let next = if keys.len() < limit { None } else { last };
        Ok((keys, next))
    }

    async fn scan_records(
        &self,
        after: Option<(String, String)>,
        limit: usize,
    ) -> Result<(Vec<StoredRecord>, Option<(String, String)>), RepoError> {
        let conn = self.reader();
        let (apk, ask) = after.unwrap_or_default();
        let mut stmt = conn
            .prepare_cached(
                "SELECT body, lease_owner, lease_until FROM records WHERE (pk, sk) > (?1, ?2) ORDER BY pk, sk LIMIT ?3",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![apk, ask, limit as i64], read_record)
            .map_err(backend)?;
        let records = rows
            .map(|r| r.map_err(backend).and_then(decode))
            .collect::<Result<Vec<_>, _>>()?;
        let next = (records.len() == limit)
            .then(|| records.last().map(|r| (r.pk.clone(), r.sk.clone())))
            .flatten();
        Ok((records, next))
    }

    async fn scan_tenants(&self) -> Result<Vec<(String, TenantState)>, RepoError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare("SELECT pk, generation, purged, purged_at FROM tenants ORDER BY pk")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    TenantState {
                        generation: r.get::<_, i64>(1)? as u64,
                        purged: r.get::<_, i64>(2)? != 0,
                        purged_at: r.get(3)?,
                    },
                ))
            })
            .map_err(backend)?;
        rows.map(|r| r.map_err(backend)).collect()
    }

    async fn restore_tenant(&self, pk: &str, state: TenantState) -> Result<bool, RepoError> {
        let mut conn = self.conn();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        let newer_or_same = tenant_row(&tx, pk)?.is_some_and(|t| {
            t.generation > state.generation
                || (t.generation == state.generation && (t.purged || !state.purged))
        });
        if newer_or_same {
            return Ok(false);
        }
        tx.execute(
            "INSERT OR REPLACE INTO tenants (pk, generation, purged, purged_at) VALUES (?1, ?2, ?3, ?4)",
            params![pk, state.generation as i64, i64::from(state.purged), state.purged_at],
        )
        .map_err(backend)?;
        tx.commit().map_err(backend)?;
        Ok(true)
    }

    async fn put_state(&self, nonce: &str, expires_at: i64) -> Result<(), RepoError> {
        let conn = self.conn();
        conn.execute(
            "INSERT INTO log.states (nonce, ttl) VALUES (?1, ?2)",
            params![nonce, expires_at],
        )
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                RepoError::ConditionFailed
            }
            other => backend(other),
        })?;
        Ok(())
    }

    async fn consume_state(&self, nonce: &str, now: i64) -> Result<bool, RepoError> {
        let conn = self.conn();
        // One statement: only the caller whose DELETE removes the row wins.
        let n = conn
            .execute(
                "DELETE FROM log.states WHERE nonce = ?1 AND ttl > ?2",
                params![nonce, now],
            )
            .map_err(backend)?;
        // Expired states are dead either way; drop them opportunistically.
        conn.execute("DELETE FROM log.states WHERE ttl <= ?1", [now])
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn record_event(
        &self,
        event_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool, RepoError> {
        let conn = self.conn();
        let n = conn
            .prepare_cached(CLAIM_EVENT)
            .map_err(backend)?
            .execute(params![event_id, expires_at, now])
            .map_err(backend)?;
        Ok(n == 1)
    }

    async fn event_seen(&self, event_id: &str, now: i64) -> Result<bool, RepoError> {
        let conn = self.reader();
        let ttl: Option<i64> = conn
            .prepare_cached("SELECT ttl FROM log.events WHERE event_id = ?1")
            .map_err(backend)?
            .query_row([event_id], |r| r.get(0))
            .optional()
            .map_err(backend)?;
        Ok(ttl.is_some_and(|t| t > now))
    }

    async fn append_audit(&self, record: &AuditRecord, expires_at: i64) -> Result<(), RepoError> {
        self.queue_audit(record, expires_at, None).await.map(|_| ())
    }

    async fn append_audit_claiming(
        &self,
        record: &AuditRecord,
        expires_at: i64,
        event_id: &str,
        now: i64,
        event_expires_at: i64,
    ) -> Result<bool, RepoError> {
        let claim = EventClaim {
            event_id: event_id.to_owned(),
            now,
            expires_at: event_expires_at,
        };
        self.queue_audit(record, expires_at, Some(claim)).await
    }

    async fn query_audit(
        &self,
        tenant: Option<&str>,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, RepoError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached(
                "SELECT body FROM log.audit_log WHERE (?1 IS NULL OR tenant = ?1) AND at_ms >= ?2 ORDER BY at_ms, sk LIMIT ?3",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![tenant, since_ms, limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(backend)?;
        rows.map(|r| serde_json::from_str(&r.map_err(backend)?).map_err(corrupt))
            .collect()
    }
}
