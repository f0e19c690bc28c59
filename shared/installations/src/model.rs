//! What an installation is, as Slack's `oauth.v2.access` describes it.

use serde::{Deserialize, Serialize};
use tokenkeep_slack_api::{AccessToken, OAuthV2Response, RefreshToken, WebhookUrl};

use crate::{RecordKind, StoreError, TenantKey, VerifiedTenant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Active,
    /// Slack refused a refresh: the grant is dead until someone reinstalls.
    NeedsReinstall,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::NeedsReinstall => "needs_reinstall",
        }
    }
}

/// The plaintext attributes of a stored record. All of them are bound into the
/// AAD of every sealed field, so editing one in the table makes the record fail
/// to open instead of, say, widening its scopes or moving it to another team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct InstallationMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enterprise_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_user_id: Option<String>,
    #[serde(default)]
    pub bot_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default)]
    pub user_scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default)]
    pub is_enterprise_install: bool,
    pub installed_at: i64,
    #[serde(default)]
    pub status: Status,
    /// Expiry (unix seconds) of the record's access token, when it rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_webhook_channel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_webhook_channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incoming_webhook_configuration_url: Option<String>,
}

impl InstallationMeta {
    /// Canonical encoding of every bound attribute, for the AAD. Length-prefixed
    /// and in a fixed order; changing it needs a new seal format version.
    pub(crate) fn bound_bytes(&self) -> Vec<u8> {
        fn s(out: &mut Vec<u8>, v: Option<&str>) {
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        fn list(out: &mut Vec<u8>, v: &[String]) {
            out.extend_from_slice(&(v.len() as u32).to_be_bytes());
            for item in v {
                s(out, Some(item));
            }
        }
        let mut out = Vec::with_capacity(256);
        s(&mut out, self.app_id.as_deref());
        s(&mut out, self.enterprise_id.as_deref());
        s(&mut out, self.enterprise_name.as_deref());
        s(&mut out, self.enterprise_url.as_deref());
        s(&mut out, self.team_id.as_deref());
        s(&mut out, self.team_name.as_deref());
        s(&mut out, self.bot_id.as_deref());
        s(&mut out, self.bot_user_id.as_deref());
        list(&mut out, &self.bot_scopes);
        s(&mut out, self.user_id.as_deref());
        list(&mut out, &self.user_scopes);
        s(&mut out, self.token_type.as_deref());
        out.push(u8::from(self.is_enterprise_install));
        out.extend_from_slice(&self.installed_at.to_be_bytes());
        s(&mut out, Some(self.status.as_str()));
        s(
            &mut out,
            self.token_expires_at.map(|t| t.to_string()).as_deref(),
        );
        s(&mut out, self.incoming_webhook_channel.as_deref());
        s(&mut out, self.incoming_webhook_channel_id.as_deref());
        s(&mut out, self.incoming_webhook_configuration_url.as_deref());
        out
    }
}

/// A user's grant (the installer, or another user who authorized the app).
#[derive(Debug, Clone)]
pub struct UserTokens {
    pub user_id: String,
    pub scopes: Vec<String>,
    pub token: Option<AccessToken>,
    pub refresh_token: Option<RefreshToken>,
    pub expires_at: Option<i64>,
}

/// A new installation, as the OAuth callback gets it from Slack: the bot grant,
/// the installing user's grant and the incoming webhook. Secrets are secret
/// types; `Debug` shows none of them.
#[derive(Debug, Clone)]
pub struct Installation {
    pub meta: InstallationMeta,
    pub bot_token: Option<AccessToken>,
    pub bot_refresh_token: Option<RefreshToken>,
    pub user: Option<UserTokens>,
    pub incoming_webhook_url: Option<WebhookUrl>,
    /// When the code exchange started, unix milliseconds: a tenant purged
    /// after it refuses this install ([`crate::StoreError::PurgedDuringInstall`]).
    /// `from_oauth_response` sets the start of `installed_at`'s second; the
    /// OAuth callback sets the exact time it read before calling Slack.
    pub exchange_started_ms: i64,
}

fn split_scopes(s: Option<&str>) -> Vec<String> {
    s.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Installation {
    /// Builds the installation from Slack's code-exchange answer.
    pub fn from_oauth_response(
        resp: impl Into<OAuthV2Response>,
        now_secs: i64,
    ) -> Result<Self, StoreError> {
        let resp: OAuthV2Response = resp.into();
        if resp.access_token.is_none()
            && resp
                .authed_user
                .as_ref()
                .is_none_or(|u| u.access_token.is_none())
        {
            return Err(StoreError::Invalid("oauth response carries no token"));
        }
        let webhook = resp.incoming_webhook;
        let meta = InstallationMeta {
            app_id: resp.app_id,
            enterprise_id: resp.enterprise.as_ref().map(|e| e.id.clone()),
            enterprise_name: resp.enterprise.as_ref().and_then(|e| e.name.clone()),
            enterprise_url: None,
            team_id: resp.team.as_ref().map(|t| t.id.clone()),
            team_name: resp.team.as_ref().and_then(|t| t.name.clone()),
            bot_id: None,
            bot_user_id: resp.bot_user_id,
            bot_scopes: split_scopes(resp.scope.as_deref()),
            user_id: resp.authed_user.as_ref().map(|u| u.id.clone()),
            user_scopes: split_scopes(resp.authed_user.as_ref().and_then(|u| u.scope.as_deref())),
            token_type: resp.token_type,
            is_enterprise_install: resp.is_enterprise_install,
            installed_at: now_secs,
            status: Status::Active,
            token_expires_at: resp.expires_in.map(|s| now_secs + s),
            incoming_webhook_channel: webhook.as_ref().and_then(|w| w.channel.clone()),
            incoming_webhook_channel_id: webhook.as_ref().and_then(|w| w.channel_id.clone()),
            incoming_webhook_configuration_url: webhook
                .as_ref()
                .and_then(|w| w.configuration_url.clone()),
        };
        let user = resp.authed_user.map(|u| UserTokens {
            scopes: split_scopes(u.scope.as_deref()),
            expires_at: u.expires_in.map(|s| now_secs + s),
            user_id: u.id,
            token: u.access_token,
            refresh_token: u.refresh_token,
        });
        Ok(Self {
            meta,
            bot_token: resp.access_token,
            bot_refresh_token: resp.refresh_token,
            user,
            incoming_webhook_url: webhook.map(|w| w.url),
            exchange_started_ms: now_secs * 1000,
        })
    }
}

/// What a lookup returns: metadata, never tokens (those come from the audited
/// token reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationInfo {
    pub tenant: TenantKey,
    pub kind: RecordKind,
    pub meta: InstallationMeta,
    pub version: u64,
    pub generation: u64,
    pub has_token: bool,
    pub has_refresh_token: bool,
}

/// Bolt's installation query: which tenant, optionally which user.
#[derive(Debug, Clone)]
pub struct InstallationQuery<'a> {
    pub tenant: &'a VerifiedTenant,
    pub user_id: Option<&'a str>,
}
