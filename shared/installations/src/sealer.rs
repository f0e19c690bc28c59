//! Record sealing: [`RecordSealer`] turns secrets into a [`StoredRecord`]'s
//! sealed fields and back. One data key per record write (KMS
//! `GenerateDataKey` under the tenant's encryption context), AES-256-GCM per
//! field, and an AAD that binds each field to the record's key, version,
//! generation, bound attributes and (from format 2) the whole field set, so
//! a field moved, rolled back or left alone after another was deleted fails
//! to open. The store decides *when* to seal and open; this is *how*.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use tokenkeep_envelope::{Aad, EncryptedDataKey, EncryptionContext, KeyProvider, open, seal};
use zeroize::Zeroizing;

use crate::record::{RECORD_FORMAT, field};
use crate::schema;
use crate::{InstallationMeta, RecordKey, StoreError, StoredRecord};

fn aad(record: &StoredRecord, field: &str, bound: &[u8]) -> Aad {
    let aad = Aad::new()
        .part("pk", record.pk.as_bytes())
        .part("sk", record.sk.as_bytes())
        .part("field", field.as_bytes())
        .part("version", &record.version.to_be_bytes())
        .part("generation", &record.generation.to_be_bytes())
        .part("attributes", bound);
    match record.format {
        1 => aad,
        // The field set: names are `[a-z_]+`, so joining them is unambiguous.
        _ => aad.part("format", &[record.format]).part(
            "fields",
            record
                .sealed
                .keys()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(",")
                .as_bytes(),
        ),
    }
}

/// A record's sealed fields, opened: (field name, plaintext), zeroized on drop.
pub(crate) type OpenedFields = Vec<(String, Zeroizing<Vec<u8>>)>;

/// Seals and opens records for one app (the `app_id` of every data key's
/// encryption context) through one key provider.
#[derive(Debug, Clone)]
pub(crate) struct RecordSealer {
    keys: Arc<dyn KeyProvider>,
    app_id: String,
}

impl RecordSealer {
    pub(crate) fn new(keys: Arc<dyn KeyProvider>, app_id: impl Into<String>) -> Self {
        Self {
            keys,
            app_id: app_id.into(),
        }
    }

    pub(crate) fn keys(&self) -> &Arc<dyn KeyProvider> {
        &self.keys
    }

    /// The encryption context of a tenant's data keys: the app and the
    /// tenant, so a data key moved to another tenant's record does not open.
    pub(crate) fn context(&self, pk: &str) -> EncryptionContext {
        EncryptionContext::for_installation(&self.app_id, pk)
    }

    /// Seals `secrets` into a new record under a fresh data key. The record's
    /// version and generation are part of every field's AAD.
    pub(crate) async fn seal(
        &self,
        key: &RecordKey,
        meta: InstallationMeta,
        version: u64,
        generation: u64,
        secrets: &[(&str, &str)],
    ) -> Result<StoredRecord, StoreError> {
        let dk = match secrets.is_empty() {
            true => None,
            false => Some(self.new_data_key(key).await?),
        };
        self.seal_with(dk, key, meta, version, generation, secrets)
    }

    /// A fresh data key for one record write.
    pub(crate) async fn new_data_key(
        &self,
        key: &RecordKey,
    ) -> Result<tokenkeep_envelope::DataKey, StoreError> {
        Ok(self
            .keys
            .generate_data_key(&self.context(&key.pk()))
            .await?)
    }

    /// Seals under a data key the caller already holds (the refresh path gets
    /// it before calling Slack, so a KMS failure can't strand a new token pair).
    pub(crate) fn seal_with(
        &self,
        dk: Option<tokenkeep_envelope::DataKey>,
        key: &RecordKey,
        meta: InstallationMeta,
        version: u64,
        generation: u64,
        secrets: &[(&str, &str)],
    ) -> Result<StoredRecord, StoreError> {
        let pk = key.pk();
        let rotating = meta
            .token_expires_at
            .filter(|_| secrets.iter().any(|(f, _)| *f == field::REFRESH_TOKEN));
        let mut record = StoredRecord {
            exp_shard: rotating.map(|_| schema::expiry_shard(&pk)),
            expires_at: rotating,
            pk,
            sk: key.sk(),
            version,
            generation,
            meta,
            data_key: String::new(),
            data_key_id: String::new(),
            sealed: secrets
                .iter()
                .map(|(name, _)| ((*name).to_owned(), String::new()))
                .collect(),
            format: RECORD_FORMAT,
            lease_owner: None,
            lease_until: None,
        };
        let Some(dk) = dk.filter(|_| !secrets.is_empty()) else {
            record.sealed.clear();
            return Ok(record);
        };
        let bound = record.meta.bound_bytes();
        for (name, value) in secrets {
            let sealed = seal(&dk.plaintext, &aad(&record, name, &bound), value.as_bytes())?;
            record.sealed.insert((*name).to_owned(), B64.encode(sealed));
        }
        record.data_key = B64.encode(&dk.encrypted.blob);
        record.data_key_id = dk.encrypted.key_id;
        Ok(record)
    }

