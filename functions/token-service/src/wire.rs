//! The JSON the token service takes and gives. The adapters (clients/python,
//! clients/js) translate Bolt's own installation objects to and from it.
//! Unknown fields are refused, so a misspelt field fails loudly instead of
//! being dropped.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokenkeep_installations::{
    Installation, InstallationInfo, InstallationMeta, RecordKind, Status, UserTokens,
};
use tokenkeep_slack_api::{AccessToken, RefreshToken, WebhookUrl};

/// `POST /tokens/authorize`: a Slack request exactly as it arrived.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    /// The raw body, byte for byte (UTF-8: Slack sends JSON or form bodies).
    pub body: String,
    /// `X-Slack-Request-Timestamp`.
    pub timestamp: String,
    /// `X-Slack-Signature`.
    pub signature: String,
}

/// Lengths only: the body is a customer's message and the signature a MAC.
impl std::fmt::Debug for SignedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedRequest")
            .field("body_len", &self.body.len())
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

/// Which tenant (and user) a named-tenant call is about, with Bolt's lookup rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantQuery {
    #[serde(default)]
    pub enterprise_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: bool,
    #[serde(default)]
    pub user_id: Option<String>,
    /// Fetch only: also return the tokens (needs the named-tenant permission).
    #[serde(default)]
    pub include_tokens: bool,
}

/// What `POST /tokens/installations/delete` removes.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum DeleteScope {
    /// One user's installation (`user_id` required).
    User,
    /// The bot installation.
    Bot,
    /// Every record of the tenant, leaving a tombstone (as `app_uninstalled`).
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    #[serde(default)]
    pub enterprise_id: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: bool,
    #[serde(default)]
    pub user_id: Option<String>,
    pub scope: DeleteScope,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotGrant {
    pub token: AccessToken,
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    /// Unix seconds; present when the token rotates.
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserGrant {
    pub id: String,
    #[serde(default)]
    pub token: Option<AccessToken>,
    #[serde(default)]
    pub refresh_token: Option<RefreshToken>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: WebhookUrl,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub configuration_url: Option<String>,
}

/// `POST /tokens/installations`: an installation Bolt's own OAuth flow produced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationIn {
    #[serde(default)]
    pub app_id: Option<String>,
    #[serde(default)]
    pub enterprise_id: Option<String>,
    #[serde(default)]
    pub enterprise_name: Option<String>,
    #[serde(default)]
    pub enterprise_url: Option<String>,
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub team_name: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: bool,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub bot: Option<BotGrant>,
    #[serde(default)]
    pub user: Option<UserGrant>,
    #[serde(default)]
    pub incoming_webhook: Option<Webhook>,
}

impl InstallationIn {
    /// The token Slack is asked about to prove the tenant: the bot's, else the user's.
    pub fn proof_token(&self) -> Option<&AccessToken> {
        self.bot
            .as_ref()
            .map(|b| &b.token)
            .or_else(|| self.user.as_ref().and_then(|u| u.token.as_ref()))
    }

    pub fn into_installation(self, now_secs: i64) -> Installation {
        let bot = self.bot;
        let webhook = self.incoming_webhook;
        let meta = InstallationMeta {
            app_id: self.app_id,
            enterprise_id: self.enterprise_id,
            enterprise_name: self.enterprise_name,
            enterprise_url: self.enterprise_url,
            team_id: self.team_id,
            team_name: self.team_name,
            bot_id: bot.as_ref().and_then(|b| b.id.clone()),
            bot_user_id: bot.as_ref().and_then(|b| b.user_id.clone()),
            bot_scopes: bot.as_ref().map(|b| b.scopes.clone()).unwrap_or_default(),
            user_id: self.user.as_ref().map(|u| u.id.clone()),
            user_scopes: self
                .user
                .as_ref()
                .map(|u| u.scopes.clone())
                .unwrap_or_default(),
            token_type: self.token_type,
            is_enterprise_install: self.is_enterprise_install,
            installed_at: now_secs,
            status: Status::Active,
            token_expires_at: bot.as_ref().and_then(|b| b.expires_at),
            incoming_webhook_channel: webhook.as_ref().and_then(|w| w.channel.clone()),
            incoming_webhook_channel_id: webhook.as_ref().and_then(|w| w.channel_id.clone()),
            incoming_webhook_configuration_url: webhook
                .as_ref()
                .and_then(|w| w.configuration_url.clone()),
        };
        let (bot_token, bot_refresh_token) = match bot {
            Some(b) => (Some(b.token), b.refresh_token),
            None => (None, None),
        };
        Installation {
            meta,
            bot_token,
            bot_refresh_token,
            user: self.user.map(|u| UserTokens {
                user_id: u.id,
                scopes: u.scopes,
                token: u.token,
                refresh_token: u.refresh_token,
                expires_at: u.expires_at,
            }),
            incoming_webhook_url: webhook.map(|w| w.url),
            // Bolt exchanged the code at a time we can't know; the token was
            // just proven live by auth.test, so Slack has not revoked it and a
            // purge that came earlier may be superseded by this install.
            exchange_started_ms: now_secs * 1000,
        }
    }
}

/// Metadata of one stored record, plus its token when the caller may have it.
/// The token is written here, at the one place it goes on the wire.
pub fn installation_out(info: &InstallationInfo, token: Option<&AccessToken>) -> Value {
    let meta = &info.meta;
    let mut out = Map::new();
    out.insert(
        "enterprise_id".into(),
        json!(
            info.tenant
                .enterprise_id()
                .or(meta.enterprise_id.as_deref())
        ),
    );
    out.insert(
        "team_id".into(),
        json!(info.tenant.team_id().or(meta.team_id.as_deref())),
    );
    out.insert("enterprise_name".into(), json!(meta.enterprise_name));
    out.insert("enterprise_url".into(), json!(meta.enterprise_url));
    out.insert("team_name".into(), json!(meta.team_name));
    out.insert("app_id".into(), json!(meta.app_id));
    out.insert(
        "is_enterprise_install".into(),
        json!(meta.is_enterprise_install),
    );
    out.insert("installed_at".into(), json!(meta.installed_at));
    out.insert("status".into(), json!(meta.status.as_str()));
    out.insert("version".into(), json!(info.version));
    out.insert("token_expires_at".into(), json!(meta.token_expires_at));
    match &info.kind {
        RecordKind::Bot => {
            out.insert("kind".into(), json!("bot"));
            out.insert("bot_id".into(), json!(meta.bot_id));
            out.insert("bot_user_id".into(), json!(meta.bot_user_id));
            out.insert("bot_scopes".into(), json!(meta.bot_scopes));
            out.insert("installer_user_id".into(), json!(meta.user_id));
            out.insert(
                "incoming_webhook_channel".into(),
                json!(meta.incoming_webhook_channel),
            );
            out.insert(
                "incoming_webhook_channel_id".into(),
                json!(meta.incoming_webhook_channel_id),
            );
        }
        RecordKind::User(user_id) => {
            out.insert("kind".into(), json!("user"));
            out.insert("user_id".into(), json!(user_id));
            out.insert("user_scopes".into(), json!(meta.user_scopes));
            out.insert("bot_id".into(), json!(meta.bot_id));
            out.insert("bot_user_id".into(), json!(meta.bot_user_id));
        }
    }
    if let Some(token) = token {
        out.insert("token".into(), json!(token.expose_secret()));
    }
    Value::Object(out)
}
