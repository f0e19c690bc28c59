//! Tenant keys, and the proof type token reads require.

use thiserror::Error;
use tokenkeep_slack_api::{OAuthGrant, OAuthV2Response, SignedPayload};

use crate::schema;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TenantError {
    #[error("request names no team or enterprise")]
    Missing,
    #[error("malformed slack id")]
    MalformedId,
    #[error("malformed request body")]
    MalformedBody,
}

/// A workspace (`team_id`), an org-wide Enterprise Grid install (`enterprise_id`
/// and no team), or a workspace inside an org (both).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantKey {
    enterprise_id: Option<String>,
    team_id: Option<String>,
}

/// Slack ids are upper-case letters and digits (`T0123ABC`, `E0123`, `U0123`).
/// Anything else is refused, which also keeps `#` (our key separator) out of keys.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

impl TenantKey {
    pub fn new(enterprise_id: Option<&str>, team_id: Option<&str>) -> Result<Self, TenantError> {
        let enterprise_id = enterprise_id.filter(|s| !s.is_empty());
        let team_id = team_id.filter(|s| !s.is_empty());
        if enterprise_id.is_none() && team_id.is_none() {
            return Err(TenantError::Missing);
        }
        for id in enterprise_id.iter().chain(team_id.iter()) {
            if !valid_id(id) {
                return Err(TenantError::MalformedId);
            }
        }
        Ok(Self {
            enterprise_id: enterprise_id.map(str::to_owned),
            team_id: team_id.map(str::to_owned),
        })
    }

    /// Bolt's lookup rule: an org-wide install is keyed by the enterprise alone.
    pub fn for_lookup(
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        is_enterprise_install: bool,
    ) -> Result<Self, TenantError> {
        if is_enterprise_install && enterprise_id.is_some_and(|e| !e.is_empty()) {
            Self::new(enterprise_id, None)
        } else {
            Self::new(enterprise_id, team_id)
        }
    }

    pub fn enterprise_id(&self) -> Option<&str> {
        self.enterprise_id.as_deref()
    }
    pub fn team_id(&self) -> Option<&str> {
        self.team_id.as_deref()
    }
    pub fn is_org_wide(&self) -> bool {
        self.team_id.is_none()
    }

    /// Partition key `T#{enterprise or -}#{team or -}`. Ids can't contain `#` or
    /// `-`, so distinct tenants never share a key (T1 vs T10, E vs T).
    pub fn pk(&self) -> String {
        format!(
            "T#{}#{}",
            self.enterprise_id.as_deref().unwrap_or("-"),
            self.team_id.as_deref().unwrap_or("-")
        )
    }

    /// Inverse of [`pk`](Self::pk).
    pub fn from_pk(pk: &str) -> Result<Self, TenantError> {
        let mut parts = pk.split('#');
        let (Some("T"), Some(e), Some(t), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TenantError::MalformedId);
        };
        // An empty part would parse like `-` (T#A# as T#A#-): two stored keys, one tenant.
        if e.is_empty() || t.is_empty() {
            return Err(TenantError::MalformedId);
        }
        let opt = |s: &str| if s == "-" { None } else { Some(s.to_owned()) };
        Self::new(opt(e).as_deref(), opt(t).as_deref())
    }
}

impl std::fmt::Display for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pk())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordKind {
    Bot,
    User(String),
}

/// One installation item: a tenant's bot record or one user's record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub tenant: TenantKey,
    pub kind: RecordKind,
}

impl RecordKey {
    pub fn bot(tenant: TenantKey) -> Self {
        Self {
            tenant,
            kind: RecordKind::Bot,
        }
    }
    pub fn user(tenant: TenantKey, user_id: &str) -> Result<Self, TenantError> {
        if !valid_id(user_id) {
            return Err(TenantError::MalformedId);
        }
        Ok(Self {
            tenant,
            kind: RecordKind::User(user_id.to_owned()),
        })
    }
    pub fn pk(&self) -> String {
        self.tenant.pk()
    }
    pub fn sk(&self) -> String {
        match &self.kind {
            RecordKind::Bot => schema::SK_BOT.to_owned(),
            RecordKind::User(u) => format!("{}{u}", schema::SK_USER_PREFIX),
        }
    }
    pub fn from_keys(pk: &str, sk: &str) -> Result<Self, TenantError> {
        let tenant = TenantKey::from_pk(pk)?;
        if sk == schema::SK_BOT {
            Ok(Self::bot(tenant))
        } else if let Some(user) = sk.strip_prefix(schema::SK_USER_PREFIX) {
            Self::user(tenant, user)
        } else {
            Err(TenantError::MalformedId)
        }
    }
}

