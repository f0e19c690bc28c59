//! KMS envelope encryption for Slack installation secrets.
//!
//! A record write asks a [`KeyProvider`] for a fresh 256-bit data key bound to an
//! [`EncryptionContext`] (app, tenant, purpose). Each secret field is then
//! [`seal`]ed with AES-256-GCM under that data key, with associated data ([`Aad`])
//! that names the tenant, record, field and record version, so a ciphertext can't
//! be moved anywhere else and still open. Only the *encrypted* data key is stored.
//!
//! Providers: [`KmsKeyProvider`] (production) and [`LocalKeyProvider`] (a key file
//! for `tokenkeep dev`). [`CachingKeyProvider`] keeps decrypted data keys for a
//! bounded time and number of uses, so steady-state reads make no KMS call.

mod cache;
mod context;
mod error;
mod key;
mod kms;
mod local;
mod provider;
mod seal;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use cache::{CacheLimits, CacheStats, CachingKeyProvider};
pub use context::EncryptionContext;
pub use error::EnvelopeError;
pub use key::{DataKey, EncryptedDataKey, PlainDataKey};
pub use kms::KmsKeyProvider;
pub use local::LocalKeyProvider;
pub use provider::KeyProvider;
pub use seal::{Aad, SEAL_FORMAT_VERSION, open, seal};
