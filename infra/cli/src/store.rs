//! Builds the installation store for operator commands without Slack secrets:
//! an operator who can run `tokenkeep list` has no business holding the client
//! or signing secret, so this path never reads them (unlike `App::build`).

use std::path::PathBuf;
use std::sync::Arc;

use tokenkeep_envelope::{
    CacheLimits, CachingKeyProvider, KeyProvider, KmsKeyProvider, LocalKeyProvider,
};
use tokenkeep_installations::{
    DynamoRepository, EmbeddedRepository, InstallationStore, Repository, StoreConfig,
};

use crate::cli::{GlobalArgs, StoreArg};
use crate::exit::Failure;

/// Which store, and where; the settings of [`GlobalArgs`] after validation.
#[derive(Debug, Clone)]
pub enum Backend {
    Embedded {
        data_dir: PathBuf,
    },
    DynamoDb {
        table: String,
        audit_table: String,
        kms_key_id: String,
    },
}

/// The store an operator command works on, plus what it needs to say where it is.
#[derive(Debug)]
pub struct OperatorStore {
    pub store: InstallationStore,
    pub backend: Backend,
    /// Present for the dynamodb store.
    pub aws: Option<aws_config::SdkConfig>,
}

/// Builder for an [`InstallationStore`] with no Slack client (no refresher): a
/// token read through it that needs a refresh fails instead of calling Slack.
#[derive(Debug)]
pub struct StoreOnly {
    backend: Backend,
    app_id: String,
}

impl StoreOnly {
    pub fn from_args(args: &GlobalArgs) -> Result<Self, Failure> {
        let app_id = args.app_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
            Failure::config(
                "missing required setting SLACK_CLIENT_ID (the Slack app's client id; it is part of every \
                 data key's encryption context, so records can't be opened without it)",
            )
        })?;
        let backend = match args.store {
            StoreArg::Embedded => Backend::Embedded { data_dir: args.data_dir.clone() },
            StoreArg::Dynamodb => Backend::DynamoDb {
                table: args.table.clone(),
                audit_table: args.audit_table.clone(),
                kms_key_id: args.kms_key_id.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
                    Failure::config("missing required setting TOKENKEEP_KMS_KEY_ID (needed with TOKENKEEP_STORE=dynamodb)")
                })?,
            },
        };
        Ok(Self { backend, app_id })
    }

    /// `create_embedded`: only `import` may start a new embedded store.
    pub async fn build(self, create_embedded: bool) -> Result<OperatorStore, Failure> {
        let (repo, keys, aws): (Arc<dyn Repository>, Arc<dyn KeyProvider>, _) = match &self.backend
        {
            Backend::Embedded { data_dir } => {
                // Operator commands must not create an empty store by accident
                // (a typo in TOKENKEEP_DATA_DIR would otherwise "verify" nothing).
                let db = data_dir.join("store.db");
                if !create_embedded && !db.exists() {
                    return Err(Failure::config(format!(
                        "no embedded store at {} (set TOKENKEEP_DATA_DIR)",
                        db.display()
                    )));
                }
                let repo = EmbeddedRepository::open(&db)
                    .map_err(|e| Failure::error(anyhow::Error::new(e)))?;
                let keys = LocalKeyProvider::open(data_dir.join("keys"), "default")
                    .map_err(|e| Failure::error(anyhow::Error::new(e)))?;
                (Arc::new(repo), Arc::new(keys), None)
            }
            Backend::DynamoDb {
                table,
                audit_table,
                kms_key_id,
            } => {
                let aws = tokenkeep_runtime::aws_config().await;
                let repo =
                    DynamoRepository::new(aws_sdk_dynamodb::Client::new(&aws), table, audit_table);
                let keys = KmsKeyProvider::new(aws_sdk_kms::Client::new(&aws), kms_key_id);
                (Arc::new(repo), Arc::new(keys), Some(aws))
            }
        };
        // `verify_record` unwraps the data key once per sealed field; the cache
        // makes that one key-provider call per record.
        let keys: Arc<dyn KeyProvider> =
            Arc::new(CachingKeyProvider::new(keys, CacheLimits::default()));
        let store = InstallationStore::new(repo, keys, StoreConfig::new(self.app_id));
        Ok(OperatorStore {
            store,
            backend: self.backend,
            aws,
        })
    }
}

impl OperatorStore {
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded { data_dir } => {
                format!("embedded store at {} (local key file)", data_dir.display())
            }
            Backend::DynamoDb {
                table, kms_key_id, ..
            } => format!("dynamodb table {table} (KMS key {kms_key_id})"),
        }
    }
}
