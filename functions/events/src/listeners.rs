//! Bolt-style listeners: registered by kind, matched in registration order,
//! the first match takes the request (as in Bolt for Python).
//!
//! ```
//! use tokenkeep_events::{CommandAck, Listeners};
//! let listeners = Listeners::new()
//!     .event("app_mention", |cx, mention| async move {
//!         let reply = tokenkeep_slack_api::Message::text("hi").in_thread(mention.reply_thread());
//!         cx.client().chat_post_message(&mention.channel, &reply).await?;
//!         Ok(())
//!     })
//!     .command("/echo", |_cx, cmd| async move { Ok(CommandAck::text(cmd.text)) });
//! # drop(listeners);
//! ```
//!
//! What a listener gets is a [`Context`] (the verified tenant, a Slack client
//! bound to that tenant's bot token, `respond`) and its typed input. It never
//! sees a token: the client carries it, and the only tokens it can reach are
//! its own tenant's (the bot token read for this request; a user token of
//! the same tenant through [`Context::user_client`]).
//!
//! Unmatched requests are acknowledged with an empty 200, logged and counted
//! (`Unhandled`), and cost no token read. Bolt for Python answers 404
//! instead; Slack retries a failed event and shows users an error for a
//! failed command, so an ack is the better answer for a request the app
//! chose not to handle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use regex::Regex;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokenkeep_installations::{InstallationStore, ReadContext, StoreError, VerifiedTenant};
use tokenkeep_slack_api::{BoundClient, Response, SlackClient, SlackError};

use crate::AUDIT_ACTOR;
use crate::ack::{Ack, CommandAck, OptionsAck, ViewAck};
use crate::handler::{AuthorizedEvent, EventHandler, EventSource, HandlerError, Route};
use crate::inputs::{
    BlockActions, BlockSuggestion, MessageEvent, Shortcut, SlashCommand, ViewPayload,
};

/// What a listener may fail with; logged and counted, the request still acked.
pub type ListenerError = Box<dyn std::error::Error + Send + Sync>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Run = Arc<dyn Fn(Context, Value) -> BoxFuture<Result<Ack, ListenerError>> + Send + Sync>;

/// Matches an id (`action_id`, `callback_id`): exactly, or by a pattern.
#[derive(Debug, Clone)]
pub enum IdMatch {
    Exact(String),
    Pattern(Regex),
}

impl IdMatch {
    fn matches(&self, id: &str) -> bool {
        match self {
            IdMatch::Exact(s) => s == id,
            IdMatch::Pattern(re) => re.is_match(id),
        }
    }
    fn describe(&self) -> String {
        match self {
            IdMatch::Exact(s) => s.clone(),
            IdMatch::Pattern(re) => format!("/{}/", re.as_str()),
        }
    }
}

impl From<&str> for IdMatch {
    fn from(s: &str) -> Self {
        IdMatch::Exact(s.to_owned())
    }
}

impl From<Regex> for IdMatch {
    fn from(re: Regex) -> Self {
        IdMatch::Pattern(re)
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    /// `event.type`; for `message`, optionally a subtype (`None`: plain
    /// messages only) and a text pattern.
    Event {
        event_type: String,
        subtype: Option<Option<String>>,
        text: Option<Regex>,
    },
    Command(String),
    Action(IdMatch),
    /// `shortcut` (global) and `message_action` (message shortcut).
    Shortcut(IdMatch),
    ViewSubmission(IdMatch),
    ViewClosed(IdMatch),
    Options(IdMatch),
}

impl Matcher {
    fn name(&self) -> String {
        match self {
            Matcher::Event { event_type, .. } => format!("event:{event_type}"),
            Matcher::Command(c) => format!("command:{c}"),
            Matcher::Action(id) => format!("action:{}", id.describe()),
            Matcher::Shortcut(id) => format!("shortcut:{}", id.describe()),
            Matcher::ViewSubmission(id) => format!("view_submission:{}", id.describe()),
            Matcher::ViewClosed(id) => format!("view_closed:{}", id.describe()),
            Matcher::Options(id) => format!("options:{}", id.describe()),
        }
    }

