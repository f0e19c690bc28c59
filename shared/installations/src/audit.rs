//! Audit records: one per token read, successful or not.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{RecordKey, RecordKind};

/// Which token a read asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    Bot,
    User,
    IncomingWebhook,
}

impl TokenKind {
    /// The access token a record holds: the bot's or a user's.
    pub fn of_record(key: &RecordKey) -> Self {
        match key.kind {
            RecordKind::Bot => TokenKind::Bot,
            RecordKind::User(_) => TokenKind::User,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    NotInstalled,
    NeedsReinstall,
    DecryptFailed,
    RefreshFailed,
    Expired,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::NotInstalled => "not_installed",
            Outcome::NeedsReinstall => "needs_reinstall",
            Outcome::DecryptFailed => "decrypt_failed",
            Outcome::RefreshFailed => "refresh_failed",
            Outcome::Expired => "expired",
            Outcome::Failed => "failed",
        }
    }
}

/// Who reads a token and why; goes into the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadContext {
    /// The function or command (`events`, `rotation`, `tokenkeep verify`).
    pub actor: String,
    /// The Lambda / HTTP request id, to join with logs.
    pub request_id: String,
    /// Why: the event type, `refresh`, an operator's reason.
    pub reason: String,
    /// When the caller's invocation ends (a Lambda's deadline). A read that
    /// would have to refresh starts the Slack call only if the refresh can
    /// also be written before then; see [`ReadContext::with_deadline`].
    pub deadline: Option<Instant>,
}

impl ReadContext {
    pub fn new(
        actor: impl Into<String>,
        request_id: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            request_id: request_id.into(),
            reason: reason.into(),
            deadline: None,
        }
    }

    /// Bounds the read by the invocation's deadline. Once Slack answers a
    /// refresh the old refresh token is spent and the new pair exists only in
    /// memory until it is written, so a refresh the invocation can't finish
    /// (Slack's timeout plus the write's retries,
    /// [`crate::StoreConfig::refresh_reserve`]) is not started: the read fails
    /// with `Expired` and the next request, or the rotation sweep, refreshes.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}

/// One audited token read. Holds no token, not even a fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Tenant partition key.
    pub tenant: String,
    /// Time of the read, unix milliseconds.
    pub at_ms: i64,
    pub token_kind: TokenKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub actor: String,
    pub request_id: String,
    pub reason: String,
    pub outcome: Outcome,
    /// Record version read (0 when there was no record).
    pub version: u64,
}

impl AuditRecord {
    /// The one way an audit record is built: who (`ctx`), what (`key`,
    /// `kind`), when, and how it went.
    pub fn new(
        key: &RecordKey,
        kind: TokenKind,
        ctx: &ReadContext,
        at_ms: i64,
        outcome: Outcome,
        version: u64,
    ) -> Self {
        Self {
            tenant: key.pk(),
            at_ms,
            token_kind: kind,
            user_id: match &key.kind {
                RecordKind::User(u) => Some(u.clone()),
                RecordKind::Bot => None,
            },
            actor: ctx.actor.clone(),
            request_id: ctx.request_id.clone(),
            reason: ctx.reason.clone(),
            outcome,
            version,
        }
    }

    /// Sort key: time first (queries by `since`), then request id and a random
    /// suffix so two reads in one millisecond don't collide.
    pub fn sort_key(&self, nonce: u32) -> String {
        format!("{:013}#{}#{:08x}", self.at_ms, self.request_id, nonce)
    }

    /// The JSON log line every read emits; `target` lets operators route it.
    pub fn log(&self) {
        tracing::info!(
            target: "tokenkeep::audit",
            tenant = %self.tenant,
            token_kind = ?self.token_kind,
            user_id = self.user_id.as_deref().unwrap_or(""),
            actor = %self.actor,
            request_id = %self.request_id,
            reason = %self.reason,
            outcome = self.outcome.as_str(),
            version = self.version,
            "token read"
        );
    }
}
