//! A key-encryption key in a local file, for `tokenkeep dev` only.
//!
//! It wraps data keys the way KMS does from the caller's point of view: the
//! encryption context is authenticated (AES-256-GCM AAD), so a wrong context
//! fails with `EnvelopeError::Decrypt` exactly as KMS answers
//! `InvalidCiphertextException`. The file is as secret as the whole store; it
//! gives no protection against someone who can read the data directory.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::seal::{Aad, open, seal};
use crate::{
    DataKey, EncryptedDataKey, EncryptionContext, EnvelopeError, KeyProvider, PlainDataKey,
};

const PREFIX: &str = "local:";

pub struct LocalKeyProvider {
    dir: PathBuf,
    key_id: String,
    keks: Mutex<HashMap<String, Arc<PlainDataKey>>>,
}

impl std::fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("dir", &self.dir)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl LocalKeyProvider {
    /// Uses (creating on first use, mode 0600) the key `name` under `dir`.
    /// Its key id is `local:<name>`.
    pub fn open(dir: impl Into<PathBuf>, name: &str) -> Result<Self, EnvelopeError> {
        let provider = Self {
            dir: dir.into(),
            key_id: format!("{PREFIX}{name}"),
            keks: Mutex::new(HashMap::new()),
        };
        provider.kek(&provider.key_id, Create::IfMissing)?;
        Ok(provider)
    }

    fn kek(&self, key_id: &str, create: Create) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        let name = key_id
            .strip_prefix(PREFIX)
            .ok_or(EnvelopeError::AccessDenied)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(EnvelopeError::AccessDenied);
        }
        let mut keks = self.keks.lock().expect("kek map poisoned");
        if let Some(k) = keks.get(key_id) {
            return Ok(k.clone());
        }
        let path = self.dir.join(format!("{name}.kek"));
        // Reading never creates key material: a record naming a key we don't
        // have is refused like KMS refuses an unknown key.
        if create == Create::Never && !path.exists() {
            return Err(EnvelopeError::AccessDenied);
        }
        let key = Arc::new(load_or_create(&path)?);
        keks.insert(key_id.to_owned(), key.clone());
        Ok(key)
    }

    fn wrap(
        &self,
        key_id: &str,
        dk: &PlainDataKey,
        ctx: &EncryptionContext,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        // Wrapping under a new key (generate, or rekey's destination) may create it.
        let kek = self.kek(key_id, Create::IfMissing)?;
        let blob = seal(&kek, &wrap_aad(key_id, ctx), dk.bytes())?;
        Ok(EncryptedDataKey {
            key_id: key_id.to_owned(),
            blob,
        })
    }

    fn unwrap(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<PlainDataKey, EnvelopeError> {
        let kek = self.kek(&edk.key_id, Create::Never)?;
        let plain = open(&kek, &wrap_aad(&edk.key_id, ctx), &edk.blob)?;
        PlainDataKey::from_slice(&plain).ok_or(EnvelopeError::Decrypt)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Create {
    IfMissing,
    Never,
}

fn wrap_aad(key_id: &str, ctx: &EncryptionContext) -> Aad {
    Aad::new()
        .part("key_id", key_id.as_bytes())
        .part("context", &ctx.canonical_bytes())
}

fn load_or_create(path: &Path) -> Result<PlainDataKey, EnvelopeError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = zeroize::Zeroizing::new(bytes);
            PlainDataKey::from_slice(&bytes)
                .ok_or(EnvelopeError::Format("key file is not 32 bytes"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let key = PlainDataKey::random();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(key.bytes())?;
                    file.sync_all()?;
                    Ok(key)
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        let plaintext = PlainDataKey::random();
        let encrypted = self.wrap(&self.key_id, &plaintext, ctx)?;
        Ok(DataKey {
            plaintext,
            encrypted,
        })
    }

    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        self.unwrap(edk, ctx).map(Arc::new)
    }

    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        // Locally the plaintext passes through this process; acceptable for dev,
        // which is why production uses KMS ReEncrypt instead.
        let plain = self.unwrap(edk, ctx)?;
        self.wrap(to_key_id, &plain, ctx)
    }
}
