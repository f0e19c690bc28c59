//! Tenant keys, and the proof type token reads require.

use thiserror::Error;
use tokenkeep_slack_api::{OAuthV2Response, VerifiedRequest};

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
/// header or an unsigned body. The three constructors take a proof — a
/// [`VerifiedRequest`], an [`OAuthV2Response`], or a tenant read back from the
/// store — and derive the tenant from it themselves.
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

    /// The tenant a signed Slack request speaks for: Events API JSON
    /// (`authorizations[0]`, else top-level `team_id`/`enterprise_id`),
    /// interactivity (`payload=` JSON with `team.id`/`enterprise.id`) or a slash
    /// command (form fields), with Bolt's org-wide rule.
    pub fn from_signed_request(req: &VerifiedRequest) -> Result<Self, TenantError> {
        let (e, t, org) = tenant_fields(req.body())?;
        let key = TenantKey::for_lookup(e.as_deref(), t.as_deref(), org)?;
        Ok(Self {
            key,
            origin: TenantOrigin::SignedRequest,
        })
    }

    /// The tenant Slack just installed the app into.
    pub fn from_oauth_response(resp: &OAuthV2Response) -> Result<Self, TenantError> {
        let e = resp.enterprise.as_ref().map(|e| e.id.as_str());
        let t = resp.team.as_ref().map(|t| t.id.as_str());
        let key = TenantKey::for_lookup(e, t, resp.is_enterprise_install)?;
        Ok(Self {
            key,
            origin: TenantOrigin::OAuthCallback,
        })
    }

    /// For system jobs acting on a tenant whose records they read from the store.
    pub fn for_stored(info: &crate::InstallationInfo) -> Self {
        Self {
            key: info.tenant.clone(),
            origin: TenantOrigin::SystemJob,
        }
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

/// Extracts (enterprise_id, team_id, is_enterprise_install) from a signed body.
fn tenant_fields(body: &[u8]) -> Result<(Option<String>, Option<String>, bool), TenantError> {
    #[derive(serde::Deserialize, Default)]
    struct Auth {
        enterprise_id: Option<String>,
        team_id: Option<String>,
        #[serde(default)]
        is_enterprise_install: bool,
    }
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    #[derive(serde::Deserialize)]
    struct Envelope {
        #[serde(default)]
        authorizations: Vec<Auth>,
        enterprise_id: Option<String>,
        team_id: Option<String>,
        #[serde(default)]
        is_enterprise_install: bool,
        // Interactivity payloads.
        team: Option<IdOnly>,
        enterprise: Option<IdOnly>,
    }

    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let envelope: Envelope = if first == Some(&b'{') {
        serde_json::from_slice(body).map_err(|_| TenantError::MalformedBody)?
    } else {
        let form: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| TenantError::MalformedBody)?;
        if let Some((_, payload)) = form.iter().find(|(k, _)| k == "payload") {
            serde_json::from_str(payload).map_err(|_| TenantError::MalformedBody)?
        } else {
            let get = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            Envelope {
                authorizations: Vec::new(),
                enterprise_id: get("enterprise_id"),
                team_id: get("team_id"),
                is_enterprise_install: get("is_enterprise_install").as_deref() == Some("true"),
                team: None,
                enterprise: None,
            }
        }
    };
    if let Some(auth) = envelope.authorizations.into_iter().next() {
        return Ok((auth.enterprise_id, auth.team_id, auth.is_enterprise_install));
    }
    let enterprise = envelope.enterprise_id.or(envelope.enterprise.map(|e| e.id));
    let team = envelope.team_id.or(envelope.team.map(|t| t.id));
    Ok((enterprise, team, envelope.is_enterprise_install))
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

    #[test]
    fn tenant_fields_from_each_request_shape() {
        let event = br#"{"type":"event_callback","team_id":"T9","authorizations":[{"enterprise_id":"E1","team_id":"T1","is_enterprise_install":true}]}"#;
        assert_eq!(
            tenant_fields(event).unwrap(),
            (Some("E1".into()), Some("T1".into()), true)
        );
        let plain = br#"{"type":"event_callback","team_id":"T2","enterprise_id":null}"#;
        assert_eq!(
            tenant_fields(plain).unwrap(),
            (None, Some("T2".into()), false)
        );
        let slash = b"team_id=T3&enterprise_id=E3&is_enterprise_install=false&command=%2Fx";
        assert_eq!(
            tenant_fields(slash).unwrap(),
            (Some("E3".into()), Some("T3".into()), false)
        );
        let interactive =
            b"payload=%7B%22team%22%3A%7B%22id%22%3A%22T4%22%7D%2C%22enterprise%22%3Anull%7D";
        assert_eq!(
            tenant_fields(interactive).unwrap(),
            (None, Some("T4".into()), false)
        );
        assert_eq!(
            tenant_fields(b"{not json").unwrap_err(),
            TenantError::MalformedBody
        );
    }
}
