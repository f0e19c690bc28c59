//! The wiring every tokenkeep binary shares: configuration from the
//! environment (names in DESIGN.md), secrets from Secrets Manager or the
//! environment, AWS clients and the store built once per cold start, tracing.

pub mod aws;
mod config;
mod metrics;

use std::path::PathBuf;
use std::sync::Arc;

pub use config::{Config, ConfigError, Env, SecretsUsed, SlackSecret, Source, StoreKind};
pub use metrics::{EmfStoreMetrics, emit_metric};

use tokenkeep_envelope::{
    CacheLimits, CachingKeyProvider, KeyProvider, KmsKeyProvider, LocalKeyProvider,
};
use tokenkeep_installations::{
    DynamoRepository, EmbeddedRepository, InstallationStore, Repository, StoreConfig,
};
use tokenkeep_slack_api::{RequestVerifier, SlackClient, SlackClientConfig, SlackOAuth};

/// Everything a function needs, built once per cold start and shared by
/// reference: the one place the store, keys, Slack client and request
/// verifier are made (the Lambda mains, `tokenkeep dev` and app binaries all
/// call [`App::build`]; operator commands call [`open_store`]).
#[derive(Debug, Clone)]
pub struct App {
    pub config: Arc<Config>,
    pub store: Arc<InstallationStore>,
    pub slack: SlackClient,
    /// Checks inbound Slack signatures with the app's signing secret; only
    /// for binaries that load it ([`SecretsUsed::ClientAndSigning`]).
    verifier: Option<RequestVerifier>,
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

/// Where the installation store lives, and for which app: everything
/// [`open_store`] needs, and nothing secret (operator commands and store-only
/// jobs hold neither the client nor the signing secret).
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// The Slack app's client id: part of every data key's encryption context.
    pub app_id: String,
    pub store: StoreKind,
    pub table: String,
    pub audit_table: String,
    /// Required for [`StoreKind::DynamoDb`].
    pub kms_key_id: Option<String>,
    pub data_dir: PathBuf,
    pub refresh_window_minutes: i64,
}

impl StoreSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            app_id: config.slack_client_id.clone(),
            store: config.store,
            table: config.table.clone(),
            audit_table: config.audit_table.clone(),
            kms_key_id: config.kms_key_id.clone(),
            data_dir: config.data_dir.clone(),
            refresh_window_minutes: config.refresh_window_minutes,
        }
    }

    /// The embedded store's database file.
    pub fn embedded_db(&self) -> PathBuf {
        self.data_dir.join("store.db")
    }
}

/// Opens the installation store: repository and key provider for the
/// configured backend, behind a data-key cache. With `refresher`, expired
/// rotating tokens are refreshed through Slack; without, such a read fails.
pub fn open_store(
    settings: &StoreSettings,
    aws: Option<&aws_config::SdkConfig>,
    refresher: Option<Arc<dyn SlackOAuth>>,
) -> anyhow::Result<InstallationStore> {
    let (repo, keys): (Arc<dyn Repository>, Arc<dyn KeyProvider>) = match (settings.store, aws) {
        (StoreKind::Embedded, _) => {
            let repo = EmbeddedRepository::open(settings.embedded_db())?;
            let keys = LocalKeyProvider::open(settings.data_dir.join("keys"), "default")?;
            (Arc::new(repo), Arc::new(keys))
        }
        (StoreKind::DynamoDb, Some(aws)) => {
            // Whoever made the config, every call fits inside the refresh lease.
            let aws = &aws::with_timeouts(aws);
            let key_id = settings
                .kms_key_id
                .clone()
                .ok_or(ConfigError::Missing("TOKENKEEP_KMS_KEY_ID"))?;
            let repo = DynamoRepository::new(
                aws_sdk_dynamodb::Client::new(aws),
                &settings.table,
                &settings.audit_table,
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
    let mut store_config = StoreConfig::new(settings.app_id.clone());
    store_config.refresh_window_secs = settings.refresh_window_minutes * 60;
    // In Lambda the sandbox freezes after the response, so no background
    // work: the scheduled rotation sweep refreshes due tokens instead.
    store_config.background_refresh = std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_none();
    let store =
        InstallationStore::new(repo, keys, store_config).with_metrics(Arc::new(EmfStoreMetrics));
    Ok(match refresher {
        Some(slack) => store.with_refresher(slack),
        None => store,
    })
}

impl App {
    /// The request verifier, for binaries that verify Slack requests; one that
    /// did not load the signing secret gets a named error at cold start.
    pub fn verifier(&self) -> Result<&RequestVerifier, ConfigError> {
        self.verifier
            .as_ref()
            .ok_or(ConfigError::NotLoaded("the Slack signing secret"))
    }

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
        let slack = SlackClient::new(SlackClientConfig {
            api_url: config.slack_api_url.clone(),
            response_url_base: config.slack_response_url_base.clone(),
            ..SlackClientConfig::new(
                config.slack_client_id.clone(),
                config.slack_client_secret.clone(),
            )
        })?;
        Self::build_with_slack(config, aws, slack)
    }

    /// As [`build_with`](Self::build_with), with a Slack client the caller
    /// made (tests point it at a fake Slack, `response_url` base included).
    pub fn build_with_slack(
        config: Config,
        aws: Option<aws_config::SdkConfig>,
        slack: SlackClient,
    ) -> anyhow::Result<Self> {
        let store = open_store(
            &StoreSettings::from_config(&config),
            aws.as_ref(),
            Some(Arc::new(slack.clone())),
        )?;
        let verifier = config
            .signing_secret()
            .ok()
            .map(|secret| RequestVerifier::new(secret.clone()));
        Ok(Self {
            config: Arc::new(config),
            store: Arc::new(store),
            slack,
            verifier,
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
