//! What the events function hands the store for `app_uninstalled` and
//! `tokens_revoked`, and what the store did with it.
//!
//! Slack retries an unacknowledged event for minutes (same body, new
//! signature), and `tokens_revoked` may arrive after `app_uninstalled`. A
//! retry that lands after the user reinstalled must not wipe the new
//! installation, so the store compares the event's `event_time` with the
//! installation it would remove, and remembers applied event ids.

/// A signed lifecycle event: its id and Slack's `event_time` (unix seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecycleEvent<'a> {
    pub event_id: &'a str,
    pub event_time: i64,
}

/// What applying a lifecycle event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleOutcome {
    /// Applied: this many records removed (0 when there was nothing left).
    Applied { records: usize },
    /// Older than the installation it names (installed after the event was
    /// sent): nothing removed. Logged and counted (`StaleLifecycleEvent`).
    Stale,
    /// This event id was applied before: a retry, acknowledged, nothing done.
    Duplicate,
}
