//! Configuration from the environment. Errors name the missing variable;
//! nothing here panics, and no secret value is ever part of an error. Each
//! binary says which Slack secrets it uses ([`SecretsUsed`]) and loads only
//! those, so a function never holds a secret its role should not read.

use std::path::PathBuf;

use tokenkeep_installations::schema;
use tokenkeep_slack_api::{ClientSecret, SigningSecret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite file + local key file under `TOKENKEEP_DATA_DIR` (`tokenkeep dev`).
    Embedded,
    /// DynamoDB + KMS (AWS, or the emulator through `AWS_ENDPOINT_URL`).
    DynamoDb,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing required setting {0}")]
    Missing(&'static str),
    #[error("invalid value for {0}: {1}")]
    Invalid(&'static str, String),
    /// The Secrets Manager secret named by the variable holds no value under
    /// the key (the template creates the client secret empty on purpose).
    #[error("the Secrets Manager secret in {arn_var} has no {key} value (set it: docs/DEPLOY.md)")]
    EmptySecret {
        arn_var: &'static str,
        key: &'static str,
    },
    #[error("could not read the Secrets Manager secret named by {arn_var}")]
    Secrets {
        arn_var: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The binary asked for a secret it did not declare in [`SecretsUsed`]: a
    /// wiring bug, caught at cold start like a missing setting.
    #[error("{0} was not loaded: the binary does not declare it in SecretsUsed")]
    NotLoaded(&'static str),
}

/// The Slack secrets a binary reads at cold start. Each loads only what its
/// code uses, so each function's role can be denied the rest (template.yaml):
/// whoever takes over the internet-facing OAuth function gets no signing
/// secret to forge events with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsUsed {
    /// Only the client secret: code exchange and token refresh (OAuth, rotation, workers).
    Client,
    /// The client secret and the signing secret: binaries that verify
    /// Slack-signed requests and refresh on the request path (events, `tokenkeep dev`).
    ClientAndSigning,
}

impl SecretsUsed {
    fn includes(self, secret: SlackSecret) -> bool {
        match secret {
            SlackSecret::Client => true,
            SlackSecret::Signing => self == Self::ClientAndSigning,
        }
    }
}

/// One Slack secret and where it comes from: in AWS a Secrets Manager secret
/// (JSON `{"<json_key>": "..."}`) named by [`arn_var`](Self::arn_var), which
/// wins; otherwise (`tokenkeep dev`) the value in [`env_var`](Self::env_var).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlackSecret {
    Client,
    Signing,
}

impl SlackSecret {
    pub const ALL: [Self; 2] = [Self::Client, Self::Signing];

    /// The variable that holds the value itself.
    pub const fn env_var(self) -> &'static str {
        match self {
            Self::Client => "SLACK_CLIENT_SECRET",
            Self::Signing => "SLACK_SIGNING_SECRET",
        }
    }

    /// The variable that names the Secrets Manager secret holding the value.
    pub const fn arn_var(self) -> &'static str {
        match self {
            Self::Client => "TOKENKEEP_CLIENT_SECRET_ARN",
            Self::Signing => "TOKENKEEP_SIGNING_SECRET_ARN",
        }
    }

    /// The key of the value inside that secret's JSON.
    pub const fn json_key(self) -> &'static str {
        match self {
            Self::Client => "client_secret",
            Self::Signing => "signing_secret",
        }
    }
}

/// Settings shared by every binary. Debug shows no secret (the secret types
/// redact themselves).
#[derive(Debug, Clone)]
pub struct Config {
    pub slack_client_id: String,
    pub slack_client_secret: ClientSecret,
    /// Loaded only for [`SecretsUsed::ClientAndSigning`]; read it through
    /// [`signing_secret`](Self::signing_secret).
    slack_signing_secret: Option<SigningSecret>,
    pub slack_scopes: String,
    pub slack_user_scopes: String,
    pub slack_api_url: String,
    pub slack_authorize_url: String,
    /// `SLACK_RESPONSE_URL_BASE`: the only prefix `response_url` posts may go
    /// to (default `https://hooks.slack.com/`; tests point it at a fake Slack).
    pub slack_response_url_base: String,
    /// `SLACK_REDIRECT_URI`, when the app has more than one redirect URL.
    pub slack_redirect_uri: Option<String>,
    pub store: StoreKind,
    pub table: String,
    pub audit_table: String,
    pub kms_key_id: Option<String>,
    pub data_dir: PathBuf,
    pub refresh_window_minutes: i64,
    /// `TOKENKEEP_LAZY_QUEUE_URL`: the SQS queue lazy listener work goes to
    /// (AWS); unset in `tokenkeep dev`, which uses its embedded queue.
    pub lazy_queue_url: Option<String>,
}

/// Where settings come from; the environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment; empty values count as unset.
#[derive(Debug)]
pub struct Env;
impl Source for Env {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
            .filter(|v| !v.is_empty())
    }
}

#[derive(serde::Deserialize)]
struct SecretJson {
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
}

