//! Typed inputs for the common request kinds: small serde types holding the
//! fields listeners use. Every field Slack may omit is an `Option` or
//! defaults, unknown fields are ignored, and the whole payload stays reachable
//! as JSON through [`Context::raw`](crate::Context::raw).

use serde::Deserialize;
use serde_json::Value;

/// An id-only object (`{"id": "U1", …}`) as interactivity payloads carry them.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
pub struct Id {
    #[serde(default)]
    pub id: String,
}

/// A `message` or `app_mention` event.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MessageEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub subtype: Option<String>,
    pub channel: String,
    pub user: Option<String>,
    pub text: Option<String>,
    pub ts: String,
    pub thread_ts: Option<String>,
    /// Set when a bot (possibly this app) wrote the message.
    pub bot_id: Option<String>,
}

impl MessageEvent {
    /// The thread to answer in: the message's thread, else the message itself.
    pub fn reply_thread(&self) -> &str {
        self.thread_ts.as_deref().unwrap_or(&self.ts)
    }
}

/// A slash command's form fields.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SlashCommand {
    pub command: String,
    pub text: String,
    pub user_id: String,
    pub channel_id: String,
    pub response_url: String,
    pub trigger_id: String,
}

/// One element of a `block_actions` payload's `actions`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Action {
    pub action_id: String,
    pub block_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Option<String>,
    pub selected_option: Option<Value>,
}

/// Where an interaction's message lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    #[serde(rename = "type")]
    pub kind: String,
    pub message_ts: Option<String>,
    pub channel_id: Option<String>,
    pub view_id: Option<String>,
}

/// A `block_actions` payload; `action` is the element whose `action_id` matched.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BlockActions {
    pub user: Id,
    pub channel: Option<Id>,
    pub container: Container,
    pub trigger_id: String,
    pub response_url: Option<String>,
    pub actions: Vec<Action>,
    /// Filled in by the dispatcher: the action this listener matched.
    #[serde(skip)]
    pub action: Action,
}

/// A global (`shortcut`) or message (`message_action`) shortcut.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Shortcut {
    #[serde(rename = "type")]
    pub kind: String,
    pub callback_id: String,
    pub trigger_id: String,
    pub user: Id,
    pub channel: Option<Id>,
    pub message: Option<Value>,
    pub response_url: Option<String>,
}

/// The view in a `view_submission` / `view_closed` payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct View {
    pub id: String,
    pub callback_id: String,
    pub hash: Option<String>,
    pub private_metadata: String,
    /// `state.values`: `{block_id: {action_id: {type, value, …}}}`.
    pub state: ViewState,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ViewState {
    pub values: Value,
}

impl View {
    /// The plain value the user entered in `block_id` / `action_id`, if any.
    pub fn value(&self, block_id: &str, action_id: &str) -> Option<&str> {
        self.state
            .values
            .get(block_id)?
            .get(action_id)?
            .get("value")?
            .as_str()
    }
}

/// A `view_submission` or `view_closed` payload.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ViewPayload {
    pub user: Id,
    pub view: View,
}

/// A `block_suggestion` payload (an external select asking for options).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BlockSuggestion {
    pub action_id: String,
    pub block_id: String,
    /// What the user has typed so far.
    pub value: String,
    pub user: Id,
}
