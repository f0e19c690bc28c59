//! Token reads served from memory while the installation file is unchanged.
//!
//! A token read needs the record and its tenant row. Reading them from SQLite
//! on every event costs a read transaction, B-tree descents and the JSON
//! decode of the record; the rows change only on installs, refreshes, leases,
//! purges and imports. So the decoded pair is kept here, and every read first
//! asks SQLite whether the installation file changed since the cache was
//! filled: `PRAGMA main.data_version` on this cache's own connection changes
//! whenever *any other connection* committed to the main file, whether this
//! process's writer or another process (`tokenkeep purge` while `tokenkeep
//! dev` runs). A change clears the whole cache, so a hit is exactly as fresh
//! as a read from SQLite at the same instant; no write path has to remember
//! to invalidate anything.
//!
//! That works because the audit log, event claims and OAuth states live in the
//! separate `log` file (see the repository's module doc): the per-event writes
//! never touch the main file, so they don't clear the cache.
//!
//! The cache holds sealed records as stored (never a decrypted field) and is
//! bounded: when full it starts over.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use super::{backend, decode, open_reader, read_record, tenant_row};
use crate::{RecordKey, RepoError, StoredRecord, TenantState};

/// Entries kept before the cache starts over (about 1.5 KB each).
const MAX_ENTRIES: usize = 10_000;

type Pair = (Option<StoredRecord>, Option<TenantState>);

pub(super) struct ReadCache {
    state: Mutex<State>,
}

struct State {
    /// Read-only; used for nothing but this cache, so its `data_version`
    /// sequence is ours alone (values of two connections don't compare).
    conn: Connection,
    /// `data_version` when `entries` was last known to match the file.
    data_version: Option<i64>,
    entries: HashMap<(String, String), Pair>,
}

impl ReadCache {
    pub(super) fn open(path: &Path) -> Result<Self, RepoError> {
        Ok(Self {
            state: Mutex::new(State {
                conn: open_reader(path)?,
                data_version: None,
                entries: HashMap::new(),
            }),
        })
    }

    /// The record at `key` and its tenant row, as of now.
    pub(super) fn get_with_tenant(&self, key: &RecordKey) -> Result<Pair, RepoError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *state;
        let version: i64 = state
            .conn
            .prepare_cached("PRAGMA main.data_version")
            .map_err(backend)?
            .query_row([], |r| r.get(0))
            .map_err(backend)?;
        if state.data_version != Some(version) {
            state.entries.clear();
            state.data_version = Some(version);
        }
        let id = (key.pk(), key.sk());
        if let Some(hit) = state.entries.get(&id) {
            return Ok(hit.clone());
        }
        // Read after the version check: if a commit lands in between, this
        // read already sees it and the next check clears it anyway, so an
        // entry is never older than the version it is filed under.
        let pair = read_pair(&mut state.conn, &id.0, &id.1)?;
        if state.entries.len() >= MAX_ENTRIES {
            state.entries.clear();
        }
        state.entries.insert(id, pair.clone());
        Ok(pair)
    }
}

/// Both rows in one read transaction: a snapshot, no commit lands between them.
pub(super) fn read_pair(conn: &mut Connection, pk: &str, sk: &str) -> Result<Pair, RepoError> {
    let tx = conn.transaction().map_err(backend)?;
    let row = tx
        .prepare_cached(
            "SELECT body, lease_owner, lease_until FROM records WHERE pk = ?1 AND sk = ?2",
        )
        .map_err(backend)?
        .query_row(params![pk, sk], read_record)
        .optional()
        .map_err(backend)?;
    let tenant = tenant_row(&tx, pk)?;
    tx.commit().map_err(backend)?;
    Ok((row.map(decode).transpose()?, tenant))
}
