//! Records brought in from another installation store (`tokenkeep migrate`):
//! what one holds, and what importing it did.

use tokenkeep_slack_api::{AccessToken, RefreshToken, WebhookUrl};
use zeroize::Zeroizing;

use crate::{InstallationMeta, RecordKey, StoredRecord};

/// One installation record as another store holds it: the key it goes under,
/// its plaintext attributes and its secrets. `Debug` shows no secret.
#[derive(Clone)]
pub struct ImportedRecord {
    pub key: RecordKey,
    /// `installed_at` is the source's own install time: it decides which of
    /// two copies is newer.
    pub meta: InstallationMeta,
    pub token: AccessToken,
    pub refresh_token: Option<RefreshToken>,
    pub incoming_webhook_url: Option<WebhookUrl>,
    /// The source's custom values / metadata, kept sealed.
    pub source_metadata: Option<SourceMetadata>,
}

/// Custom values / metadata a source store kept with an installation (JSON
/// text). Apps put anything there, secrets included, so it is sealed like a
/// token and `Debug` shows only its length.
#[derive(Clone)]
pub struct SourceMetadata(Zeroizing<String>);

impl SourceMetadata {
    pub fn new(json: impl Into<String>) -> Self {
        Self(Zeroizing::new(json.into()))
    }
    /// The raw text. Call only where it goes into `seal`.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SourceMetadata {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SourceMetadata({} bytes)", self.0.len())
    }
}

impl std::fmt::Debug for ImportedRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportedRecord")
            .field("key", &self.key)
            .field("installed_at", &self.meta.installed_at)
            .field("token_expires_at", &self.meta.token_expires_at)
            .field("rotating", &self.refresh_token.is_some())
            .field("has_webhook", &self.incoming_webhook_url.is_some())
            .field("has_source_metadata", &self.source_metadata.is_some())
            .finish_non_exhaustive()
    }
}

impl ImportedRecord {
    /// Same install and same token generation as the stored record: a rerun.
    pub fn is_same_as(&self, stored: &InstallationMeta) -> bool {
        stored.installed_at == self.meta.installed_at
            && stored.token_expires_at == self.meta.token_expires_at
    }

    /// Whether this copy should replace the stored record: a later install, or
    /// the same install whose rotating token the source refreshed after the
    /// stored copy was taken (so the stored refresh token is spent). A record
    /// tokenkeep marked `needs_reinstall` is replaced only by a later install.
    pub fn is_newer_than(&self, stored: &StoredRecord) -> bool {
        let (mine, theirs) = (&self.meta, &stored.meta);
        if mine.installed_at != theirs.installed_at {
            return mine.installed_at > theirs.installed_at;
        }
        match (mine.token_expires_at, theirs.token_expires_at) {
            (Some(a), Some(b)) => a > b && theirs.status == crate::Status::Active,
            _ => false,
        }
    }
}

/// What [`crate::InstallationStore::import_record`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ImportOutcome {
    /// No record was there; one was written.
    Created,
    /// An older record was replaced.
    Replaced,
    /// The store already holds this very install (a rerun).
    Unchanged,
    /// The store holds a newer record (a reinstall or refresh since); kept.
    KeptNewer,
    /// The tenant is purged here: an import never brings it back.
    Refused,
    /// This record was revoked here (`tokens_revoked`, or an app's or
    /// operator's delete) at or after the copy's `installed_at`: the copy is
    /// of a grant Slack revoked, and an import never brings it back.
    Revoked,
}

impl ImportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ImportOutcome::Created => "created",
            ImportOutcome::Replaced => "replaced",
            ImportOutcome::Unchanged => "unchanged",
            ImportOutcome::KeptNewer => "kept_newer",
            ImportOutcome::Refused => "refused",
            ImportOutcome::Revoked => "revoked",
        }
    }

    /// Whether the store turned the record away for good (purged tenant or
    /// revoked record): not imported, and no rerun will import it.
    pub fn refused(self) -> bool {
        matches!(self, ImportOutcome::Refused | ImportOutcome::Revoked)
    }

    /// Whether this run wrote the record.
    pub fn wrote(self) -> bool {
        matches!(self, ImportOutcome::Created | ImportOutcome::Replaced)
    }
}

/// What [`crate::InstallationStore::restore_revocation`] did with a
/// revocation tombstone from a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationRestore {
    /// The store's tombstone is as late or later: nothing written.
    Kept,
    /// The tombstone was written (or moved later).
    Written,
    /// Written, and the record the store still held from before the
    /// revocation was deleted with it (the store was rolled back past it).
    RevokedRecord,
}
