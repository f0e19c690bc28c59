//! The one module that calls into the store, the request verifier and the
//! Slack client. Handlers in `lib.rs` speak only to [`Backend`], so re-pointing
//! the service at other wiring touches this file alone.

use std::sync::Arc;

use bytes::Bytes;
use tokenkeep_installations::{
    Clock, InstallationInfo, InstallationQuery, InstallationStore, LifecycleEvent,
    LifecycleOutcome, ReadContext, RecordKind, StoreError, TenantKey, VerifiedTenant,
};
use tokenkeep_slack_api::{
    AccessToken, Payload, RequestVerifier, SlackClient, SlackError, VerifyError,
};

use crate::wire::InstallationIn;

/// Why a backend call produced nothing. Messages are safe to log.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("slack signature check failed: {0}")]
    Signature(#[from] VerifyError),
    #[error("request names no valid tenant")]
    NoTenant,
    #[error("the token was refused by slack")]
    TokenRefused,
    #[error("the installation names another tenant than its token belongs to")]
    TenantMismatch,
    #[error("slack unavailable")]
    Slack(#[source] SlackError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The store, verifier and Slack client the token service uses.
#[derive(Debug, Clone)]
pub struct Backend {
    store: Arc<InstallationStore>,
    verifier: RequestVerifier,
    slack: SlackClient,
    /// The verifier's "now" (tests pin it).
    clock: Arc<dyn Clock>,
}

/// What `authorize` found for a signed request's tenant.
#[derive(Debug)]
pub struct Authorized {
    pub tenant: VerifiedTenant,
    pub bot: Option<(InstallationInfo, AccessToken)>,
    pub user: Option<(InstallationInfo, AccessToken)>,
}

/// A lifecycle event a signed request carries.
enum Lifecycle {
    Uninstalled,
    Revoked { users: Vec<String>, bots: bool },
}

impl Backend {
    pub fn new(
        store: Arc<InstallationStore>,
        verifier: RequestVerifier,
        slack: SlackClient,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            verifier,
            slack,
            clock,
        }
    }

    /// From the wiring every binary shares.
    /// The app's config must hold the signing secret
    /// ([`SecretsUsed::ClientAndSigning`](tokenkeep_runtime::SecretsUsed)).
    pub fn from_app(app: &tokenkeep_runtime::App) -> Result<Self, tokenkeep_runtime::ConfigError> {
        Ok(Self::new(
            Arc::clone(&app.store),
            app.verifier()?.clone(),
            app.slack.clone(),
            Arc::new(tokenkeep_installations::SystemClock),
        ))
    }

    pub fn verifier_max_body(&self) -> usize {
        self.verifier.max_body()
    }

    /// Strict scoping: verify the Slack request, take the tenant from its signed
    /// body, apply a lifecycle event it carries (as `/slack/events` would), then
    /// read the tenant's bot token and, if the acting user installed, theirs.
    pub async fn authorize(
        &self,
        body: String,
        timestamp: &str,
        signature: &str,
        ctx: &ReadContext,
    ) -> Result<Authorized, BackendError> {
        let now = self.clock.now_secs();
        let verified =
            self.verifier
                .verify_at(now, Some(timestamp), Some(signature), Bytes::from(body))?;
        // The adapters forward the body without its Content-Type; Slack sends
        // the Events API as JSON and everything else as a form.
        let content_type = match verified.body().iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => "application/json",
            _ => "application/x-www-form-urlencoded",
        };
        let signed = verified
            .parse(Some(content_type))
            .map_err(|_| BackendError::NoTenant)?;
        let tenant =
            VerifiedTenant::from_signed_request(&signed).map_err(|_| BackendError::NoTenant)?;

        // The same generation-aware path as /slack/events: a late retry of an
        // old uninstall never wipes a reinstall, a repeated event id is a no-op.
        if let Some((event_id, event_time, lifecycle)) = lifecycle_of(signed.payload()) {
            let event = LifecycleEvent {
                event_id: &event_id,
                event_time,
            };
            match lifecycle {
                Lifecycle::Uninstalled => {
                    let outcome = self.store.apply_app_uninstalled(&tenant, &event).await?;
                    tracing::info!(tenant = %tenant.key(), ?outcome, "app_uninstalled seen by authorize");
                    if matches!(outcome, LifecycleOutcome::Applied { .. }) {
                        return Ok(Authorized {
                            tenant,
                            bot: None,
                            user: None,
                        });
                    }
                }
                Lifecycle::Revoked { users, bots } => {
                    let outcome = self
                        .store
                        .apply_tokens_revoked(&tenant, &event, &users, bots)
                        .await?;
                    tracing::info!(tenant = %tenant.key(), users = users.len(), bots, ?outcome, "tokens_revoked seen by authorize");
                }
            }
        }

        let bot = match self.store.fetch_bot(&tenant).await? {
            Some(info) => match self.store.bot_token(&tenant, ctx).await {
                Ok(token) => Some((info, token)),
                Err(StoreError::NotInstalled | StoreError::NeedsReinstall) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        let user = match acting_user(signed.payload()) {
            Some(user_id) => self.user_token_if_installed(&tenant, &user_id, ctx).await?,
            None => None,
        };
        Ok(Authorized { tenant, bot, user })
    }

    async fn user_token_if_installed(
        &self,
        tenant: &VerifiedTenant,
        user_id: &str,
        ctx: &ReadContext,
    ) -> Result<Option<(InstallationInfo, AccessToken)>, BackendError> {
        let query = InstallationQuery {
            tenant,
            user_id: Some(user_id),
        };
        let Some(info) = self
            .store
            .fetch_installation(&query)
            .await
            .or_else(ignore_invalid)?
        else {
            return Ok(None);
        };
        if info.kind != RecordKind::User(user_id.to_owned()) || !info.has_token {
            return Ok(None);
        }
        match self.store.user_token(tenant, user_id, ctx).await {
            Ok(token) => Ok(Some((info, token))),
            Err(StoreError::NotInstalled | StoreError::NeedsReinstall) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores an installation Bolt's own OAuth flow produced, sealed on arrival.
    /// The tenant is Slack's `auth.test` answer for its token; one that differs
    /// from what the installation claims is refused.
    pub async fn store_installation(
        &self,
        inst: InstallationIn,
    ) -> Result<TenantKey, BackendError> {
        let Some(token) = inst.proof_token() else {
            return Err(StoreError::Invalid("installation carries no token").into());
        };
        // Slack answering `ok: false` (invalid_auth, token_expired, revoked…)
        // means the token proves nothing; anything else is Slack being unavailable.
        let answer = self.slack.auth_test(token).await.map_err(|e| match e {
            SlackError::Api(_) => BackendError::TokenRefused,
            other => BackendError::Slack(other),
        })?;
        let tenant =
            VerifiedTenant::from_token_owner(&answer).map_err(|_| BackendError::NoTenant)?;
        let claimed = TenantKey::for_lookup(
            inst.enterprise_id.as_deref(),
            inst.team_id.as_deref(),
            inst.is_enterprise_install,
        )
        .map_err(|_| StoreError::Invalid("installation names no valid tenant"))?;
        if &claimed != tenant.key() {
            return Err(BackendError::TenantMismatch);
        }
        let installation = inst.into_installation(self.store.clock().now_secs());
        self.store
            .store_installation(&tenant, &installation)
            .await?;
        Ok(tenant.key().clone())
    }

    /// A caller-named tenant (named-tenant permission checked by the handler).
    /// `None`: nothing stored for it.
    pub async fn named_tenant(
        &self,
        key: &TenantKey,
    ) -> Result<Option<VerifiedTenant>, BackendError> {
        Ok(self.store.tenant_for_job(key).await?)
    }

    /// Bolt's `find_installation` / `find_bot`: metadata, and the token if asked for.
    pub async fn fetch(
        &self,
        tenant: &VerifiedTenant,
        user_id: Option<&str>,
        bot_only: bool,
        token_ctx: Option<&ReadContext>,
    ) -> Result<Option<(InstallationInfo, Option<AccessToken>)>, BackendError> {
        let info = if bot_only {
            self.store.fetch_bot(tenant).await?
        } else {
            self.store
                .fetch_installation(&InstallationQuery { tenant, user_id })
                .await?
        };
        let Some(info) = info else { return Ok(None) };
        let Some(ctx) = token_ctx.filter(|_| info.has_token) else {
            return Ok(Some((info, None)));
        };
        let token = match &info.kind {
            RecordKind::Bot => self.store.bot_token(tenant, ctx).await,
            RecordKind::User(user) => self.store.user_token(tenant, user, ctx).await,
        };
        match token {
            Ok(token) => Ok(Some((info, Some(token)))),
            Err(StoreError::NotInstalled | StoreError::NeedsReinstall) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete_user(
        &self,
        tenant: &VerifiedTenant,
        user_id: &str,
    ) -> Result<bool, BackendError> {
        Ok(self.store.delete_installation(tenant, user_id).await?)
    }

    pub async fn delete_bot(&self, tenant: &VerifiedTenant) -> Result<bool, BackendError> {
        Ok(self.store.delete_bot(tenant).await?)
    }

    pub async fn purge(&self, tenant: &VerifiedTenant) -> Result<usize, BackendError> {
        Ok(self.store.purge_tenant(tenant).await?)
    }
}

fn ignore_invalid<T: Default>(e: StoreError) -> Result<T, StoreError> {
    match e {
        // A malformed user id in a signed body can't match a record.
        StoreError::Invalid(_) => Ok(T::default()),
        other => Err(other),
    }
}

/// The lifecycle event a signed Events API payload carries, with its id and
/// time (Slack always stamps both; without a time it can't be judged stale).
fn lifecycle_of(payload: &Payload) -> Option<(String, i64, Lifecycle)> {
    let Payload::Events(envelope) = payload else {
        return None;
    };
    if envelope.kind != "event_callback" {
        return None;
    }
    let event = envelope.event.as_ref()?;
    let lifecycle = match event.get("type")?.as_str()? {
        "app_uninstalled" => Lifecycle::Uninstalled,
        "tokens_revoked" => {
            let ids = |field: &str| -> Vec<String> {
                event
                    .pointer(&format!("/tokens/{field}"))
                    .and_then(serde_json::Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(serde_json::Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            Lifecycle::Revoked {
                users: ids("oauth"),
                bots: !ids("bot").is_empty(),
            }
        }
        _ => return None,
    };
    Some((
        envelope.event_id.clone()?,
        envelope.event_time.unwrap_or(i64::MAX),
        lifecycle,
    ))
}

/// The user a signed request acts for: `event.user` (Events API), `user.id`
/// (interactivity), `user_id` (slash commands).
fn acting_user(payload: &Payload) -> Option<String> {
    let user = match payload {
        Payload::Events(envelope) => envelope.event.as_ref()?.get("user")?.as_str(),
        Payload::Interactivity(v) => v.pointer("/user/id").and_then(serde_json::Value::as_str),
        Payload::SlashCommand(v) => v.get("user_id").and_then(serde_json::Value::as_str),
    }?;
    Some(user.to_owned())
}