/// Reads one Slack secret from Secrets Manager. The raw JSON is zeroized; an
/// empty or absent value is an error naming the variable and the key.
async fn fetch_secret(
    client: &aws_sdk_secretsmanager::Client,
    secret: SlackSecret,
    arn: &str,
) -> Result<String, ConfigError> {
    let arn_var = secret.arn_var();
    let out = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| ConfigError::Secrets {
            arn_var,
            source: Box::new(e),
        })?;
    let raw = zeroize::Zeroizing::new(out.secret_string().unwrap_or_default().to_owned());
    let parsed: SecretJson = serde_json::from_str(&raw).map_err(|_| {
        ConfigError::Invalid(
            arn_var,
            format!("secret is not JSON with a {:?} string", secret.json_key()),
        )
    })?;
    let value = match secret {
        SlackSecret::Client => parsed.client_secret,
        SlackSecret::Signing => parsed.signing_secret,
    };
    value
        .filter(|v| !v.is_empty())
        .ok_or(ConfigError::EmptySecret {
            arn_var,
            key: secret.json_key(),
        })
}

impl Config {
    /// Reads the environment and the secrets `used` names, nothing more: each
    /// comes from the Secrets Manager secret its `TOKENKEEP_*_SECRET_ARN`
    /// names (read once, at cold start), otherwise from its `SLACK_*_SECRET`
    /// variable. A missing one is an error naming it, never a default.
    pub async fn from_env(used: SecretsUsed) -> Result<Self, ConfigError> {
        Self::load(&Env, used).await
    }

    /// As [`from_env`](Self::from_env), reading settings from `source`
    /// (Secrets Manager through the SDK's own environment: region, endpoint).
    pub async fn load(source: &dyn Source, used: SecretsUsed) -> Result<Self, ConfigError> {
        let configured: Vec<(SlackSecret, String)> = SlackSecret::ALL
            .into_iter()
            .filter(|secret| used.includes(*secret))
            .filter_map(|secret| source.get(secret.arn_var()).map(|arn| (secret, arn)))
            .collect();
        let (mut client_secret, mut signing_secret) = (None, None);
        if !configured.is_empty() {
            let client = aws_sdk_secretsmanager::Client::new(&crate::aws_config().await);
            for (secret, arn) in configured {
                let value = Some(fetch_secret(&client, secret, &arn).await?);
                match secret {
                    SlackSecret::Client => client_secret = value,
                    SlackSecret::Signing => signing_secret = value,
                }
            }
        }
        Self::from_source(source, used, client_secret, signing_secret)
    }