/// Where a [`VerifiedTenant`] came from; recorded in audit logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantOrigin {
    /// A request whose Slack signature checked out.
    SignedRequest,
    /// Slack's own `oauth.v2.access` answer during install.
    OAuthCallback,
    /// A system job (rotation sweep, operator command) acting on stored records.
    SystemJob,
}

/// The only key token reads accept.
///
/// Defends against tenant confusion: nothing builds one from a query string, a
/// header, an unsigned body or any other caller-made value. The constructors
/// take a proof that only its issuer can make, and derive the tenant from it
/// themselves:
///
/// - [`from_signed_request`](Self::from_signed_request): a [`SignedPayload`],
///   which only the request verifier makes (the body's Slack signature checked out);
/// - [`from_oauth_grant`](Self::from_oauth_grant): an [`OAuthGrant`], which only
///   the Slack client makes from Slack's `oauth.v2.access` answer;
/// - the store's `tenant_for_job`: a system job naming a tenant whose records
///   it has just read back from the store.
///
/// None of these compiles from caller data:
///
/// ```compile_fail
/// # use tokenkeep_installations::{TenantKey, TenantOrigin, VerifiedTenant};
/// // The fields are private: no struct literal.
/// let key = TenantKey::new(None, Some("T1")).unwrap();
/// let _ = VerifiedTenant { key, origin: TenantOrigin::SignedRequest };
/// ```
///
/// ```compile_fail
/// # use tokenkeep_installations::VerifiedTenant;
/// // An OAuth grant can't be deserialized from JSON someone else wrote.
/// let grant: tokenkeep_slack_api::OAuthGrant = serde_json::from_str(r#"{"team":{"id":"T1"}}"#).unwrap();
/// let _ = VerifiedTenant::from_oauth_grant(&grant);
/// ```
///
/// ```compile_fail
/// # use tokenkeep_installations::VerifiedTenant;
/// // Nor can a signed payload be assembled by hand …
/// let _ = tokenkeep_slack_api::SignedPayload { request: todo!(), tenant: todo!(), payload: todo!() };
/// ```
///
/// ```compile_fail
/// # use tokenkeep_installations::VerifiedTenant;
/// // … or a verified request (the verifier's output) be made without the verifier.
/// let _ = tokenkeep_slack_api::VerifiedRequest { body: Vec::new().into(), timestamp: 0 };
/// ```
///
/// ```compile_fail
/// # use tokenkeep_installations::{InstallationInfo, VerifiedTenant};
/// // Records a caller describes are no proof either: there is no `for_stored`.
/// fn mint(info: &InstallationInfo) -> VerifiedTenant { VerifiedTenant::for_stored(info) }
/// ```
///
/// What does compile is the verified path, end to end:
///
/// ```
/// # use tokenkeep_installations::VerifiedTenant;
/// use tokenkeep_slack_api::{sign_request, RequestVerifier, SigningSecret};
/// let secret = SigningSecret::new("s".to_owned());
/// let body = br#"{"type":"event_callback","team_id":"T1"}"#;
/// let sig = sign_request(&secret, 1000, body);
/// let signed = RequestVerifier::new(secret)
///     .verify_at(1000, Some("1000"), Some(&sig), body.to_vec().into())
///     .unwrap()
///     .parse(Some("application/json"))
///     .unwrap();
/// let tenant = VerifiedTenant::from_signed_request(&signed).unwrap();
/// assert_eq!(tenant.key().team_id(), Some("T1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTenant {
    key: TenantKey,
    origin: TenantOrigin,
}

impl VerifiedTenant {
    pub fn key(&self) -> &TenantKey {
        &self.key
    }
    pub fn origin(&self) -> TenantOrigin {
        self.origin
    }

