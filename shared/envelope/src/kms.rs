//! AWS KMS as the key provider.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use zeroize::Zeroize;

use crate::{
    DataKey, EncryptedDataKey, EncryptionContext, EnvelopeError, KeyProvider, PlainDataKey,
};

/// Data keys from `GenerateDataKey`, unwrapped with `Decrypt`, migrated with
/// `ReEncrypt`, always under the record's encryption context.
#[derive(Debug, Clone)]
pub struct KmsKeyProvider {
    client: aws_sdk_kms::Client,
    key_id: String,
}

impl KmsKeyProvider {
    pub fn new(client: aws_sdk_kms::Client, key_id: impl Into<String>) -> Self {
        Self {
            client,
            key_id: key_id.into(),
        }
    }
}

fn context_map(ctx: &EncryptionContext) -> HashMap<String, String> {
    ctx.pairs()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Maps a KMS failure to what the caller acts on. `InvalidCiphertextException`
/// (wrong context, wrong key, altered blob) is `Decrypt`, like a local AEAD failure.
fn classify<E, R>(err: SdkError<E, R>) -> EnvelopeError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let code = err.code().map(str::to_owned);
    match code.as_deref() {
        Some("InvalidCiphertextException" | "IncorrectKeyException") => EnvelopeError::Decrypt,
        Some(
            "AccessDeniedException"
            | "DisabledException"
            | "KMSInvalidStateException"
            | "NotFoundException",
        ) => {
            tracing::warn!(kms_error = code.as_deref(), "kms refused");
            EnvelopeError::AccessDenied
        }
        Some("ThrottlingException" | "KMSInternalException" | "DependencyTimeoutException") => {
            EnvelopeError::Unavailable(Box::new(err))
        }
        None => match err {
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => {
                EnvelopeError::Unavailable(Box::new(err))
            }
            other => EnvelopeError::Backend(Box::new(other)),
        },
        Some(_) => EnvelopeError::Backend(Box::new(err)),
    }
}

#[async_trait]
impl KeyProvider for KmsKeyProvider {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .set_encryption_context(Some(context_map(ctx)))
            .send()
            .await
            .map_err(classify)?;
        let key_id = out.key_id().unwrap_or(&self.key_id).to_owned();
        let blob = out
            .ciphertext_blob()
            .ok_or(EnvelopeError::Format("kms returned no ciphertext"))?
            .as_ref()
            .to_vec();
        let mut plain = out
            .plaintext
            .ok_or(EnvelopeError::Format("kms returned no plaintext"))?
            .into_inner();
        let plaintext = PlainDataKey::from_slice(&plain);
        plain.zeroize();
        let plaintext = plaintext.ok_or(EnvelopeError::Format("kms data key is not 32 bytes"))?;
        Ok(DataKey {
            plaintext,
            encrypted: EncryptedDataKey { key_id, blob },
        })
    }

    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        let out = self
            .client
            .decrypt()
            .key_id(&edk.key_id)
            .ciphertext_blob(Blob::new(edk.blob.clone()))
            .set_encryption_context(Some(context_map(ctx)))
            .send()
            .await
            .map_err(classify)?;
        let mut plain = out
            .plaintext
            .ok_or(EnvelopeError::Format("kms returned no plaintext"))?
            .into_inner();
        let key = PlainDataKey::from_slice(&plain);
        plain.zeroize();
        key.map(Arc::new).ok_or(EnvelopeError::Decrypt)
    }

    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        let out = self
            .client
            .re_encrypt()
            .ciphertext_blob(Blob::new(edk.blob.clone()))
            .source_key_id(&edk.key_id)
            .set_source_encryption_context(Some(context_map(ctx)))
            .destination_key_id(to_key_id)
            .set_destination_encryption_context(Some(context_map(ctx)))
            .send()
            .await
            .map_err(classify)?;
        let blob = out
            .ciphertext_blob()
            .ok_or(EnvelopeError::Format("kms returned no ciphertext"))?
            .as_ref()
            .to_vec();
        Ok(EncryptedDataKey {
            key_id: out.key_id().unwrap_or(to_key_id).to_owned(),
            blob,
        })
    }
}
