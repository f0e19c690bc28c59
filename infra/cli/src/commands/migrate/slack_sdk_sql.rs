//! `slack-sdk-sqlite3` and `slack-sdk-sqlalchemy`: slack_sdk's
//! `SQLite3InstallationStore` (a database file) and `SQLAlchemyInstallationStore`
//! (an SQLAlchemy URL; SQLite databases only, the one engine tokenkeep ships a
//! driver for).
//!
//! Both keep the same two tables, `slack_installations` and `slack_bots`, one
//! row per save (history). They differ in how they write empty ids (`''` vs
//! NULL) and times (`current_timestamp` text or unix seconds vs naive-UTC
//! datetime text); both are read. Rows of other apps (`client_id`) are left alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokenkeep_installations::TenantKey;

use super::sdk::{Latest, SdkEntry, access, is_wiped, refresh, webhook};
use super::source::{Scan, WIPED, parse_time_micros, secs_to_micros, split_scopes};
use crate::exit::Failure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Sqlite3,
    SqlAlchemy,
}

/// A slack_sdk SQL store on disk.
#[derive(Debug, Clone)]
pub struct SqlStore {
    path: PathBuf,
    installations: String,
    bots: String,
    client_id: String,
}

const INSTALLATION_COLUMNS: &[&str] = &[
    "id",
    "client_id",
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "enterprise_url",
    "team_id",
    "team_name",
    "bot_token",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_refresh_token",
    "bot_token_expires_at",
    "user_id",
    "user_token",
    "user_scopes",
    "user_refresh_token",
    "user_token_expires_at",
    "incoming_webhook_url",
    "incoming_webhook_channel",
    "incoming_webhook_channel_id",
    "incoming_webhook_configuration_url",
    "is_enterprise_install",
    "token_type",
    "installed_at",
];
const INSTALLATION_REQUIRED: &[&str] = &[
    "id",
    "client_id",
    "enterprise_id",
    "team_id",
    "user_id",
    "installed_at",
];
const BOT_COLUMNS: &[&str] = &[
    "id",
    "client_id",
    "app_id",
    "enterprise_id",
    "enterprise_name",
    "team_id",
    "team_name",
    "bot_token",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_refresh_token",
    "bot_token_expires_at",
    "is_enterprise_install",
    "installed_at",
];
const BOT_REQUIRED: &[&str] = &[
    "id",
    "client_id",
    "enterprise_id",
    "team_id",
    "bot_token",
    "installed_at",
];
/// The columns `--wipe-source` overwrites, per table.
const SECRET_COLUMNS: &[&str] = &[
    "bot_token",
    "bot_refresh_token",
    "user_token",
    "user_refresh_token",
    "incoming_webhook_url",
];

fn valid_table_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The database file an SQLAlchemy URL names: `sqlite:///relative.db`,
/// `sqlite:////absolute.db`, with an optional `+driver` and query string.
fn sqlalchemy_path(url: &str) -> Result<PathBuf, Failure> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| {
        Failure::config(format!(
            "{url:?} is not an SQLAlchemy URL (expected sqlite:///path/to.db)"
        ))
    })?;
    let dialect = scheme.split('+').next().unwrap_or_default();
    if dialect != "sqlite" {
        return Err(Failure::config(format!(
            "SQLAlchemy URL dialect {dialect:?} is not supported: only sqlite URLs can be read \
             (copy the two tables into an SQLite file, or export them, and migrate that)"
        )));
    }
    let path = rest.strip_prefix('/').unwrap_or(rest);
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Err(Failure::config(format!("{url:?} names no database file")));
    }
    Ok(PathBuf::from(path))
}

impl SqlStore {
    pub fn open(
        flavor: Flavor,
        location: &str,
        installations: &str,
        bots: &str,
        client_id: &str,
    ) -> Result<Self, Failure> {
        for t in [installations, bots] {
            if !valid_table_name(t) {
                return Err(Failure::config(format!(
                    "table name {t:?}: letters, digits and _ only"
                )));
            }
        }
        let path = match flavor {
            Flavor::Sqlite3 => PathBuf::from(location),
            Flavor::SqlAlchemy => sqlalchemy_path(location)?,
        };
        if !path.is_file() {
            return Err(Failure::msg(format!(
                "{}: no such database file",
                path.display()
            )));
        }
        Ok(Self {
            path,
            installations: installations.to_owned(),
            bots: bots.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    pub fn describe(&self) -> String {
        format!(
            "{} (tables {}, {})",
            self.path.display(),
            self.installations,
            self.bots
        )
    }

    fn connect(&self, flags: OpenFlags) -> Result<Connection, Failure> {
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| Failure::msg(format!("can't open {}: {e}", self.path.display())))?;
        // Fails here, not row by row, when the file isn't a database.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|e| {
            Failure::msg(format!(
                "{} is not a readable SQLite database: {e}",
                self.path.display()
            ))
        })?;
        Ok(conn)
    }

