//! What the Slack Web API answers, shaped for the installation store.
//!
//! Every field Slack may omit is an `Option`, so a new or missing field never
//! fails a whole install. Secrets arrive already wrapped in their newtypes
//! ([`AccessToken`], [`RefreshToken`], [`WebhookUrl`]): they are never a plain
//! `String` that a `{:?}` could print, and these types have no `Serialize`.

use serde::{Deserialize, Deserializer};

use crate::secrets::{AccessToken, RefreshToken, WebhookUrl};

/// The workspace an installation belongs to. `null` for an org-wide install.
#[derive(Debug, Clone, Deserialize)]
pub struct Team {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// The Enterprise Grid organization, if any.
#[derive(Debug, Clone, Deserialize)]
pub struct Enterprise {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Present when the app asked for `incoming-webhook`; `url` is a bearer secret.
#[derive(Debug, Clone, Deserialize)]
pub struct IncomingWebhook {
    pub channel: Option<String>,
    pub channel_id: Option<String>,
    pub configuration_url: Option<String>,
    pub url: WebhookUrl,
}

/// The user who authorized the install. Token fields are set only when user
/// scopes were requested (and, with rotation, carry their own refresh pair).
#[derive(Debug, Clone, Deserialize)]
pub struct AuthedUser {
    pub id: String,
    pub scope: Option<String>,
    pub access_token: Option<AccessToken>,
    pub token_type: Option<String>,
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Option<i64>,
}

/// Everything oauth.v2.access returns (code exchange and refresh; on a refresh
/// only token fields are set: `access_token`, `refresh_token`, `expires_in`,
/// `token_type`, `scope`). Callers must take the installation's identity from
/// their stored record on a refresh, never from this answer.
///
/// `team` and `enterprise` are JSON `null` for org-wide and non-Grid installs
/// respectively; both decode to `None`.
#[derive(Debug, Clone, Deserialize)]
pub struct OAuthV2Response {
    pub app_id: Option<String>,
    pub authed_user: Option<AuthedUser>,
    pub scope: Option<String>,
    pub token_type: Option<String>,
    pub access_token: Option<AccessToken>,
    pub bot_user_id: Option<String>,
    pub refresh_token: Option<RefreshToken>,
    pub expires_in: Option<i64>,
    pub team: Option<Team>,
    pub enterprise: Option<Enterprise>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub is_enterprise_install: bool,
    pub incoming_webhook: Option<IncomingWebhook>,
}

/// Slack's answer to a code exchange, as only this crate's client builds it.
///
/// Unlike [`OAuthV2Response`] (which anything can deserialize) a grant cannot
/// be made from caller data: it is the proof an installation's tenant came
/// from Slack, which is what `VerifiedTenant` requires at install time.
#[derive(Debug, Clone)]
pub struct OAuthGrant {
    response: OAuthV2Response,
}

impl OAuthGrant {
    pub(crate) fn from_slack(response: OAuthV2Response) -> Self {
        Self { response }
    }

    /// A grant made from a fixture answer; for tests only (feature `test-util`).
    #[cfg(any(test, feature = "test-util"))]
    pub fn from_fixture(response: OAuthV2Response) -> Self {
        Self { response }
    }

    pub fn response(&self) -> &OAuthV2Response {
        &self.response
    }

    pub fn into_response(self) -> OAuthV2Response {
        self.response
    }
}

/// A grant reads as the answer it wraps; only building one is restricted.
impl std::ops::Deref for OAuthGrant {
    type Target = OAuthV2Response;
    fn deref(&self) -> &OAuthV2Response {
        &self.response
    }
}

impl From<OAuthGrant> for OAuthV2Response {
    fn from(grant: OAuthGrant) -> Self {
        grant.response
    }
}

/// auth.test: who a token belongs to; also the cheapest "is this token alive?" probe.
#[derive(Debug, Clone, Deserialize)]
pub struct AuthTestResponse {
    pub url: Option<String>,
    pub team: Option<String>,
    pub user: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub bot_id: Option<String>,
    pub enterprise_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub is_enterprise_install: bool,
}

/// `null` and absent both mean "not an enterprise install"; failing the decode
/// over it would lose a whole installation.
fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_wide_install_decodes_with_null_team() {
        // Given an org-wide oauth.v2.access answer with `team: null`
        let json = r#"{"ok":true,"app_id":"A1","authed_user":{"id":"U1"},"scope":"chat:write",
            "token_type":"bot","access_token":"xoxb-1","bot_user_id":"U2",
            "team":null,"enterprise":{"id":"E1","name":"Org"},"is_enterprise_install":true}"#;
        // When it is decoded
        let r: OAuthV2Response = serde_json::from_str(json).unwrap();
        // Then the team is None and the enterprise is kept
        assert!(r.team.is_none());
        assert_eq!(r.enterprise.unwrap().id, "E1");
        assert!(r.is_enterprise_install);
        assert_eq!(r.access_token.unwrap().expose_secret(), "xoxb-1");
    }

    #[test]
    fn refresh_answer_decodes_with_only_token_fields() {
        // Given a refresh answer with no identity fields and a null is_enterprise_install
        let json = r#"{"ok":true,"access_token":"xoxe.xoxb-1-a","refresh_token":"xoxe-1-b",
            "expires_in":43200,"token_type":"bot","is_enterprise_install":null}"#;
        // When it is decoded
        let r: OAuthV2Response = serde_json::from_str(json).unwrap();
        // Then the token fields are set and the rest default
        assert_eq!(r.refresh_token.unwrap().expose_secret(), "xoxe-1-b");
        assert_eq!(r.expires_in, Some(43200));
        assert!(r.team.is_none() && r.enterprise.is_none() && !r.is_enterprise_install);
    }

    #[test]
    fn debug_of_a_full_answer_shows_no_secret() {
        // Given an answer carrying every kind of secret
        let json = r#"{"ok":true,"access_token":"xoxb-SECRET","refresh_token":"xoxe-1-SECRET",
            "authed_user":{"id":"U1","access_token":"xoxp-SECRET","refresh_token":"xoxe-1-USER"},
            "incoming_webhook":{"url":"https://hooks.slack.com/services/SECRET"},
            "team":{"id":"T1"}}"#;
        let r: OAuthV2Response = serde_json::from_str(json).unwrap();
        // When it is Debug-formatted
        let shown = format!("{r:?}");
        // Then no secret appears, but the non-secret ids do
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(!shown.contains("xox"), "{shown}");
        assert!(shown.contains("T1"));
    }
}