    /// The tenant a signed Slack request speaks for, from the verifier's one
    /// parse (`authorizations[0]`, else the top-level or interactivity ids),
    /// with Bolt's org-wide rule.
    pub fn from_signed_request(req: &SignedPayload) -> Result<Self, TenantError> {
        let ids = req.tenant_ids();
        let key = TenantKey::for_lookup(
            ids.enterprise_id(),
            ids.team_id(),
            ids.is_enterprise_install(),
        )?;
        Ok(Self {
            key,
            origin: TenantOrigin::SignedRequest,
        })
    }

    /// The tenant Slack just installed the app into.
    pub fn from_oauth_grant(grant: &OAuthGrant) -> Result<Self, TenantError> {
        Self::from_answer(grant.response())
    }

    /// As [`from_oauth_grant`](Self::from_oauth_grant) from a fixture answer.
    /// Test builds only (feature `test-util`); shipped binaries don't have it.
    #[cfg(feature = "test-util")]
    pub fn from_oauth_response(resp: &OAuthV2Response) -> Result<Self, TenantError> {
        Self::from_answer(resp)
    }

    fn from_answer(resp: &OAuthV2Response) -> Result<Self, TenantError> {
        let e = resp.enterprise.as_ref().map(|e| e.id.as_str());
        let t = resp.team.as_ref().map(|t| t.id.as_str());
        let key = TenantKey::for_lookup(e, t, resp.is_enterprise_install)?;
        Ok(Self {
            key,
            origin: TenantOrigin::OAuthCallback,
        })
    }

    pub(crate) fn for_stored_key(key: TenantKey) -> Self {
        Self {
            key,
            origin: TenantOrigin::SystemJob,
        }
    }
}

// ---- token service: an installation Bolt's own OAuth flow produced ----------

impl VerifiedTenant {
    /// The tenant a token belongs to, by Slack's own `auth.test` answer for it.
    ///
    /// The token service uses it for installations that Bolt's OAuth flow
    /// produced: the caller hands over tokens, and Slack (not the caller's
    /// JSON) says which tenant they are for, so a caller can only store an
    /// installation for a tenant whose live token it holds.
    pub fn from_token_owner(
        answer: &tokenkeep_slack_api::AuthTestResponse,
    ) -> Result<Self, TenantError> {
        let key = TenantKey::for_lookup(
            answer.enterprise_id.as_deref(),
            answer.team_id.as_deref(),
            answer.is_enterprise_install,
        )?;
        Ok(Self {
            key,
            origin: TenantOrigin::OAuthCallback,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_and_lookup_rule() {
        let team = TenantKey::new(Some("E1"), Some("T1")).unwrap();
        assert_eq!(team.pk(), "T#E1#T1");
        let org = TenantKey::for_lookup(Some("E1"), Some("T1"), true).unwrap();
        assert_eq!(org.pk(), "T#E1#-");
        assert!(org.is_org_wide());
        assert_eq!(TenantKey::new(None, Some("T1")).unwrap().pk(), "T#-#T1");
        assert_eq!(TenantKey::new(None, None), Err(TenantError::Missing));
        assert_eq!(
            TenantKey::new(None, Some("T1#x")),
            Err(TenantError::MalformedId)
        );
        assert_eq!(
            TenantKey::new(None, Some("t1")),
            Err(TenantError::MalformedId)
        );
        assert!(RecordKey::user(team.clone(), "U1#BOT").is_err());
    }

    proptest! {
        /// Distinct tenants never share a partition key, and keys parse back.
        #[test]
        fn pk_is_injective(e1 in proptest::option::of("[A-Z0-9]{1,4}"), t1 in proptest::option::of("[A-Z0-9]{1,4}"),
                           e2 in proptest::option::of("[A-Z0-9]{1,4}"), t2 in proptest::option::of("[A-Z0-9]{1,4}")) {
            let (Ok(a), Ok(b)) = (TenantKey::new(e1.as_deref(), t1.as_deref()), TenantKey::new(e2.as_deref(), t2.as_deref())) else {
                return Ok(());
            };
            prop_assert_eq!(a == b, a.pk() == b.pk());
            prop_assert_eq!(TenantKey::from_pk(&a.pk()).unwrap(), a.clone());
            let user = RecordKey::user(a.clone(), "U1").unwrap();
            prop_assert_eq!(RecordKey::from_keys(&user.pk(), &user.sk()).unwrap(), user);
        }
    }
}
