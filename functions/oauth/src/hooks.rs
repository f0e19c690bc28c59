//! What an app runs around an install: [`InstallHooks`].

use async_trait::async_trait;
use tokenkeep_installations::TenantKey;
use tokenkeep_slack_api::BoundClient;

/// What a hook may fail with; logged, never shown, never undoes the install.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// An installation that has just been durably stored.
#[derive(Debug)]
pub struct Installed {
    pub tenant: TenantKey,
    pub app_id: Option<String>,
    /// The user who installed the app.
    pub installer_user_id: Option<String>,
    /// Bound to the new bot token (from Slack's answer, in memory: the OAuth
    /// function may seal tokens but not open them), if the app has a bot.
    pub client: Option<BoundClient>,
    pub request_id: String,
}

/// The app's install hooks.
///
/// Contract: `on_installed` runs only after the installation is durably
/// stored, before the success page is sent (keep it short: a welcome DM, a
/// log line); an `Err` or a panic is logged and the install still succeeds,
/// the stored installation untouched. `on_install_failed` runs for every
/// failed install with the log-only reason (no secret in it).
#[async_trait]
pub trait InstallHooks: Send + Sync + std::fmt::Debug {
    async fn on_installed(&self, installed: Installed) -> Result<(), HookError>;

    async fn on_install_failed(&self, _reason: &crate::OAuthError, _request_id: &str) {}

    /// The pages the install flow answers with; `None` (the default) keeps
    /// tokenkeep's own. Called once, when the router is built.
    fn pages(&self) -> Option<crate::InstallPages> {
        None
    }
}
