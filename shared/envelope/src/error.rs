use thiserror::Error;

/// Errors from key providers and from `seal`/`open`.
///
/// Callers act on `Decrypt` (the ciphertext, its context or its AAD don't match:
/// treat as tampering, fail the request) and `AccessDenied`/`Unavailable` (fail
/// closed, retry later). Add a variant only when a caller needs to act on it
/// differently; everything else is `Backend`.
#[derive(Debug, Error)]
pub enum EnvelopeError {
    /// Authentication failed: wrong key, wrong encryption context, wrong AAD or
    /// altered bytes. Deliberately one variant so callers can't tell which.
    #[error("decryption failed")]
    Decrypt,
    /// The key provider refused the operation (IAM, key policy, disabled key).
    #[error("key provider denied access")]
    AccessDenied,
    /// The key provider is throttling or unreachable; nothing was decrypted.
    #[error("key provider unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The stored bytes are not in a format this version understands.
    #[error("malformed envelope: {0}")]
    Format(&'static str),
    /// Local key file problems (`LocalKeyProvider` only).
    #[error("key file error")]
    Io(#[from] std::io::Error),
    /// Anything else from the provider's backend.
    #[error("key provider error")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}
