//! What a listener answers within Slack's 3 s, by the kind of request.
//!
//! Each listener kind returns the ack type Slack accepts for it, so a listener
//! cannot send, say, `response_action: errors` to a slash command:
//! events, actions, shortcuts and `view_closed` ack with an empty 200;
//! a slash command with [`CommandAck`]; `block_suggestion` with [`OptionsAck`];
//! `view_submission` with [`ViewAck`].

use serde_json::{Value, json};

/// The HTTP answer to Slack: an empty 200, or a 200 with a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Empty,
    Json(Value),
}

impl From<()> for Ack {
    fn from((): ()) -> Self {
        Ack::Empty
    }
}

/// A slash command's immediate answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandAck(Option<Value>);

impl CommandAck {
    /// Nothing visible (the command is acknowledged silently).
    pub fn empty() -> Self {
        Self(None)
    }
    /// Text only the invoking user sees (Slack's default `ephemeral`).
    pub fn text(text: impl Into<String>) -> Self {
        Self(Some(json!({ "text": text.into() })))
    }
    /// Text everyone in the channel sees, with the command echoed.
    pub fn in_channel(text: impl Into<String>) -> Self {
        Self(Some(
            json!({ "response_type": "in_channel", "text": text.into() }),
        ))
    }
    /// Block Kit blocks, with `text` as the fallback.
    pub fn blocks(text: impl Into<String>, blocks: Value) -> Self {
        Self(Some(json!({ "text": text.into(), "blocks": blocks })))
    }
}

impl From<CommandAck> for Ack {
    fn from(a: CommandAck) -> Self {
        a.0.map_or(Ack::Empty, Ack::Json)
    }
}

/// The options a `block_suggestion` (external select) offers.
#[derive(Debug, Clone, PartialEq)]
pub struct OptionsAck(Vec<(String, String)>);

impl OptionsAck {
    /// `(text, value)` pairs, in display order (Slack shows at most 100).
    pub fn options<T: Into<String>, V: Into<String>>(
        items: impl IntoIterator<Item = (T, V)>,
    ) -> Self {
        Self(
            items
                .into_iter()
                .map(|(t, v)| (t.into(), v.into()))
                .collect(),
        )
    }
}

impl From<OptionsAck> for Ack {
    fn from(a: OptionsAck) -> Self {
        let options: Vec<Value> = a
            .0
            .into_iter()
            .take(100)
            .map(|(text, value)| json!({ "text": { "type": "plain_text", "text": text }, "value": value }))
            .collect();
        Ack::Json(json!({ "options": options }))
    }
}

/// A `view_submission`'s answer: close the modal, or keep it open with errors,
/// or replace / push / clear views.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewAck(Option<Value>);

impl ViewAck {
    /// Closes this view (the empty 200).
    pub fn close() -> Self {
        Self(None)
    }
    /// Keeps the modal open and shows `message` under each block id.
    pub fn errors<B: Into<String>, M: Into<String>>(
        errors: impl IntoIterator<Item = (B, M)>,
    ) -> Self {
        let errors: serde_json::Map<String, Value> = errors
            .into_iter()
            .map(|(b, m)| (b.into(), Value::String(m.into())))
            .collect();
        Self(Some(
            json!({ "response_action": "errors", "errors": errors }),
        ))
    }
    /// Replaces this view with `view`.
    pub fn update(view: Value) -> Self {
        Self(Some(json!({ "response_action": "update", "view": view })))
    }
    /// Pushes `view` on top of this one.
    pub fn push(view: Value) -> Self {
        Self(Some(json!({ "response_action": "push", "view": view })))
    }
    /// Closes every view of the stack.
    pub fn clear() -> Self {
        Self(Some(json!({ "response_action": "clear" })))
    }
}

impl From<ViewAck> for Ack {
    fn from(a: ViewAck) -> Self {
        a.0.map_or(Ack::Empty, Ack::Json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_ack_has_the_shape_slack_expects() {
        assert_eq!(Ack::from(CommandAck::empty()), Ack::Empty);
        assert_eq!(
            Ack::from(CommandAck::text("hi")),
            Ack::Json(json!({"text": "hi"}))
        );
        assert_eq!(
            Ack::from(CommandAck::in_channel("hi")),
            Ack::Json(json!({"response_type": "in_channel", "text": "hi"}))
        );
        assert_eq!(
            Ack::from(ViewAck::errors([("email", "not an address")])),
            Ack::Json(json!({"response_action": "errors", "errors": {"email": "not an address"}}))
        );
        assert_eq!(Ack::from(ViewAck::close()), Ack::Empty);
        assert_eq!(
            Ack::from(ViewAck::clear()),
            Ack::Json(json!({"response_action": "clear"}))
        );
        let options = Ack::from(OptionsAck::options([("Red", "r")]));
        assert_eq!(
            options,
            Ack::Json(
                json!({"options": [{"text": {"type": "plain_text", "text": "Red"}, "value": "r"}]})
            )
        );
    }
}
