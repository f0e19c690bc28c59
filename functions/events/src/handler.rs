//! The seam between ingestion and the app: [`EventHandler`], what it receives
//! ([`AuthorizedEvent`]) and a minimal handler ([`MentionReplier`]). Apps
//! register listeners ([`Listeners`](crate::Listeners)) instead; this trait is
//! what those listeners are dispatched through.

use async_trait::async_trait;
use serde_json::Value;
use tokenkeep_installations::VerifiedTenant;
use tokenkeep_slack_api::{AccessToken, SlackClient, SlackError};

use crate::ack::Ack;

/// Which Slack surface a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSource {
    /// Events API (`event_callback`, JSON body).
    EventsApi,
    /// Interactivity (`payload=` form field holding JSON).
    Interactivity,
    /// Slash command (form fields).
    SlashCommand,
}

impl EventSource {
    pub fn as_str(self) -> &'static str {
        match self {
            EventSource::EventsApi => "events_api",
            EventSource::Interactivity => "interactivity",
            EventSource::SlashCommand => "slash_command",
        }
    }
}

/// A request whose signature checked out, whose tenant is installed, with the
/// tenant's bot token already read (and audited) for it.
///
/// `Debug` is safe to log: the token prints as `[REDACTED]`. The `event` value
/// holds user content (message text, a slash command's `response_url`), so
/// handlers should log fields they choose, not the whole value.
#[derive(Debug, Clone)]
pub struct AuthorizedEvent {
    /// The tenant the signed body speaks for; the token below belongs to it.
    pub tenant: VerifiedTenant,
    /// The tenant's bot token, read through the store with reason = `event_type`.
    pub bot_token: AccessToken,
    pub source: EventSource,
    /// `event.type` for the Events API (`app_mention`, `message`…), the
    /// payload's `type` for interactivity (`block_actions`, `view_submission`…),
    /// `slash_command` for slash commands.
    pub event_type: String,
    /// Events API: the `event` object. Interactivity: the whole payload.
    /// Slash command: the form fields as a JSON object of strings.
    pub event: Value,
    /// Slack's `event_id` (Events API only; interactivity and commands have none).
    pub event_id: Option<String>,
    /// The API Gateway (or Lambda) request id, also in the audit record and logs.
    pub request_id: String,
    /// What [`EventHandler::route`] chose for this request.
    pub route: Route,
}

/// Which of a handler's listeners takes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Names the listener; it is the audit reason of the token read made for it.
    pub listener: String,
    /// The handler's own index of the listener.
    pub index: usize,
}

/// Why a handler failed. Ingestion logs it and still acknowledges the request
/// (see the crate doc), so the variants exist for logs and metrics, not for
/// choosing a status code. Add a variant when a handler failure needs its own
/// alarm; otherwise use [`HandlerError::Other`].
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event lacks a field the handler needs.
    #[error("event is missing or has a malformed {0}")]
    MalformedEvent(&'static str),
    /// A Slack Web API call failed (its Display carries no token).
    #[error("slack call failed")]
    Slack(#[from] SlackError),
    /// The listener answered but its lazy work was not queued: `ack` is still
    /// sent (counted as `LazyNotQueued`); the lazy part does not run.
    #[error("lazy work could not be queued")]
    LazyNotQueued {
        ack: Ack,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("handler failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What the app does with an authorized Slack request.
///
/// Contract:
/// - Called only after the signature, tenant and token checks passed; the
///   token in [`AuthorizedEvent`] belongs to `ctx.tenant` and no other.
/// - Called at most once per Events API `event_id` (Slack's retries are
///   acknowledged without a second call) for as long as the dedupe record
///   lives; interactivity and slash commands have no id and are not deduped.
/// - Runs before the HTTP answer is sent and Slack gives up after 3 s, so a
///   handler must be quick: post a reply, enqueue longer work.
/// - An `Err` is logged and counted, and the request is still acknowledged
///   with 200: Slack retrying a request the handler cannot process would only
///   repeat the failure (and, after the first retry, be deduplicated anyway).
/// - Never log `ctx.bot_token`; it has no `Display` for that reason.
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Which listener would take this request, before any token is read.
    /// `None`: the request is acknowledged (empty 200) and counted as
    /// `Unhandled`, with no token read and no call. The default takes every
    /// request, named by its event type (Events API) or surface.
    fn route(&self, source: EventSource, event_type: &str, _event: &Value) -> Option<Route> {
        let listener = match source {
            EventSource::EventsApi => event_type.to_owned(),
            other => other.as_str().to_owned(),
        };
        Some(Route { listener, index: 0 })
    }

    /// Handles the request and says what Slack is answered (within 3 s).
    async fn handle(&self, ctx: AuthorizedEvent) -> Result<Ack, HandlerError>;
}

/// Example handler: answers an `app_mention` in its thread; ignores the rest.
#[derive(Debug, Clone)]
pub struct MentionReplier {
    pub slack: SlackClient,
}

/// The reply text: short, and names the user only when the id looks like one,
/// so nothing in the event can inject mrkdwn into the answer.
pub fn mention_reply_text(user: Option<&str>) -> String {
    let is_slack_id = |u: &&str| {
        !u.is_empty()
            && u.len() <= 32
            && u.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    match user.filter(is_slack_id) {
        Some(user) => format!("Hi <@{user}>, tokenkeep heard you."),
        None => "Hi, tokenkeep heard you.".to_owned(),
    }
}

#[async_trait]
impl EventHandler for MentionReplier {
    async fn handle(&self, ctx: AuthorizedEvent) -> Result<Ack, HandlerError> {
        if ctx.source != EventSource::EventsApi || ctx.event_type != "app_mention" {
            return Ok(Ack::Empty);
        }
        // A bot mentioning us (possibly ourselves) gets no answer: no reply loops.
        if ctx.event.get("bot_id").is_some_and(|b| !b.is_null()) {
            return Ok(Ack::Empty);
        }
        let channel = ctx
            .event
            .get("channel")
            .and_then(Value::as_str)
            .filter(|c| !c.is_empty())
            .ok_or(HandlerError::MalformedEvent("channel"))?;
        let thread_ts = ctx
            .event
            .get("thread_ts")
            .and_then(Value::as_str)
            .or_else(|| ctx.event.get("ts").and_then(Value::as_str))
            .ok_or(HandlerError::MalformedEvent("ts"))?;
        let text = mention_reply_text(ctx.event.get("user").and_then(Value::as_str));
        self.slack
            .chat_post_message(&ctx.bot_token, channel, &text, Some(thread_ts))
            .await?;
        Ok(Ack::Empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_names_only_well_formed_user_ids() {
        // Given user ids of each shape, when the reply is built, then only a Slack id is echoed
        assert_eq!(
            mention_reply_text(Some("U123ABC")),
            "Hi <@U123ABC>, tokenkeep heard you."
        );
        assert_eq!(
            mention_reply_text(Some("U1> <!channel")),
            "Hi, tokenkeep heard you."
        );
        assert_eq!(mention_reply_text(None), "Hi, tokenkeep heard you.");
    }
}
