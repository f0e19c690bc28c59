use std::collections::BTreeMap;

/// KMS encryption context: non-secret key/value pairs bound to a data key.
///
/// KMS refuses to decrypt a data key under any other context, and CloudTrail
/// logs it, so binding the tenant here means a data key stolen from one tenant's
/// record can't be decrypted in the name of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The purpose value IAM policies condition on (`kms:EncryptionContext:purpose`).
    pub const PURPOSE_INSTALLATION: &'static str = "slack-installation";

    /// The context of an installation record's data key.
    pub fn for_installation(app_id: &str, tenant: &str) -> Self {
        let mut map = BTreeMap::new();
        map.insert("app_id".to_owned(), app_id.to_owned());
        map.insert("tenant".to_owned(), tenant.to_owned());
        map.insert("purpose".to_owned(), Self::PURPOSE_INSTALLATION.to_owned());
        Self(map)
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    pub fn pairs(&self) -> &BTreeMap<String, String> {
        &self.0
    }

    /// Unambiguous byte encoding (length-prefixed, sorted by key), used as AAD by
    /// the local provider and as the cache key.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        for (k, v) in &self.0 {
            out.extend_from_slice(&(k.len() as u32).to_be_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}
