//! The wiring every tokenkeep binary shares: configuration from the
//! environment (names in DESIGN.md), secrets from Secrets Manager or the
//! environment, AWS clients and the store built once per cold start, tracing.

pub mod aws;
mod config;
mod metrics;

use std::sync::Arc;

pub use config::{Config, ConfigError, Env, SecretsUsed, SlackSecret, Source, StoreKind};
pub use metrics::emit_metric;

use tokenkeep_envelope::{
    CacheLimits, CachingKeyProvider, KeyProvider, KmsKeyProvider, LocalKeyProvider,
};
use tokenkeep_installations::{
    DynamoRepository, EmbeddedRepository, InstallationStore, Repository, StoreConfig,
};
use tokenkeep_slack_api::{SlackClient, SlackClientConfig};

/// Everything a function needs, built once per cold start and shared by reference.
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<InstallationStore>,
    pub slack: SlackClient,
    /// Present for `TOKENKEEP_STORE=dynamodb`.
    pub aws: Option<aws_config::SdkConfig>,
}

/// The AWS SDK config: region and endpoint (`AWS_ENDPOINT_URL`, e.g. the local
/// emulator) from the environment, as the SDK reads them; timeouts from [`aws`].
pub async fn aws_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(aws::timeout_config())
        .load()
        .await
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let aws = match config.store {
            StoreKind::DynamoDb => Some(aws_config().await),
            StoreKind::Embedded => None,
        };
        Self::build_with(config, aws).await
    }

    /// As [`build`](Self::build), with an AWS config the caller made.
    pub async fn build_with(
        config: Config,
        aws: Option<aws_config::SdkConfig>,
    ) -> anyhow::Result<Self> {
        let (repo, keys): (Arc<dyn Repository>, Arc<dyn KeyProvider>) = match (&config.store, &aws)
        {
            (StoreKind::Embedded, _) => {
                let repo = EmbeddedRepository::open(config.data_dir.join("store.db"))?;
                let keys = LocalKeyProvider::open(config.data_dir.join("keys"), "default")?;
                (Arc::new(repo), Arc::new(keys))
            }
            (StoreKind::DynamoDb, Some(aws)) => {
                let aws = &aws::with_timeouts(aws);
                let key_id = config
                    .kms_key_id
                    .clone()
                    .ok_or(ConfigError::Missing("TOKENKEEP_KMS_KEY_ID"))?;
                let repo = DynamoRepository::new(
                    aws_sdk_dynamodb::Client::new(aws),
                    config.table.clone(),
                    config.audit_table.clone(),
                );
                let keys = KmsKeyProvider::new(aws_sdk_kms::Client::new(aws), key_id);
                (Arc::new(repo), Arc::new(keys))
            }
            (StoreKind::DynamoDb, None) => anyhow::bail!("dynamodb store needs an AWS config"),
        };
        // Decrypted data keys are cached (bounded age and uses) so a warm
        // function makes far fewer than one KMS call per request.
        let keys: Arc<dyn KeyProvider> =
            Arc::new(CachingKeyProvider::new(keys, CacheLimits::default()));

        let slack = SlackClient::new(SlackClientConfig {
            api_url: config.slack_api_url.clone(),
            ..SlackClientConfig::new(
                config.slack_client_id.clone(),
                config.slack_client_secret.clone(),
            )
        })?;
        let mut store_config = StoreConfig::new(config.slack_client_id.clone());
        store_config.refresh_window_secs = config.refresh_window_minutes * 60;
        // In Lambda the sandbox freezes after the response, so no background
        // work: the scheduled rotation sweep refreshes due tokens instead.
        store_config.background_refresh = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none();
        let store = InstallationStore::new(repo, keys, store_config)
            .with_refresher(Arc::new(slack.clone()));
        Ok(Self {
            config: Arc::new(config),
            store: Arc::new(store),
            slack,
            aws,
        })
    }
}

/// JSON logs to stdout (what CloudWatch and `tokenkeep dev` both want),
/// filtered by `RUST_LOG` (default `info`). Safe to call twice.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(true)
        .try_init();
}