    fn matches(&self, source: EventSource, event_type: &str, event: &Value) -> bool {
        let str_at = |ptr: &str| event.pointer(ptr).and_then(Value::as_str);
        match (self, source) {
            (
                Matcher::Event {
                    event_type: want,
                    subtype,
                    text,
                },
                EventSource::EventsApi,
            ) => {
                want == event_type
                    && subtype
                        .as_ref()
                        .is_none_or(|sub| str_at("/subtype") == sub.as_deref())
                    && text
                        .as_ref()
                        .is_none_or(|re| str_at("/text").is_some_and(|t| re.is_match(t)))
            }
            (Matcher::Command(name), EventSource::SlashCommand) => {
                str_at("/command") == Some(name.as_str())
            }
            (Matcher::Action(id), EventSource::Interactivity) => {
                event_type == "block_actions" && first_action(event, id).is_some()
            }
            (Matcher::Shortcut(id), EventSource::Interactivity) => {
                matches!(event_type, "shortcut" | "message_action")
                    && str_at("/callback_id").is_some_and(|c| id.matches(c))
            }
            (Matcher::ViewSubmission(id), EventSource::Interactivity) => {
                event_type == "view_submission"
                    && str_at("/view/callback_id").is_some_and(|c| id.matches(c))
            }
            (Matcher::ViewClosed(id), EventSource::Interactivity) => {
                event_type == "view_closed"
                    && str_at("/view/callback_id").is_some_and(|c| id.matches(c))
            }
            (Matcher::Options(id), EventSource::Interactivity) => {
                event_type == "block_suggestion"
                    && str_at("/action_id").is_some_and(|a| id.matches(a))
            }
            _ => false,
        }
    }
}

/// The index of the first action in a `block_actions` payload that `id` matches.
fn first_action(event: &Value, id: &IdMatch) -> Option<usize> {
    event.get("actions")?.as_array()?.iter().position(|a| {
        a.get("action_id")
            .and_then(Value::as_str)
            .is_some_and(|a| id.matches(a))
    })
}

#[derive(Clone)]
struct Listener {
    matcher: Matcher,
    name: String,
    ack: Run,
    /// Work run after the ack, outside the request (see [`Listeners::lazy`]).
    lazy: Option<Run>,
}

/// The app's listeners. Build with the registration methods, hand to the
/// events router (and to the lazy worker, with the same value).
#[derive(Clone, Default)]
pub struct Listeners {
    listeners: Vec<Listener>,
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.listeners.iter().map(|l| &l.name))
            .finish()
    }
}

fn typed<I, A, F, Fut>(f: F) -> Run
where
    I: DeserializeOwned + Send + 'static,
    A: Into<Ack>,
    F: Fn(Context, I) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<A, ListenerError>> + Send + 'static,
{
    let f = Arc::new(f);
    Arc::new(move |cx: Context, raw: Value| {
        let f = Arc::clone(&f);
        Box::pin(async move {
            let input: I = serde_json::from_value(raw)
                .map_err(|e| Box::new(InputError(e)) as ListenerError)?;
            f(cx, input).await.map(Into::into)
        })
    })
}

