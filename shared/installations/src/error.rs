use thiserror::Error;

/// Errors from a [`crate::Repository`].
///
/// `ConditionFailed` is the one callers act on (someone else wrote first, the
/// lease is held, the tenant was purged); everything else is plumbing. Add a
/// variant only when a caller must act on it differently.
#[derive(Debug, Error)]
pub enum RepoError {
    #[error("conditional write failed")]
    ConditionFailed,
    /// Throttled or timed out after the SDK's own retries; safe to retry later.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored item is malformed: {0}")]
    Corrupt(String),
    #[error("storage error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Errors from the [`crate::InstallationStore`].
///
/// Messages are safe to log; none carries a token, key or Slack secret. HTTP
/// handlers map them to generic responses.
#[derive(Debug, Error)]
pub enum StoreError {
    /// No installation for this tenant (never installed, uninstalled or purged).
    #[error("no installation for this tenant")]
    NotInstalled,
    /// The installation's grant is dead (refresh refused); the app must be reinstalled.
    #[error("installation needs reinstall")]
    NeedsReinstall,
    /// The token expired and could not be refreshed in time.
    #[error("token expired and was not refreshed")]
    Expired,
    /// The tenant was uninstalled (purged) after this install's code exchange
    /// started: its tokens are revoked, and the tenant stays closed. The user
    /// installs again.
    #[error("tenant was uninstalled while the install was in flight")]
    PurgedDuringInstall,
    /// Another writer changed the record first.
    #[error("concurrent update")]
    Conflict,
    /// Sealed data failed to open: wrong key, wrong context or tampered record.
    #[error("sealed data failed to open")]
    Integrity,
    /// The input is not a valid installation (missing ids, bad format).
    #[error("invalid installation: {0}")]
    Invalid(&'static str),
    /// The token refresh at Slack failed.
    #[error("token refresh failed")]
    Refresh(#[source] tokenkeep_slack_api::SlackError),
    #[error(transparent)]
    Envelope(tokenkeep_envelope::EnvelopeError),
    #[error(transparent)]
    Repository(#[from] RepoError),
}

impl From<tokenkeep_envelope::EnvelopeError> for StoreError {
    fn from(e: tokenkeep_envelope::EnvelopeError) -> Self {
        match e {
            tokenkeep_envelope::EnvelopeError::Decrypt => StoreError::Integrity,
            other => StoreError::Envelope(other),
        }
    }
}

/// Why [`InstallationStore::verify_record`](crate::InstallationStore::verify_record)
/// found a record unusable. Error kinds only, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The data key did not unwrap (wrong key or encryption context: a record
    /// moved to another tenant, a key this deployment can't use).
    #[error("data key did not unwrap")]
    DataKey(#[source] tokenkeep_envelope::EnvelopeError),
    /// The data key unwrapped but a sealed field failed authentication
    /// (tampered ciphertext, bound attribute or field set).
    #[error("a sealed field failed authentication")]
    Field,
    /// Anything else, e.g. the audit record could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}
