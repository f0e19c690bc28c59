//! The signed body, parsed once.
//!
//! A [`VerifiedRequest`] becomes a [`SignedPayload`] here and nowhere else: the
//! request kind (Events API, interactivity, slash command), the tenant ids it
//! names and the payload, all read from the one parse. Tenant resolution and
//! dispatch both use this result, so they can never disagree about which
//! tenant or which payload a request carries (two parsers reading the same
//! bytes differently is how a request for tenant A gets answered with tenant
//! B's token).
//!
//! Only [`VerifiedRequest::parse`] builds a [`SignedPayload`]; its fields are
//! private, so holding one proves the bytes it came from were signed by Slack.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::verify::VerifiedRequest;

/// Why a signed body could not be parsed. Names what was wrong, never echoes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("content type is neither JSON nor a form")]
    ContentType,
    #[error("malformed JSON body")]
    Json,
    #[error("malformed form body")]
    Form,
    /// Slack never repeats a field; a repeat would let two readers see different values.
    #[error("repeated form field")]
    RepeatedField,
    #[error("malformed interactivity payload")]
    Interactivity,
    #[error("form is neither interactivity nor a slash command")]
    UnknownForm,
    /// The body names its tenant in a shape Slack never sends (e.g. a number).
    #[error("malformed tenant ids")]
    Tenant,
}

/// The outer Events API object; `event` stays JSON for the listeners.
#[derive(Debug, Clone, Deserialize)]
pub struct EventsEnvelope {
    /// `event_callback`, `url_verification`, `app_rate_limited`…
    #[serde(rename = "type")]
    pub kind: String,
    pub challenge: Option<String>,
    pub event_id: Option<String>,
    /// When the event happened (unix seconds), as Slack stamped it.
    pub event_time: Option<i64>,
    pub event: Option<Value>,
}

/// What a signed request carries, by the surface it came through.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Events API (JSON body).
    Events(EventsEnvelope),
    /// Interactivity: the `payload=` form field's JSON object.
    Interactivity(Value),
    /// Slash command: the form fields as a JSON object of strings.
    SlashCommand(Value),
}

/// The tenant a signed body names, as Slack spelled it (validated into a
/// tenant key by the installation store, not here).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantIds {
    enterprise_id: Option<String>,
    team_id: Option<String>,
    is_enterprise_install: bool,
}

impl TenantIds {
    pub fn enterprise_id(&self) -> Option<&str> {
        self.enterprise_id.as_deref()
    }
    pub fn team_id(&self) -> Option<&str> {
        self.team_id.as_deref()
    }
    pub fn is_enterprise_install(&self) -> bool {
        self.is_enterprise_install
    }
}

/// A request whose signature checked out, parsed: kind, tenant ids, payload.
#[derive(Debug, Clone)]
pub struct SignedPayload {
    request: VerifiedRequest,
    tenant: TenantIds,
    payload: Payload,
}

impl SignedPayload {
    pub fn payload(&self) -> &Payload {
        &self.payload
    }
    pub fn into_payload(self) -> Payload {
        self.payload
    }
    pub fn tenant_ids(&self) -> &TenantIds {
        &self.tenant
    }
    /// The raw signed request (body, timestamp).
    pub fn request(&self) -> &VerifiedRequest {
        &self.request
    }
}

impl VerifiedRequest {
    /// Parses the signed body by its `Content-Type` (the media type only;
    /// parameters such as `charset` are ignored): JSON is the Events API, a
    /// form is interactivity (`payload=`) or a slash command (`command=`).
    pub fn parse(self, content_type: Option<&str>) -> Result<SignedPayload, ParseError> {
        let media_type = content_type
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let (payload, tenant) = match media_type.as_str() {
            "application/json" => parse_events(self.body())?,
            "application/x-www-form-urlencoded" => parse_form(self.body())?,
            _ => return Err(ParseError::ContentType),
        };
        Ok(SignedPayload {
            request: self,
            tenant,
            payload,
        })
    }
}

/// The tenant fields of any of the three shapes; unknown fields are ignored.
#[derive(Deserialize)]
struct TenantFields {
    #[serde(default)]
    authorizations: Vec<Authorization>,
    enterprise_id: Option<String>,
    team_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_false")]
    is_enterprise_install: bool,
    // Interactivity payloads name the tenant as objects.
    team: Option<IdOnly>,
    enterprise: Option<IdOnly>,
}

