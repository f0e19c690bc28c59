//! AES-256-GCM sealing of one secret field.
//!
//! Sealed format (version 1): `0x01 | nonce (12 bytes) | ciphertext | tag (16 bytes)`.
//! The format byte is also authenticated (it is the first byte of the AAD), so a
//! future format can't be downgraded into this one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::{EnvelopeError, PlainDataKey};

pub const SEAL_FORMAT_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Associated data: an unambiguous, length-prefixed list of named parts.
///
/// Length prefixes matter: without them `("ab", "c")` and `("a", "bc")` encode
/// the same, and a value could be shifted between two bound attributes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Aad(Vec<u8>);

impl Aad {
    pub fn new() -> Self {
        Self(vec![SEAL_FORMAT_VERSION])
    }

    pub fn part(mut self, name: &str, value: &[u8]) -> Self {
        self.push(name, value);
        self
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.extend_from_slice(&(name.len() as u32).to_be_bytes());
        self.0.extend_from_slice(name.as_bytes());
        self.0
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.0.extend_from_slice(value);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Encrypts `plaintext` under `key` with a fresh random nonce.
///
/// Random 96-bit nonces are safe here because each data key seals only the few
/// fields of one record write (far below the 2^32 messages-per-key bound).
pub fn seal(key: &PlainDataKey, aad: &Aad, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    let cipher = Aes256Gcm::new(key.bytes().into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ciphertext = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| EnvelopeError::Format("plaintext too long"))?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    out.push(SEAL_FORMAT_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ciphertext);
    Ok(out)
}

/// Decrypts a sealed field. Any mismatch (key, AAD, nonce, ciphertext, tag,
/// format byte) is `EnvelopeError::Decrypt`: never a wrong plaintext.
pub fn open(
    key: &PlainDataKey,
    aad: &Aad,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
    if sealed.len() < 1 + NONCE_LEN + TAG_LEN {
        return Err(EnvelopeError::Decrypt);
    }
    if sealed[0] != SEAL_FORMAT_VERSION {
        return Err(EnvelopeError::Decrypt);
    }
    let cipher = Aes256Gcm::new(key.bytes().into());
    let nonce = Nonce::from_slice(&sealed[1..1 + NONCE_LEN]);
    cipher
        .decrypt(
            nonce,
            Payload {
                msg: &sealed[1 + NONCE_LEN..],
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| EnvelopeError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn aad() -> Aad {
        Aad::new().part("pk", b"T#-#T1").part("field", b"bot_token")
    }

    #[test]
    fn round_trip_and_fresh_nonce() {
        let key = PlainDataKey::random();
        let a = seal(&key, &aad(), b"xoxb-1").unwrap();
        let b = seal(&key, &aad(), b"xoxb-1").unwrap();
        assert_ne!(a, b, "each seal draws a new nonce");
        assert_eq!(&*open(&key, &aad(), &a).unwrap(), b"xoxb-1");
    }

    #[test]
    fn aad_parts_are_length_prefixed() {
        // Given two part lists whose concatenation is equal, their AADs still differ.
        let x = Aad::new().part("a", b"bc");
        let y = Aad::new().part("ab", b"c");
        assert_ne!(x, y);
    }

    #[test]
    fn wrong_key_aad_or_truncation_fails() {
        let key = PlainDataKey::random();
        let sealed = seal(&key, &aad(), b"secret").unwrap();
        assert!(matches!(
            open(&PlainDataKey::random(), &aad(), &sealed),
            Err(EnvelopeError::Decrypt)
        ));
        let other = Aad::new().part("pk", b"T#-#T2").part("field", b"bot_token");
        assert!(matches!(
            open(&key, &other, &sealed),
            Err(EnvelopeError::Decrypt)
        ));
        assert!(matches!(
            open(&key, &aad(), &sealed[..10]),
            Err(EnvelopeError::Decrypt)
        ));
        assert!(matches!(
            open(&key, &aad(), &[]),
            Err(EnvelopeError::Decrypt)
        ));
    }

    proptest! {
        #[test]
        fn any_input_round_trips(plain in proptest::collection::vec(any::<u8>(), 0..512), name in "[a-z_]{1,16}") {
            let key = PlainDataKey::random();
            let aad = Aad::new().part(&name, b"v");
            let sealed = seal(&key, &aad, &plain).unwrap();
            prop_assert_eq!(&*open(&key, &aad, &sealed).unwrap(), &plain);
        }

        #[test]
        fn any_single_byte_change_fails(plain in proptest::collection::vec(any::<u8>(), 0..128), pos in any::<usize>(), flip in 1u8..=255) {
            let key = PlainDataKey::random();
            let mut sealed = seal(&key, &aad(), &plain).unwrap();
            let i = pos % sealed.len();
            sealed[i] ^= flip;
            prop_assert!(open(&key, &aad(), &sealed).is_err());
        }
    }
}