    /// Reads both tables. Runs on a blocking thread.
    pub fn scan(&self) -> Result<Scan, Failure> {
        let conn =
            self.connect(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let mut scan = Scan::default();
        let mut latest = Latest::default();
        let inst = table_columns(&conn, &self.installations)?;
        let bots = table_columns(&conn, &self.bots)?;
        if inst.is_none() && bots.is_none() {
            return Err(Failure::msg(format!(
                "{} has neither a {} nor a {} table: not a slack_sdk installation store",
                self.path.display(),
                self.installations,
                self.bots
            )));
        }
        if let Some(cols) = inst
            && self.check_schema(
                &conn,
                &mut scan,
                &self.installations,
                &cols,
                INSTALLATION_COLUMNS,
                INSTALLATION_REQUIRED,
            )?
        {
            self.read_rows(&conn, &mut scan, &self.installations, &cols, |scan, e| {
                latest.offer_installation(scan, e, true, true)
            })?;
        }
        if let Some(cols) = bots
            && self.check_schema(
                &conn,
                &mut scan,
                &self.bots,
                &cols,
                BOT_COLUMNS,
                BOT_REQUIRED,
            )?
        {
            self.read_rows(&conn, &mut scan, &self.bots, &cols, |scan, e| {
                latest.offer_bot(scan, e)
            })?;
        }
        latest.into_candidates(&mut scan);
        Ok(scan)
    }

    /// `false` (and a skip naming the table) for a schema this version doesn't know.
    fn check_schema(
        &self,
        conn: &Connection,
        scan: &mut Scan,
        table: &str,
        cols: &[String],
        known: &[&str],
        required: &[&str],
    ) -> Result<bool, Failure> {
        let unknown: Vec<&str> = cols
            .iter()
            .map(String::as_str)
            .filter(|c| !known.contains(c))
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !cols.iter().any(|x| x == c))
            .collect();
        if unknown.is_empty() && missing.is_empty() {
            return Ok(true);
        }
        let rows: i64 = conn
            .query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| {
                r.get(0)
            })
            .map_err(|e| Failure::msg(format!("reading {table}: {e}")))?;
        let mut why = Vec::new();
        if !unknown.is_empty() {
            why.push(format!("unknown columns {}", unknown.join(", ")));
        }
        if !missing.is_empty() {
            why.push(format!("missing columns {}", missing.join(", ")));
        }
        scan.skip(
            format!("table {table}"),
            format!("{rows} row(s); columns {}", cols.join(", ")),
            format!("unknown schema version ({})", why.join("; ")),
        );
        Ok(false)
    }

    fn read_rows(
        &self,
        conn: &Connection,
        scan: &mut Scan,
        table: &str,
        cols: &[String],
        mut offer: impl FnMut(&mut Scan, SdkEntry),
    ) -> Result<(), Failure> {
        let read_err = |e: rusqlite::Error| {
            Failure::msg(format!("reading {table} in {}: {e}", self.path.display()))
        };
        let list = cols
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut stmt = conn
            .prepare(&format!("SELECT {list} FROM \"{table}\" ORDER BY id"))
            .map_err(read_err)?;
        let mut rows = stmt.query([]).map_err(read_err)?;
        let mut others: BTreeMap<String, usize> = BTreeMap::new();
        while let Some(row) = rows.next().map_err(read_err)? {
            scan.entries_read += 1;
            let get = |name: &str| -> Option<ValueRef<'_>> {
                cols.iter()
                    .position(|c| c == name)
                    .and_then(|i| row.get_ref(i).ok())
            };
            let text = |name: &str| get(name).and_then(value_text);
            let id = get("id").and_then(|v| v.as_i64().ok()).unwrap_or_default();
            let origin = format!("{table} id {id}");
            let client_id = text("client_id").unwrap_or_default();
            if client_id != self.client_id {
                *others.entry(client_id).or_default() += 1;
                continue;
            }
            let mut entry = SdkEntry {
                origin,
                app_id: text("app_id"),
                enterprise_id: text("enterprise_id"),
                enterprise_name: text("enterprise_name"),
                enterprise_url: text("enterprise_url"),
                team_id: text("team_id"),
                team_name: text("team_name"),
                bot_token: access(text("bot_token")),
                bot_id: text("bot_id"),
                bot_user_id: text("bot_user_id"),
                bot_scopes: split_scopes(&text("bot_scopes").unwrap_or_default()),
                bot_refresh_token: refresh(text("bot_refresh_token")),
                user_id: text("user_id"),
                user_token: access(text("user_token")),
                user_scopes: split_scopes(&text("user_scopes").unwrap_or_default()),
                user_refresh_token: refresh(text("user_refresh_token")),
                incoming_webhook_url: webhook(text("incoming_webhook_url")),
                incoming_webhook_channel: text("incoming_webhook_channel"),
                incoming_webhook_channel_id: text("incoming_webhook_channel_id"),
                incoming_webhook_configuration_url: text("incoming_webhook_configuration_url"),
                is_enterprise_install: get("is_enterprise_install").is_some_and(value_bool),
                bot_wiped: is_wiped(&text("bot_token")),
                user_wiped: is_wiped(&text("user_token")),
                token_type: text("token_type"),
                ..SdkEntry::default()
            };
            let time = |name: &str| get(name).map(value_micros);
            let (installed, bot_exp, user_exp) = (
                time("installed_at"),
                time("bot_token_expires_at"),
                time("user_token_expires_at"),
            );
            let bad: Vec<&str> = [
                ("installed_at", &installed),
                ("bot_token_expires_at", &bot_exp),
                ("user_token_expires_at", &user_exp),
            ]
            .into_iter()
            .filter_map(|(name, v)| matches!(v, Some(Err(()))).then_some(name))
            .collect();
            if !bad.is_empty() || installed.is_none() {
                let tenant = entry.tenant().ok();
                let holds = entry.holds();
                scan.skip_tenant(
                    tenant,
                    &entry.origin,
                    holds,
                    format!("unreadable time in {}", bad.join(", ")),
                );
                continue;
            }
            let secs = |v: Option<Result<Option<i64>, ()>>| {
                v.and_then(Result::ok)
                    .flatten()
                    .map(|m| m.div_euclid(1_000_000))
            };
            entry.order = (
                installed.and_then(Result::ok).flatten().unwrap_or_default(),
                id,
            );
            entry.bot_token_expires_at = secs(bot_exp);
            entry.user_token_expires_at = secs(user_exp);
            offer(scan, entry);
        }
        for (other, n) in others {
            scan.skip(
                format!("table {table}"),
                format!("{n} row(s) of client id {other}"),
                format!(
                    "another app's installations (SLACK_CLIENT_ID is {})",
                    self.client_id
                ),
            );
        }
        Ok(())
    }

    /// Overwrites every token column of every row (history included) of the
    /// given tenants, then rebuilds the file so no freed page keeps a copy.
    /// Returns the rows changed. Runs on a blocking thread.
    pub fn wipe(&self, tenants: &BTreeSet<TenantKey>) -> Result<usize, Failure> {
        let conn =
            self.connect(OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let err = |e: rusqlite::Error| Failure::msg(format!("wiping {}: {e}", self.path.display()));
        // Freed and overwritten cells are zeroed, not left in the page.
        conn.pragma_update(None, "secure_delete", true)
            .map_err(err)?;
        let mut changed = 0;
        for table in [&self.installations, &self.bots] {
            let Some(cols) = table_columns(&conn, table)? else {
                continue;
            };
            let mut ids = Vec::new();
            {
                let mut stmt = conn
                    .prepare(&format!(
                        "SELECT id, enterprise_id, team_id, {} FROM \"{table}\" WHERE client_id = ?1",
                        if cols.iter().any(|c| c == "is_enterprise_install") { "is_enterprise_install" } else { "0" }
                    ))
                    .map_err(err)?;
                let mut rows = stmt.query([&self.client_id]).map_err(err)?;
                while let Some(row) = rows.next().map_err(err)? {
                    let e = row
                        .get_ref(1)
                        .ok()
                        .and_then(value_text)
                        .filter(|s| !s.is_empty());
                    let t = row
                        .get_ref(2)
                        .ok()
                        .and_then(value_text)
                        .filter(|s| !s.is_empty());
                    let org = row.get_ref(3).is_ok_and(value_bool);
                    if TenantKey::for_lookup(e.as_deref(), t.as_deref(), org)
                        .is_ok_and(|k| tenants.contains(&k))
                    {
                        ids.push(row.get::<_, i64>(0).map_err(err)?);
                    }
                }
            }
            // NOT NULL token columns (slack_bots.bot_token) get the marker;
            // the others become NULL.
            let sets: Vec<String> = SECRET_COLUMNS
                .iter()
                .filter(|c| cols.iter().any(|x| x == *c))
                .map(|c| {
                    if c.ends_with("_token") && !c.contains("refresh") {
                        format!("\"{c}\" = CASE WHEN \"{c}\" IS NULL THEN NULL ELSE '{WIPED}' END")
                    } else {
                        format!("\"{c}\" = NULL")
                    }
                })
                .collect();
            if sets.is_empty() || ids.is_empty() {
                continue;
            }
            let tx = conn.unchecked_transaction().map_err(err)?;
            {
                let mut update = tx
                    .prepare(&format!(
                        "UPDATE \"{table}\" SET {} WHERE id = ?1",
                        sets.join(", ")
                    ))
                    .map_err(err)?;
                for id in &ids {
                    changed += update.execute([id]).map_err(err)?;
                }
            }
            tx.commit().map_err(err)?;
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
            .map_err(err)?;
        Ok(changed)
    }
}

/// The table's columns, or `None` if there is no such table.
fn table_columns(conn: &Connection, table: &str) -> Result<Option<Vec<String>>, Failure> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info(\"{table}\")"))
        .map_err(|e| Failure::msg(format!("reading the schema of {table}: {e}")))?;
    let cols: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(1))
        .and_then(|rows| rows.collect())
        .map_err(|e| Failure::msg(format!("reading the schema of {table}: {e}")))?;
    Ok((!cols.is_empty()).then_some(cols))
}

