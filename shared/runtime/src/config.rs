//! Configuration from the environment. Errors name the missing variable;
//! nothing here panics, and no secret value is ever part of an error.

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
    #[error("could not read the Slack secrets from Secrets Manager")]
    Secrets(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Settings shared by every binary. Debug shows no secret (the secret types
/// redact themselves).
#[derive(Debug, Clone)]
pub struct Config {
    pub slack_client_id: String,
    pub slack_client_secret: ClientSecret,
    pub slack_signing_secret: SigningSecret,
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
    pub secrets_arn: Option<String>,
    /// `TOKENKEEP_LAZY_QUEUE_URL`: the SQS queue lazy listener work goes to
    /// (AWS); unset in `tokenkeep dev`, which uses its embedded queue.
    pub lazy_queue_url: Option<String>,
}

/// Where settings come from; the environment in production, a map in tests.
pub trait Source {
    fn get(&self, name: &str) -> Option<String>;
}

struct Env;
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
struct SlackSecrets {
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    signing_secret: Option<String>,
}

impl Config {
    /// Reads the environment; with `TOKENKEEP_SECRETS_ARN` set, the client and
    /// signing secrets come from that Secrets Manager secret (read once, at
    /// cold start), otherwise from `SLACK_CLIENT_SECRET` / `SLACK_SIGNING_SECRET`.
    pub async fn from_env() -> Result<Self, ConfigError> {
        let (client_secret, signing_secret) = match Env.get("TOKENKEEP_SECRETS_ARN") {
            Some(arn) => {
                let aws = crate::aws_config().await;
                let out = aws_sdk_secretsmanager::Client::new(&aws)
                    .get_secret_value()
                    .secret_id(&arn)
                    .send()
                    .await
                    .map_err(|e| ConfigError::Secrets(Box::new(e)))?;
                let raw =
                    zeroize::Zeroizing::new(out.secret_string().unwrap_or_default().to_owned());
                let parsed: SlackSecrets = serde_json::from_str(&raw).map_err(|_| {
                    ConfigError::Invalid(
                        "TOKENKEEP_SECRETS_ARN",
                        "secret is not the expected JSON".into(),
                    )
                })?;
                (
                    parsed.client_secret.filter(|s| !s.is_empty()),
                    parsed.signing_secret.filter(|s| !s.is_empty()),
                )
            }
            None => (None, None),
        };
        Self::from_source(&Env, client_secret, signing_secret)
    }

    /// Builds the config from `source`, with secrets already fetched (if any).
    pub fn from_source(
        source: &dyn Source,
        client_secret: Option<String>,
        signing_secret: Option<String>,
    ) -> Result<Self, ConfigError> {
        let required = |name: &'static str| source.get(name).ok_or(ConfigError::Missing(name));
        let client_secret = match client_secret {
            Some(s) => s,
            None => required("SLACK_CLIENT_SECRET")?,
        };
        let signing_secret = match signing_secret {
            Some(s) => s,
            None => required("SLACK_SIGNING_SECRET")?,
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
            slack_signing_secret: SigningSecret::new(signing_secret),
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
            secrets_arn: source.get("TOKENKEEP_SECRETS_ARN"),
            lazy_queue_url: source.get("TOKENKEEP_LAZY_QUEUE_URL"),
        })
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
        let c = Config::from_source(&BASE, None, None).unwrap();
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
        let e = Config::from_source(&[("SLACK_CLIENT_ID", "1")], None, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing required setting SLACK_CLIENT_SECRET"
        );
        let e = Config::from_source(
            &[("SLACK_CLIENT_SECRET", "a"), ("SLACK_SIGNING_SECRET", "b")],
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
            Config::from_source(&dynamo, None, None),
            Err(ConfigError::Missing("TOKENKEEP_KMS_KEY_ID"))
        ));
        let bad = [
            ("SLACK_CLIENT_ID", "1"),
            ("SLACK_CLIENT_SECRET", "a"),
            ("SLACK_SIGNING_SECRET", "b"),
            ("TOKENKEEP_STORE", "s3"),
        ];
        assert!(matches!(
            Config::from_source(&bad, None, None),
            Err(ConfigError::Invalid("TOKENKEEP_STORE", _))
        ));
    }

    #[test]
    fn secrets_manager_values_win_over_the_environment() {
        let c = Config::from_source(
            &[("SLACK_CLIENT_ID", "1")],
            Some("from-sm".into()),
            Some("sig-sm".into()),
        )
        .unwrap();
        assert_eq!(c.slack_client_secret.expose_secret(), "from-sm");
        assert_eq!(c.slack_signing_secret.expose_secret(), "sig-sm");
    }
}
