//! The installation store: tokens sealed before they reach the table, read only
//! for a [`VerifiedTenant`], every read audited.
//!
//! - [`InstallationStore`] is the API apps and functions use.
//! - [`Repository`] is the seam to storage: [`DynamoRepository`] in AWS,
//!   [`EmbeddedRepository`] (SQLite) for `tokenkeep dev`. Both pass the same
//!   conformance suite (`tests/repository_conformance.rs`).
//! - [`schema`] is the single source of table names, keys and indexes; the SAM
//!   template is checked against it.

mod audit;
pub(crate) mod clock;
mod dynamo;
mod embedded;
mod error;
mod import;
mod lifecycle;
mod metrics;
mod model;
mod record;
mod refresh;
mod repository;
pub mod schema;
mod sealer;
mod store;
mod tenant;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use audit::{AuditRecord, Outcome, ReadContext, TokenKind};
pub use clock::{Clock, ManualClock, SystemClock};
pub use dynamo::{DynamoRepository, create_tables};
pub use embedded::EmbeddedRepository;
pub use error::{RepoError, StoreError, VerifyError};
pub use import::{ImportOutcome, ImportedRecord, RevocationRestore, SourceMetadata};
pub use lifecycle::{LifecycleEvent, LifecycleOutcome};
pub use metrics::{CountingStoreMetrics, NoStoreMetrics, StoreMetric, StoreMetrics};
pub use model::{
    Installation, InstallationInfo, InstallationMeta, InstallationQuery, Status, UserTokens,
};
pub use record::{Expect, StoredRecord, TenantState};
pub use refresh::{RefreshMetrics, RotateOutcome};
pub use repository::{DueCursor, Repository};
pub use store::{InstallationStore, RekeyOutcome, StoreConfig};
pub use tenant::{RecordKey, RecordKind, TenantError, TenantKey, VerifiedTenant};