/// The request did not have the shape the listener's input type needs.
#[derive(Debug, thiserror::Error)]
#[error("request does not fit the listener's input type")]
struct InputError(#[source] serde_json::Error);

impl Listeners {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, matcher: Matcher, ack: Run) -> Self {
        let name = matcher.name();
        self.listeners.push(Listener {
            matcher,
            name,
            ack,
            lazy: None,
        });
        self
    }

    /// An Events API event by `event.type` (`app_mention`, `reaction_added`…).
    pub fn event<F, Fut>(self, event_type: &str, f: F) -> Self
    where
        F: Fn(Context, MessageEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        self.push(
            Matcher::Event {
                event_type: event_type.to_owned(),
                subtype: None,
                text: None,
            },
            typed(f),
        )
    }

    /// Any Events API event by type, with the event as raw JSON.
    pub fn event_raw<F, Fut>(self, event_type: &str, f: F) -> Self
    where
        F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        self.push(
            Matcher::Event {
                event_type: event_type.to_owned(),
                subtype: None,
                text: None,
            },
            typed(f),
        )
    }

    /// `message` events: `subtype` `None` for plain messages, `Some("bot_message")`
    /// etc. for that subtype; `text`, when given, must match the message text.
    pub fn message<F, Fut>(self, subtype: Option<&str>, text: Option<Regex>, f: F) -> Self
    where
        F: Fn(Context, MessageEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        let matcher = Matcher::Event {
            event_type: "message".to_owned(),
            subtype: Some(subtype.map(str::to_owned)),
            text,
        };
        self.push(matcher, typed(f))
    }

    /// A slash command by name (`/echo`).
    pub fn command<F, Fut>(self, name: &str, f: F) -> Self
    where
        F: Fn(Context, SlashCommand) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CommandAck, ListenerError>> + Send + 'static,
    {
        self.push(Matcher::Command(name.to_owned()), typed(f))
    }

    /// A `block_actions` element by `action_id`; the input's `action` is the
    /// element that matched.
    pub fn action<F, Fut>(self, action_id: impl Into<IdMatch>, f: F) -> Self
    where
        F: Fn(Context, BlockActions) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        let id: IdMatch = action_id.into();
        let matcher_id = id.clone();
        let f = Arc::new(f);
        let run: Run = Arc::new(move |cx: Context, raw: Value| {
            let f = Arc::clone(&f);
            let index = first_action(&raw, &matcher_id);
            Box::pin(async move {
                let mut input: BlockActions = serde_json::from_value(raw)
                    .map_err(|e| Box::new(InputError(e)) as ListenerError)?;
                if let Some(action) = index.and_then(|i| input.actions.get(i)) {
                    input.action = action.clone();
                }
                f(cx, input).await.map(Into::into)
            })
        });
        self.push(Matcher::Action(id), run)
    }

    /// A global or message shortcut by `callback_id`.
    pub fn shortcut<F, Fut>(self, callback_id: impl Into<IdMatch>, f: F) -> Self
    where
        F: Fn(Context, Shortcut) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        self.push(Matcher::Shortcut(callback_id.into()), typed(f))
    }

    /// A modal's submission by its view's `callback_id`.
    pub fn view_submission<F, Fut>(self, callback_id: impl Into<IdMatch>, f: F) -> Self
    where
        F: Fn(Context, ViewPayload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ViewAck, ListenerError>> + Send + 'static,
    {
        self.push(Matcher::ViewSubmission(callback_id.into()), typed(f))
    }

    /// A modal closed by the user (sent only if the view asked `notify_on_close`).
    pub fn view_closed<F, Fut>(self, callback_id: impl Into<IdMatch>, f: F) -> Self
    where
        F: Fn(Context, ViewPayload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        self.push(Matcher::ViewClosed(callback_id.into()), typed(f))
    }

    /// `block_suggestion`: the options of an external select, by `action_id`.
    pub fn options<F, Fut>(self, action_id: impl Into<IdMatch>, f: F) -> Self
    where
        F: Fn(Context, BlockSuggestion) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<OptionsAck, ListenerError>> + Send + 'static,
    {
        self.push(Matcher::Options(action_id.into()), typed(f))
    }

    /// Attaches lazy work to the listener registered last (Bolt for Python's
    /// lazy listeners): the listener acks within 3 s, then `f` runs elsewhere
    /// with the same input as raw JSON, for as long as it needs. In AWS it runs
    /// on the worker Lambda via SQS, in `tokenkeep dev` on the embedded queue.
    /// `f` gets its own context: the worker reads the tenant's token again,
    /// audited with this listener's name.
    ///
    /// Panics if no listener was registered before (a programming error, found
    /// at startup).
    pub fn lazy<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ListenerError>> + Send + 'static,
    {
        let run = typed(f);
        let last = self
            .listeners
            .last_mut()
            .expect("Listeners::lazy follows the listener it belongs to");
        last.lazy = Some(run);
        self
    }

    fn find(
        &self,
        source: EventSource,
        event_type: &str,
        event: &Value,
    ) -> Option<(usize, &Listener)> {
        self.listeners
            .iter()
            .enumerate()
            .find(|(_, l)| l.matcher.matches(source, event_type, event))
    }

    /// The listener's name at `index` (what a lazy message names).
    pub fn name_of(&self, index: usize) -> Option<&str> {
        self.listeners.get(index).map(|l| l.name.as_str())
    }

    /// Runs the lazy work of listener `index` (the worker's entry point).
    pub async fn run_lazy(
        &self,
        index: usize,
        cx: Context,
        payload: Value,
    ) -> Result<(), ListenerError> {
        let lazy = self
            .listeners
            .get(index)
            .and_then(|l| l.lazy.clone())
            .ok_or("no lazy work for this listener")?;
        lazy(cx, payload).await.map(drop)
    }
}

