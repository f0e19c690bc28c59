//! The Web API methods app listeners call, on a client bound to one token.
//!
//! A [`BoundClient`] pairs the shared [`SlackClient`] with one tenant's token,
//! so listener code never holds a token: it cannot log one, pass one to the
//! wrong call, or mix two tenants' tokens up. The token has no accessor here.
//!
//! Rate limits: every method goes through the client's 429 rule (one retry
//! when Slack asks for a wait no longer than the client's maximum; see
//! [`crate::client`]). A 429 means Slack did not act, so the retry cannot post
//! twice; timeouts and 5xx are never retried.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::{Payload, SlackClient};
use crate::error::SlackError;
use crate::secrets::AccessToken;

/// Message content: text (the notification and accessibility fallback) and
/// optional Block Kit blocks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub text: String,
    pub blocks: Option<Value>,
    pub thread_ts: Option<String>,
}

impl Message {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            ..Self::default()
        }
    }
    /// Block Kit blocks (a JSON array); `text` stays the fallback.
    pub fn blocks(mut self, blocks: Value) -> Self {
        self.blocks = Some(blocks);
        self
    }
    /// Posts as a reply in the thread of `ts`.
    pub fn in_thread(mut self, ts: impl Into<String>) -> Self {
        self.thread_ts = Some(ts.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut body = json!({ "text": self.text });
        if let Some(blocks) = &self.blocks {
            body["blocks"] = blocks.clone();
        }
        if let Some(ts) = &self.thread_ts {
            body["thread_ts"] = Value::from(ts.as_str());
        }
        body
    }
}

/// Where a posted message lives (what `chat.update` needs).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MessageRef {
    pub channel: String,
    pub ts: String,
}

/// The view Slack opened or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewRef {
    pub id: String,
    pub hash: Option<String>,
}

#[derive(Deserialize)]
struct ViewAnswer {
    view: ViewFields,
}

#[derive(Deserialize)]
struct ViewFields {
    id: String,
    hash: Option<String>,
}

impl From<ViewAnswer> for ViewRef {
    fn from(a: ViewAnswer) -> Self {
        Self {
            id: a.view.id,
            hash: a.view.hash,
        }
    }
}

/// What a `response_url` post says (`replace_original`, `response_type`…).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub message: Message,
    /// Replace the message the interaction came from.
    pub replace_original: bool,
    /// Show to the whole channel (`in_channel`) instead of only the user.
    pub in_channel: bool,
}

impl Response {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            message: Message::text(text),
            ..Self::default()
        }
    }
    pub fn replacing_original(mut self) -> Self {
        self.replace_original = true;
        self
    }
    pub fn in_channel(mut self) -> Self {
        self.in_channel = true;
        self
    }

    fn to_json(&self) -> Value {
        let mut body = self.message.to_json();
        if self.replace_original {
            body["replace_original"] = Value::Bool(true);
        }
        if self.in_channel {
            body["response_type"] = Value::from("in_channel");
        }
        body
    }
}

impl SlackClient {
    /// This client, bound to `token`: what a listener gets.
    pub fn bind(&self, token: AccessToken) -> BoundClient {
        BoundClient {
            client: self.clone(),
            token,
        }
    }

    /// Posts to a `response_url` (no token: the URL is the credential).
    pub async fn respond(&self, response_url: &str, response: &Response) -> Result<(), SlackError> {
        self.post_response_url(response_url, &response.to_json())
            .await
    }
}

/// A Slack client bound to one installation's token. Debug shows the token's
/// fingerprint at most.
#[derive(Clone)]
pub struct BoundClient {
    client: SlackClient,
    token: AccessToken,
}

impl std::fmt::Debug for BoundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundClient")
            .field("token", &self.token.fingerprint())
            .finish_non_exhaustive()
    }
}

impl BoundClient {
    /// The fingerprint of the bound token (for logs and tests; never the token).
    pub fn token_fingerprint(&self) -> String {
        self.token.fingerprint()
    }

    /// `chat.postMessage`.
    pub async fn chat_post_message(
        &self,
        channel: &str,
        message: &Message,
    ) -> Result<MessageRef, SlackError> {
        let mut body = message.to_json();
        body["channel"] = Value::from(channel);
        self.call("chat.postMessage", &body).await
    }

    /// `chat.update`: replaces the text (and blocks) of the message at `ts`.
    pub async fn chat_update(
        &self,
        channel: &str,
        ts: &str,
        message: &Message,
    ) -> Result<MessageRef, SlackError> {
        let mut body = message.to_json();
        body["channel"] = Value::from(channel);
        body["ts"] = Value::from(ts);
        self.call("chat.update", &body).await
    }

    /// `chat.postEphemeral`: a message only `user` sees.
    pub async fn chat_post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        message: &Message,
    ) -> Result<(), SlackError> {
        let mut body = message.to_json();
        body["channel"] = Value::from(channel);
        body["user"] = Value::from(user);
        self.call::<serde::de::IgnoredAny>("chat.postEphemeral", &body)
            .await
            .map(drop)
    }

    /// `views.open` with the `trigger_id` of an interaction (valid 3 s).
    pub async fn views_open(&self, trigger_id: &str, view: &Value) -> Result<ViewRef, SlackError> {
        let body = json!({ "trigger_id": trigger_id, "view": view });
        self.call::<ViewAnswer>("views.open", &body)
            .await
            .map(ViewRef::from)
    }

    /// `views.push`: a new view on top of the open stack.
    pub async fn views_push(&self, trigger_id: &str, view: &Value) -> Result<ViewRef, SlackError> {
        let body = json!({ "trigger_id": trigger_id, "view": view });
        self.call::<ViewAnswer>("views.push", &body)
            .await
            .map(ViewRef::from)
    }

    /// `views.update`; with `hash`, Slack refuses if the view changed meanwhile.
    pub async fn views_update(
        &self,
        view_id: &str,
        hash: Option<&str>,
        view: &Value,
    ) -> Result<ViewRef, SlackError> {
        let mut body = json!({ "view_id": view_id, "view": view });
        if let Some(hash) = hash {
            body["hash"] = Value::from(hash);
        }
        self.call::<ViewAnswer>("views.update", &body)
            .await
            .map(ViewRef::from)
    }

    /// Any other Web API method with a JSON body, for what this client lacks.
    pub async fn call_raw(&self, method: &'static str, body: &Value) -> Result<Value, SlackError> {
        self.call(method, body).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &'static str,
        body: &Value,
    ) -> Result<T, SlackError> {
        self.client
            .call_retrying(method, &self.token, Payload::Json(body))
            .await
    }
}