#[derive(Deserialize)]
struct Authorization {
    enterprise_id: Option<String>,
    team_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_false")]
    is_enterprise_install: bool,
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl TenantFields {
    /// `authorizations[0]` wins (it is the installation Slack authorized the
    /// event for); else the top-level ids; else the interactivity objects.
    fn into_ids(self) -> TenantIds {
        if let Some(auth) = self.authorizations.into_iter().next() {
            return TenantIds {
                enterprise_id: auth.enterprise_id,
                team_id: auth.team_id,
                is_enterprise_install: auth.is_enterprise_install,
            };
        }
        TenantIds {
            enterprise_id: self.enterprise_id.or(self.enterprise.map(|e| e.id)),
            team_id: self.team_id.or(self.team.map(|t| t.id)),
            is_enterprise_install: self.is_enterprise_install,
        }
    }
}

/// The Events API body in one pass from the bytes, so a repeated top-level
/// field (two `team_id`s) is an error rather than "the last one wins".
#[derive(Deserialize)]
struct EventsBody {
    #[serde(rename = "type")]
    kind: String,
    challenge: Option<String>,
    event_id: Option<String>,
    event_time: Option<i64>,
    event: Option<Value>,
    #[serde(default)]
    authorizations: Vec<Authorization>,
    enterprise_id: Option<String>,
    team_id: Option<String>,
    #[serde(default, deserialize_with = "null_as_false")]
    is_enterprise_install: bool,
}

fn parse_events(body: &[u8]) -> Result<(Payload, TenantIds), ParseError> {
    let b: EventsBody = serde_json::from_slice(body).map_err(|_| ParseError::Json)?;
    let tenant = TenantFields {
        authorizations: b.authorizations,
        enterprise_id: b.enterprise_id,
        team_id: b.team_id,
        is_enterprise_install: b.is_enterprise_install,
        team: None,
        enterprise: None,
    }
    .into_ids();
    let envelope = EventsEnvelope {
        kind: b.kind,
        challenge: b.challenge,
        event_id: b.event_id,
        event_time: b.event_time,
        event: b.event,
    };
    Ok((Payload::Events(envelope), tenant))
}

fn parse_form(body: &[u8]) -> Result<(Payload, TenantIds), ParseError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| ParseError::Form)?;
    let mut fields = Map::new();
    for (name, value) in pairs {
        if fields.insert(name, Value::String(value)).is_some() {
            return Err(ParseError::RepeatedField);
        }
    }
    if let Some(payload) = fields.get("payload") {
        let text = payload.as_str().unwrap_or_default();
        let payload: Value = serde_json::from_str(text).map_err(|_| ParseError::Interactivity)?;
        if !payload.is_object() {
            return Err(ParseError::Interactivity);
        }
        // From the text, not the value: a repeated tenant field must be refused,
        // and a `Value` would have kept only the last copy.
        let tenant = serde_json::from_str::<TenantFields>(text)
            .map_err(|_| ParseError::Tenant)?
            .into_ids();
        return Ok((Payload::Interactivity(payload), tenant));
    }
    if fields
        .get("command")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(ParseError::UnknownForm);
    }
    let get = |name: &str| fields.get(name).and_then(Value::as_str).map(str::to_owned);
    let tenant = TenantIds {
        enterprise_id: get("enterprise_id"),
        team_id: get("team_id"),
        is_enterprise_install: get("is_enterprise_install").as_deref() == Some("true"),
    };
    Ok((Payload::SlashCommand(Value::Object(fields)), tenant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RequestVerifier, SigningSecret, sign_request};

    fn parsed(content_type: &str, body: &[u8]) -> Result<SignedPayload, ParseError> {
        let secret = SigningSecret::new("s".to_owned());
        let sig = sign_request(&secret, 1_000, body);
        let verified = RequestVerifier::new(secret)
            .verify_at(
                1_000,
                Some("1000"),
                Some(&sig),
                bytes::Bytes::copy_from_slice(body),
            )
            .unwrap();
        verified.parse(Some(content_type))
    }

    fn ids(p: &SignedPayload) -> (Option<&str>, Option<&str>, bool) {
        let t = p.tenant_ids();
        (t.enterprise_id(), t.team_id(), t.is_enterprise_install())
    }

    #[test]
    fn tenant_ids_from_each_request_shape() {
        // Given a signed body of each shape, when parsed, then the tenant comes from the one parse
        let event = br#"{"type":"event_callback","team_id":"T9","authorizations":[{"enterprise_id":"E1","team_id":"T1","is_enterprise_install":true}]}"#;
        let p = parsed("application/json", event).unwrap();
        assert_eq!(ids(&p), (Some("E1"), Some("T1"), true));
        assert!(matches!(p.payload(), Payload::Events(e) if e.kind == "event_callback"));

        let plain = br#"{"type":"event_callback","team_id":"T2","enterprise_id":null}"#;
        assert_eq!(
            ids(&parsed("application/json; charset=utf-8", plain).unwrap()),
            (None, Some("T2"), false)
        );

        let slash = b"team_id=T3&enterprise_id=E3&is_enterprise_install=false&command=%2Fx";
        let p = parsed("application/x-www-form-urlencoded", slash).unwrap();
        assert_eq!(ids(&p), (Some("E3"), Some("T3"), false));
        assert!(matches!(p.payload(), Payload::SlashCommand(v) if v["command"] == "/x"));

        let interactive = b"payload=%7B%22type%22%3A%22block_actions%22%2C%22team%22%3A%7B%22id%22%3A%22T4%22%7D%2C%22enterprise%22%3Anull%7D";
        let p = parsed("application/x-www-form-urlencoded", interactive).unwrap();
        assert_eq!(ids(&p), (None, Some("T4"), false));
        assert!(matches!(p.payload(), Payload::Interactivity(v) if v["type"] == "block_actions"));
    }

    #[test]
    fn malformed_bodies_are_refused_by_name() {
        let form = "application/x-www-form-urlencoded";
        assert_eq!(
            parsed("application/json", b"{not json").unwrap_err(),
            ParseError::Json
        );
        assert_eq!(
            parsed("text/plain", b"{}").unwrap_err(),
            ParseError::ContentType
        );
        assert_eq!(
            parsed(form, b"command=%2Fa&command=%2Fb").unwrap_err(),
            ParseError::RepeatedField
        );
        assert_eq!(
            parsed(form, b"payload=%5B1%5D").unwrap_err(),
            ParseError::Interactivity
        );
        assert_eq!(
            parsed(form, b"text=hi").unwrap_err(),
            ParseError::UnknownForm
        );
        // A tenant named twice is refused, not guessed
        let json = "application/json";
        assert_eq!(
            parsed(
                json,
                br#"{"type":"event_callback","team_id":"T1","team_id":"T2"}"#
            )
            .unwrap_err(),
            ParseError::Json
        );
        let twice = b"payload=%7B%22team%22%3A%7B%22id%22%3A%22T4%22%7D%2C%22team%22%3A%7B%22id%22%3A%22T5%22%7D%7D";
        assert_eq!(parsed(form, twice).unwrap_err(), ParseError::Tenant);
    }
}