fn value_text(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8(t.to_vec()).ok(),
    }
}

fn value_bool(v: ValueRef<'_>) -> bool {
    match v {
        ValueRef::Integer(i) => i != 0,
        ValueRef::Real(f) => f != 0.0,
        ValueRef::Text(t) => matches!(t, b"1" | b"true" | b"True" | b"TRUE"),
        _ => false,
    }
}

/// `Ok(None)` for NULL, `Err` for a value that isn't a time.
fn value_micros(v: ValueRef<'_>) -> Result<Option<i64>, ()> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => i.checked_mul(1_000_000).map(Some).ok_or(()),
        ValueRef::Real(f) => secs_to_micros(f).map(Some).ok_or(()),
        ValueRef::Text(t) => std::str::from_utf8(t)
            .ok()
            .and_then(parse_time_micros)
            .map(Some)
            .ok_or(()),
        ValueRef::Blob(_) => Err(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlalchemy_urls_name_sqlite_files_only() {
        assert_eq!(
            sqlalchemy_path("sqlite:///data/app.db").unwrap(),
            PathBuf::from("data/app.db")
        );
        assert_eq!(
            sqlalchemy_path("sqlite:////var/lib/app.db").unwrap(),
            PathBuf::from("/var/lib/app.db")
        );
        assert_eq!(
            sqlalchemy_path("sqlite+pysqlite:///app.db?timeout=5").unwrap(),
            PathBuf::from("app.db")
        );
        assert!(sqlalchemy_path("sqlite://").is_err());
        assert!(sqlalchemy_path("sqlite:///:memory:").is_err());
        assert!(sqlalchemy_path("postgresql://u@h/db").is_err());
        assert!(sqlalchemy_path("app.db").is_err());
    }

    #[test]
    fn table_names_cannot_inject_sql() {
        assert!(valid_table_name("slack_installations"));
        assert!(!valid_table_name("x\"; DROP TABLE y; --"));
        assert!(!valid_table_name(""));
    }
}
