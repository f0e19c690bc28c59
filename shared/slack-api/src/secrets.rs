//! Secret newtypes for everything Slack hands us that grants access.
//!
//! Each type wraps a [`SecretString`]: `Debug` prints `[REDACTED]`, there is no
//! `Display` and no `Serialize`, and the only way to the bytes is
//! `expose_secret()`, called where the value goes on the wire or into `seal`.
//! A [`fingerprint`](AccessToken::fingerprint) (first 8 hex digits of SHA-256)
//! is the most a log line may show.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

macro_rules! secret_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value; the `String` moves in and is zeroized on drop.
            pub fn new(value: impl Into<String>) -> Self {
                Self(SecretString::from(value.into()))
            }

            /// The raw value. Call only where it goes on the wire or into `seal`.
            pub fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }

            /// A short, non-reversible identifier safe for logs and audit records.
            pub fn fingerprint(&self) -> String {
                let digest = Sha256::digest(self.0.expose_secret().as_bytes());
                hex::encode(&digest[..4])
            }

            /// Constant-time equality, for tests and token comparisons.
            pub fn ct_eq(&self, other: &Self) -> bool {
                use subtle_eq::ConstantTimeEq;
                self.0.expose_secret().as_bytes().ct_eq(other.0.expose_secret().as_bytes())
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "([REDACTED])"))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer).map(Self::new)
            }
        }
    };
}

/// Byte-slice equality whose time does not depend on where the slices differ.
mod subtle_eq {
    pub trait ConstantTimeEq {
        fn ct_eq(&self, other: &Self) -> bool;
    }
    impl ConstantTimeEq for [u8] {
        fn ct_eq(&self, other: &Self) -> bool {
            self.len() == other.len() && bool::from(subtle::ConstantTimeEq::ct_eq(self, other))
        }
    }
}

secret_newtype!(
    /// A bot (`xoxb-`), user (`xoxp-`) or rotating (`xoxe.`) access token.
    AccessToken
);
secret_newtype!(
    /// A single-use rotation refresh token (`xoxe-1-…`).
    RefreshToken
);
secret_newtype!(
    /// An incoming-webhook URL: whoever holds it can post to the channel.
    WebhookUrl
);
secret_newtype!(
    /// The Slack app's OAuth client secret.
    ClientSecret
);
secret_newtype!(
    /// The Slack app's request signing secret.
    SigningSecret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        // Given a token, when it is Debug-formatted, then only the type name shows.
        let token = AccessToken::new("xoxb-123-secret");
        let shown = format!("{token:?}");
        assert_eq!(shown, "AccessToken([REDACTED])");
        assert!(!shown.contains("xoxb"));
    }

    #[test]
    fn fingerprint_is_stable_and_not_the_token() {
        let a = AccessToken::new("xoxb-1");
        let b = AccessToken::new("xoxb-2");
        assert_eq!(a.fingerprint(), AccessToken::new("xoxb-1").fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 8);
        assert!(a.ct_eq(&AccessToken::new("xoxb-1")));
        assert!(!a.ct_eq(&b));
    }
}