    /// Opens one sealed field of a record. `Ok(None)` if the record has no such field.
    pub(crate) async fn open_field(
        &self,
        record: &StoredRecord,
        name: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        if !record.sealed.contains_key(name) {
            return Ok(None);
        }
        let key = self.unwrap_data_key(record).await?;
        self.open_with(&key, record, name).map(Some)
    }

    /// Opens every sealed field of a record under one unwrapped data key (one
    /// key-provider call however many fields: a refresh re-seals them all).
    pub(crate) async fn open_fields(
        &self,
        record: &StoredRecord,
    ) -> Result<OpenedFields, StoreError> {
        if record.sealed.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.unwrap_data_key(record).await?;
        self.open_all_with(&key, record)
    }

    /// Every sealed field, opened under a data key already unwrapped.
    pub(crate) fn open_all_with(
        &self,
        key: &tokenkeep_envelope::PlainDataKey,
        record: &StoredRecord,
    ) -> Result<OpenedFields, StoreError> {
        record
            .sealed
            .keys()
            .map(|name| Ok((name.clone(), self.open_with(key, record, name)?)))
            .collect()
    }

    /// The record's data key, unwrapped by the key provider under the
    /// record's tenant context (a key moved to another tenant does not open).
    pub(crate) async fn unwrap_data_key(
        &self,
        record: &StoredRecord,
    ) -> Result<Arc<tokenkeep_envelope::PlainDataKey>, StoreError> {
        self.unwrap_data_key_for_report(record)
            .await
            .map_err(|e| match e {
                // A wrapped key that is not even base64 was tampered with.
                tokenkeep_envelope::EnvelopeError::Format(_) => StoreError::Integrity,
                other => other.into(),
            })
    }

    /// [`Self::unwrap_data_key`] with the key provider's own error, for a
    /// report that tells a key problem from a field that fails to open.
    pub(crate) async fn unwrap_data_key_for_report(
        &self,
        record: &StoredRecord,
    ) -> Result<Arc<tokenkeep_envelope::PlainDataKey>, tokenkeep_envelope::EnvelopeError> {
        let edk = Self::wrapped_key(record)?;
        self.keys
            .decrypt_data_key(&edk, &self.context(&record.pk))
            .await
    }

    fn open_with(
        &self,
        key: &tokenkeep_envelope::PlainDataKey,
        record: &StoredRecord,
        name: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let sealed = record.sealed.get(name).ok_or(StoreError::Integrity)?;
        let sealed = B64.decode(sealed).map_err(|_| StoreError::Integrity)?;
        Ok(open(
            key,
            &aad(record, name, &record.meta.bound_bytes()),
            &sealed,
        )?)
    }

    /// The record's data key wrapped under `to_key` instead (KMS `ReEncrypt`:
    /// the plaintext key never leaves KMS), as the record stores it: (base64
    /// blob, key id). The sealed fields and their AAD do not change.
    pub(crate) async fn rewrap(
        &self,
        record: &StoredRecord,
        to_key: &str,
    ) -> Result<(String, String), StoreError> {
        let edk = Self::wrapped_key(record).map_err(|_| StoreError::Integrity)?;
        let rewrapped = self
            .keys
            .re_encrypt(&edk, &self.context(&record.pk), to_key)
            .await?;
        Ok((B64.encode(&rewrapped.blob), rewrapped.key_id))
    }

    fn wrapped_key(
        record: &StoredRecord,
    ) -> Result<EncryptedDataKey, tokenkeep_envelope::EnvelopeError> {
        Ok(EncryptedDataKey {
            key_id: record.data_key_id.clone(),
            blob: B64.decode(&record.data_key).map_err(|_| {
                tokenkeep_envelope::EnvelopeError::Format("malformed wrapped data key")
            })?,
        })
    }
}