/// What a listener gets besides its input.
#[derive(Clone)]
pub struct Context {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    tenant: VerifiedTenant,
    client: BoundClient,
    slack: SlackClient,
    store: Arc<InstallationStore>,
    /// Who reads tokens for this context, in the audit: the router
    /// (`events`) or the lazy worker (`worker`).
    actor: &'static str,
    listener: String,
    request_id: String,
    raw: Value,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("tenant", &self.inner.tenant.key())
            .field("listener", &self.inner.listener)
            .field("request_id", &self.inner.request_id)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for `tenant` with its bot token already read (audited, by
    /// `actor`) as `client`. Built by the router and the lazy worker only.
    #[allow(clippy::too_many_arguments)] // one private constructor, two callers
    pub(crate) fn new(
        tenant: VerifiedTenant,
        client: BoundClient,
        slack: SlackClient,
        store: Arc<InstallationStore>,
        actor: &'static str,
        listener: String,
        request_id: String,
        raw: Value,
    ) -> Self {
        Self {
            inner: Arc::new(ContextInner {
                tenant,
                client,
                slack,
                store,
                actor,
                listener,
                request_id,
                raw,
            }),
        }
    }

    /// The tenant this request was verified to come from.
    pub fn tenant(&self) -> &VerifiedTenant {
        &self.inner.tenant
    }

    /// A Slack client bound to this tenant's bot token.
    pub fn client(&self) -> &BoundClient {
        &self.inner.client
    }

    /// A Slack client bound to the user token `user_id` granted this app in
    /// this tenant (audited as whoever runs the listener, `events` or
    /// `worker`, reason = this listener). `NotInstalled` when that user never
    /// authorized the app.
    pub async fn user_client(&self, user_id: &str) -> Result<BoundClient, StoreError> {
        let ctx = ReadContext::new(
            self.inner.actor,
            &self.inner.request_id,
            &self.inner.listener,
        );
        let token = self
            .inner
            .store
            .user_token(&self.inner.tenant, user_id, &ctx)
            .await?;
        Ok(self.inner.slack.bind(token))
    }

    /// Posts to a `response_url` from this request's payload.
    pub async fn respond(&self, response_url: &str, response: &Response) -> Result<(), SlackError> {
        self.inner.slack.respond(response_url, response).await
    }

    /// The whole payload as Slack sent it (Events API: the `event` object).
    pub fn raw(&self) -> &Value {
        &self.inner.raw
    }

    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The name of the listener running (`command:/echo`, `action:approve`).
    pub fn listener(&self) -> &str {
        &self.inner.listener
    }
}

/// Where lazy work goes after the ack (SQS in AWS, the embedded queue in
/// `tokenkeep dev`). Contract: `enqueue` returns only once the message is
/// durably accepted; the message holds the tenant key, the listener and the
/// verified payload, never a token.
#[async_trait]
pub trait LazyQueue: Send + Sync + std::fmt::Debug {
    async fn enqueue(&self, job: crate::lazy::LazyJob) -> Result<(), crate::lazy::QueueError>;
}

/// [`Listeners`] bound to what they need at run time: the [`EventHandler`]
/// the events router dispatches through.
#[derive(Debug, Clone)]
pub struct ListenerHandler {
    listeners: Listeners,
    slack: SlackClient,
    store: Arc<InstallationStore>,
    lazy: Option<Arc<dyn LazyQueue>>,
}

impl ListenerHandler {
    pub fn new(listeners: Listeners, slack: SlackClient, store: Arc<InstallationStore>) -> Self {
        Self {
            listeners,
            slack,
            store,
            lazy: None,
        }
    }

    /// Where lazy work is enqueued. Without a queue, a listener with lazy work
    /// still acks, and the lazy part fails (logged, counted).
    pub fn with_lazy_queue(mut self, queue: Arc<dyn LazyQueue>) -> Self {
        self.lazy = Some(queue);
        self
    }
}

#[async_trait]
impl EventHandler for ListenerHandler {
    fn route(&self, source: EventSource, event_type: &str, event: &Value) -> Option<Route> {
        self.listeners
            .find(source, event_type, event)
            .map(|(index, l)| Route {
                listener: l.name.clone(),
                index,
            })
    }

    async fn handle(&self, ev: AuthorizedEvent) -> Result<Ack, HandlerError> {
        let listener = self
            .listeners
            .listeners
            .get(ev.route.index)
            .ok_or(HandlerError::MalformedEvent("route"))?;
        let has_lazy = listener.lazy.is_some();
        let payload = has_lazy.then(|| ev.event.clone());
        let tenant_key = ev.tenant.key().clone();
        let cx = Context::new(
            ev.tenant,
            self.slack.bind(ev.bot_token),
            self.slack.clone(),
            Arc::clone(&self.store),
            AUDIT_ACTOR,
            ev.route.listener.clone(),
            ev.request_id.clone(),
            ev.event.clone(),
        );
        let ack = (listener.ack)(cx, ev.event)
            .await
            .map_err(HandlerError::Other)?;
        if let Some(payload) = payload {
            // The listener has answered: a queue failure must not take that
            // answer away (the user would see Slack's timeout error instead
            // of the ack), so it travels with the error and is still sent.
            let Some(queue) = self.lazy.as_ref() else {
                return Err(HandlerError::LazyNotQueued {
                    ack,
                    source: "no lazy queue is configured".into(),
                });
            };
            let job = crate::lazy::LazyJob {
                tenant: tenant_key.pk(),
                listener: ev.route.listener,
                index: ev.route.index,
                request_id: ev.request_id,
                payload,
            };
            if let Err(e) = queue.enqueue(job).await {
                return Err(HandlerError::LazyNotQueued {
                    ack,
                    source: Box::new(e),
                });
            }
        }
        Ok(ack)
    }
}