    /// Builds the config from `source`, with secrets already fetched (if
    /// any); a fetched value wins over the `SLACK_*_SECRET` variable. Secrets
    /// that `used` does not name are neither read nor kept.
    pub fn from_source(
        source: &dyn Source,
        used: SecretsUsed,
        client_secret: Option<String>,
        signing_secret: Option<String>,
    ) -> Result<Self, ConfigError> {
        let required = |name: &'static str| source.get(name).ok_or(ConfigError::Missing(name));
        let secret = |secret: SlackSecret, fetched: Option<String>| match fetched {
            Some(s) => Ok(s),
            None => required(secret.env_var()),
        };
        let client_secret = secret(SlackSecret::Client, client_secret)?;
        let signing_secret = if used.includes(SlackSecret::Signing) {
            Some(SigningSecret::new(secret(
                SlackSecret::Signing,
                signing_secret,
            )?))
        } else {
            None
        };
        let store = match source.get("TOKENKEEP_STORE").as_deref() {
            None | Some("embedded") => StoreKind::Embedded,
            Some("dynamodb") => StoreKind::DynamoDb,
            Some(other) => {
                return Err(ConfigError::Invalid(
                    "TOKENKEEP_STORE",
                    format!("{other:?} (expected embedded or dynamodb)"),
                ));
            }
        };
        let refresh_window_minutes = match source.get("TOKENKEEP_REFRESH_WINDOW_MINUTES") {
            None => 120,
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|m| (1..=11 * 60).contains(m))
                .ok_or(ConfigError::Invalid(
                    "TOKENKEEP_REFRESH_WINDOW_MINUTES",
                    "expected 1..=660".into(),
                ))?,
        };
        let kms_key_id = source.get("TOKENKEEP_KMS_KEY_ID");
        if store == StoreKind::DynamoDb && kms_key_id.is_none() {
            return Err(ConfigError::Missing("TOKENKEEP_KMS_KEY_ID"));
        }
        Ok(Self {
            slack_client_id: required("SLACK_CLIENT_ID")?,
            slack_client_secret: ClientSecret::new(client_secret),
            slack_signing_secret: signing_secret,
            // Least scope by default: mentions in, messages out.
            slack_scopes: source
                .get("SLACK_SCOPES")
                .unwrap_or_else(|| "app_mentions:read,chat:write".into()),
            slack_user_scopes: source.get("SLACK_USER_SCOPES").unwrap_or_default(),
            slack_api_url: source
                .get("SLACK_API_URL")
                .unwrap_or_else(|| "https://slack.com/api".into()),
            slack_authorize_url: source
                .get("SLACK_AUTHORIZE_URL")
                .unwrap_or_else(|| "https://slack.com/oauth/v2/authorize".into()),
            slack_response_url_base: source
                .get("SLACK_RESPONSE_URL_BASE")
                .unwrap_or_else(|| tokenkeep_slack_api::client::DEFAULT_RESPONSE_URL_BASE.into()),
            slack_redirect_uri: source.get("SLACK_REDIRECT_URI"),
            store,
            table: source
                .get("TOKENKEEP_TABLE")
                .unwrap_or_else(|| schema::DEFAULT_TABLE.into()),
            audit_table: source
                .get("TOKENKEEP_AUDIT_TABLE")
                .unwrap_or_else(|| schema::DEFAULT_AUDIT_TABLE.into()),
            kms_key_id,
            data_dir: source
                .get("TOKENKEEP_DATA_DIR")
                .map_or_else(|| PathBuf::from(".tokenkeep"), PathBuf::from),
            refresh_window_minutes,
            lazy_queue_url: source.get("TOKENKEEP_LAZY_QUEUE_URL"),
        })
    }

    /// The signing secret, for binaries that declared
    /// [`SecretsUsed::ClientAndSigning`].
    pub fn signing_secret(&self) -> Result<&SigningSecret, ConfigError> {
        self.slack_signing_secret
            .as_ref()
            .ok_or(ConfigError::NotLoaded("the Slack signing secret"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: [(&str, &str); 3] = [
        ("SLACK_CLIENT_ID", "123.456"),
        ("SLACK_CLIENT_SECRET", "cs-value"),
        ("SLACK_SIGNING_SECRET", "ss-value"),
    ];

    #[test]
    fn defaults_are_embedded_and_least_scope() {
        let c = Config::from_source(&BASE, SecretsUsed::ClientAndSigning, None, None).unwrap();
        assert_eq!(c.store, StoreKind::Embedded);
        assert_eq!(c.slack_scopes, "app_mentions:read,chat:write");
        assert_eq!(c.refresh_window_minutes, 120);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("cs-value") && !shown.contains("ss-value"),
            "Debug shows no secret"
        );
    }

    #[test]
    fn missing_and_invalid_settings_are_named() {
        let e = Config::from_source(&[("SLACK_CLIENT_ID", "1")], SecretsUsed::Client, None, None)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing required setting SLACK_CLIENT_SECRET"
        );
        let e = Config::from_source(
            &[("SLACK_CLIENT_SECRET", "a"), ("SLACK_SIGNING_SECRET", "b")],
            SecretsUsed::Client,
            None,
            None,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "missing required setting SLACK_CLIENT_ID");
        let dynamo = [
            ("SLACK_CLIENT_ID", "1"),
            ("SLACK_CLIENT_SECRET", "a"),
            ("SLACK_SIGNING_SECRET", "b"),
            ("TOKENKEEP_STORE", "dynamodb"),
        ];
        assert!(matches!(
            Config::from_source(&dynamo, SecretsUsed::Client, None, None),
            Err(ConfigError::Missing("TOKENKEEP_KMS_KEY_ID"))
        ));
        let bad = [
            ("SLACK_CLIENT_ID", "1"),
            ("SLACK_CLIENT_SECRET", "a"),
            ("SLACK_SIGNING_SECRET", "b"),
            ("TOKENKEEP_STORE", "s3"),
        ];
        assert!(matches!(
            Config::from_source(&bad, SecretsUsed::Client, None, None),
            Err(ConfigError::Invalid("TOKENKEEP_STORE", _))
        ));
    }

    #[test]
    fn a_binary_that_verifies_requests_needs_the_signing_secret_by_name() {
        // Given every setting but the signing secret,
        let env = [("SLACK_CLIENT_ID", "1"), ("SLACK_CLIENT_SECRET", "a")];
        // when a request-verifying binary loads, it fails naming what is missing,
        let e = Config::from_source(&env, SecretsUsed::ClientAndSigning, None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing required setting SLACK_SIGNING_SECRET"
        );
        // and a client-only binary starts without it.
        assert!(Config::from_source(&env, SecretsUsed::Client, None, None).is_ok());
    }

    #[test]
    fn a_client_only_binary_never_holds_the_signing_secret() {
        // Given a signing secret in the environment and one fetched,
        let c =
            Config::from_source(&BASE, SecretsUsed::Client, None, Some("sig-sm".into())).unwrap();
        // a client-only binary keeps neither, and asking for it is a named error.
        assert!(matches!(c.signing_secret(), Err(ConfigError::NotLoaded(_))));
        assert_eq!(c.slack_client_secret.expose_secret(), "cs-value");
    }

    #[test]
    fn secrets_manager_values_win_over_the_environment() {
        let c = Config::from_source(
            &[("SLACK_CLIENT_ID", "1")],
            SecretsUsed::ClientAndSigning,
            Some("from-sm".into()),
            Some("sig-sm".into()),
        )
        .unwrap();
        assert_eq!(c.slack_client_secret.expose_secret(), "from-sm");
        assert_eq!(c.signing_secret().unwrap().expose_secret(), "sig-sm");
    }
}
