use async_trait::async_trait;

use crate::{DataKey, EncryptedDataKey, EncryptionContext, EnvelopeError, PlainDataKey};

/// Where data keys come from and go back to: KMS in production, a local key file
/// in `tokenkeep dev`, a cache in front of either.
///
/// Contract, identical for every implementation (the conformance tests check it):
/// - `generate_data_key` returns a new random 256-bit key and its wrapped form,
///   bound to `ctx`.
/// - `decrypt_data_key` returns the key only for the exact `ctx` it was generated
///   with; any other context, key or altered blob is `EnvelopeError::Decrypt`
///   (or `AccessDenied` where the provider says so).
/// - `re_encrypt` wraps the same data key under `to_key_id` without the caller
///   seeing the plaintext (KMS `ReEncrypt`); the context is unchanged.
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// The key new data keys are generated under.
    fn key_id(&self) -> &str;

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError>;

    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<std::sync::Arc<PlainDataKey>, EnvelopeError>;

    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError>;
}

/// Lets `Arc<dyn KeyProvider>` (how stores hold providers) be wrapped by a cache.
#[async_trait]
impl<T: KeyProvider + ?Sized> KeyProvider for std::sync::Arc<T> {
    fn key_id(&self) -> &str {
        (**self).key_id()
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        (**self).generate_data_key(ctx).await
    }

    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<std::sync::Arc<PlainDataKey>, EnvelopeError> {
        (**self).decrypt_data_key(edk, ctx).await
    }

    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        (**self).re_encrypt(edk, ctx, to_key_id).await
    }
}
