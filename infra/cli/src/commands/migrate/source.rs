//! What every source reader hands the migration: importable records, and the
//! records it had to skip, each named by where it sits in the source and what
//! it holds (never a token).

use tokenkeep_installations::{ImportedRecord, RecordKind, TenantKey};

/// The value `--wipe-source` writes over a token; a reader that meets it
/// treats the field as absent (the token lives in tokenkeep now).
pub const WIPED: &str = "wiped-by-tokenkeep-migrate";

/// A token field as read: absent, wiped by an earlier run, or a value.
pub fn token_value(raw: Option<String>) -> Option<String> {
    raw.filter(|t| !t.is_empty() && t != WIPED)
}

/// One record a source offers for import.
#[derive(Debug)]
pub struct Candidate {
    /// Where it comes from: a row id, a file path or an object key.
    pub origin: String,
    pub record: ImportedRecord,
}

/// A source record left out of the migration, and why.
#[derive(Debug, Clone)]
pub struct Skip {
    pub origin: String,
    /// The tenant it belongs to, when its ids could be read: a tenant with a
    /// skipped record is never wiped from the source.
    pub tenant: Option<TenantKey>,
    /// What the record holds (ids, which fields), never a token.
    pub holds: String,
    pub reason: String,
}

/// Everything a source reader found.
#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<Candidate>,
    pub skipped: Vec<Skip>,
    /// Rows / objects read, history included.
    pub entries_read: usize,
}

impl Scan {
    pub fn skip(
        &mut self,
        origin: impl Into<String>,
        holds: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.skipped.push(Skip {
            origin: origin.into(),
            tenant: None,
            holds: holds.into(),
            reason: reason.into(),
        });
    }

    pub fn skip_tenant(
        &mut self,
        tenant: Option<TenantKey>,
        origin: impl Into<String>,
        holds: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.skipped.push(Skip {
            origin: origin.into(),
            tenant,
            holds: holds.into(),
            reason: reason.into(),
        });
    }
}

/// A short description of a tenant for skip reports: `enterprise E1, team T1`.
pub fn describe_ids(enterprise: Option<&str>, team: Option<&str>, user: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(e) = enterprise.filter(|s| !s.is_empty()) {
        parts.push(format!("enterprise {e}"));
    }
    if let Some(t) = team.filter(|s| !s.is_empty()) {
        parts.push(format!("team {t}"));
    }
    if let Some(u) = user.filter(|s| !s.is_empty()) {
        parts.push(format!("user {u}"));
    }
    if parts.is_empty() {
        "no ids".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The label reports use for a record key: `T#-#T1 bot`, `T#-#T1 user U1`.
pub fn record_name(tenant: &TenantKey, kind: &RecordKind) -> String {
    match kind {
        RecordKind::Bot => format!("{tenant} bot"),
        RecordKind::User(u) => format!("{tenant} user {u}"),
    }
}

/// Splits Slack's comma-separated scope strings.
pub fn split_scopes(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A source timestamp as the slack_sdk stores write them: unix seconds (int,
/// float or their text), or an ISO datetime in UTC with or without an offset
/// (`2024-05-01 12:00:00.123456`). Returns microseconds.
pub fn parse_time_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return secs_to_micros(secs);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts.as_microsecond());
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp().as_microsecond())
}

pub fn secs_to_micros(secs: f64) -> Option<i64> {
    let micros = (secs * 1_000_000.0).round();
    (micros.is_finite() && micros.abs() < 1e17).then_some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_the_slack_sdk_stores_write_them() {
        // SQLite3InstallationStore: current_timestamp text, or unix seconds.
        assert_eq!(
            parse_time_micros("2023-11-14 22:13:20"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_time_micros("1700000000"), Some(1_700_000_000_000_000));
        // SQLAlchemy: naive UTC with microseconds; file/S3: float seconds.
        assert_eq!(
            parse_time_micros("2023-11-14 22:13:20.250000"),
            Some(1_700_000_000_250_000)
        );
        assert_eq!(
            parse_time_micros("1700000000.25"),
            Some(1_700_000_000_250_000)
        );
        // ISO with an offset, as slack_sdk's own parser accepts.
        assert_eq!(
            parse_time_micros("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_time_micros("yesterday"), None);
        assert_eq!(parse_time_micros("1e300"), None);
    }

    #[test]
    fn wiped_and_empty_tokens_are_absent() {
        assert_eq!(token_value(Some(WIPED.into())), None);
        assert_eq!(token_value(Some(String::new())), None);
        assert_eq!(
            token_value(Some("xoxb-1".into())).as_deref(),
            Some("xoxb-1")
        );
    }
}
