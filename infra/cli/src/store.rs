//! Builds the installation store for operator commands without Slack secrets:
//! an operator who can run `tokenkeep list` has no business holding the client
//! or signing secret, so this path never reads them (unlike `App::build`).

use std::path::PathBuf;

use tokenkeep_installations::InstallationStore;
use tokenkeep_runtime::{StoreKind, StoreSettings, open_store};

use crate::cli::{GlobalArgs, StoreArg};
use crate::exit::Failure;

/// Operator reads never refresh, so the window only decides what counts as due.
const DEFAULT_REFRESH_WINDOW_MINUTES: i64 = 120;

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
        let settings = match &self.backend {
            Backend::Embedded { data_dir } => StoreSettings {
                app_id: self.app_id.clone(),
                store: StoreKind::Embedded,
                table: String::new(),
                audit_table: String::new(),
                kms_key_id: None,
                data_dir: data_dir.clone(),
                refresh_window_minutes: DEFAULT_REFRESH_WINDOW_MINUTES,
            },
            Backend::DynamoDb {
                table,
                audit_table,
                kms_key_id,
            } => StoreSettings {
                app_id: self.app_id.clone(),
                store: StoreKind::DynamoDb,
                table: table.clone(),
                audit_table: audit_table.clone(),
                kms_key_id: Some(kms_key_id.clone()),
                data_dir: PathBuf::new(),
                refresh_window_minutes: DEFAULT_REFRESH_WINDOW_MINUTES,
            },
        };
        // Operator commands must not create an empty store by accident
        // (a typo in TOKENKEEP_DATA_DIR would otherwise "verify" nothing).
        if settings.store == StoreKind::Embedded
            && !create_embedded
            && !settings.embedded_db().exists()
        {
            return Err(Failure::config(format!(
                "no embedded store at {} (set TOKENKEEP_DATA_DIR)",
                settings.embedded_db().display()
            )));
        }
        let aws = match settings.store {
            StoreKind::DynamoDb => Some(tokenkeep_runtime::aws_config().await),
            StoreKind::Embedded => None,
        };
        // No refresher: an operator read of an expired token fails rather than
        // spending a refresh token from a laptop.
        let store = open_store(&settings, aws.as_ref(), None).map_err(Failure::error)?;
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
