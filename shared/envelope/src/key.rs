use zeroize::Zeroizing;

/// A plaintext 256-bit data key. Zeroized on drop; no Debug of the bytes.
pub struct PlainDataKey(Zeroizing<[u8; 32]>);

impl PlainDataKey {
    /// Takes the key bytes from a slice; the caller zeroizes its own copy.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    pub fn random() -> Self {
        use rand::RngCore;
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self(key)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for PlainDataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainDataKey([REDACTED])")
    }
}

/// A data key wrapped by a key-encryption key: safe to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedDataKey {
    /// The wrapping key (KMS key ARN/id, or `local:<name>`).
    pub key_id: String,
    /// The provider's ciphertext blob.
    pub blob: Vec<u8>,
}

/// A freshly generated data key: the plaintext to seal with, and the wrapped
/// copy to store beside the sealed fields.
#[derive(Debug)]
pub struct DataKey {
    pub plaintext: PlainDataKey,
    pub encrypted: EncryptedDataKey,
}
