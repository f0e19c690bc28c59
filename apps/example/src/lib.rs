//! An example app on tokenkeep, using only `tokenkeep_app` as an app in its
//! own repository would. `tokenkeep dev` runs it by default.
//!
//! - `app_mention`: answered in the thread with `chat.postMessage`.
//! - `/tk-echo TEXT`: acks with the text (only the caller sees it).
//! - `/tk-approve`: acks with a message holding an Approve button; the
//!   button's action (`tk_approve`) replaces that message through `response_url`.
//! - `/tk-feedback`: opens a modal (`views.open`); its submission
//!   (`tk_feedback`) is refused with a field error unless the email has an `@`.
//! - `/tk-report`: acks "Working on it…" at once; its lazy part takes
//!   [`REPORT_SECS`] (past Slack's 3 s) on the worker, then answers through
//!   the command's `response_url`.
//! - On install: a welcome DM to the installer.

use std::sync::Arc;

use tokenkeep_app::inputs::{BlockActions, MessageEvent, SlashCommand, ViewPayload};
use tokenkeep_app::{
    CommandAck, Context, HookError, InstallHooks, InstallPages, Installed, ListenerError,
    Listeners, Message, Page, Response, ViewAck, async_trait, json,
};

/// How long the lazy report "works".
pub const REPORT_SECS: u64 = 5;

pub const WELCOME: &str =
    "Thanks for installing the tokenkeep example app. Mention me, or try /tk-echo.";

/// Every listener of the app, in match order.
pub fn listeners() -> Listeners {
    Listeners::new()
        .event("app_mention", mention)
        .command("/tk-echo", echo)
        .command("/tk-approve", approve_prompt)
        .action("tk_approve", approve)
        .command("/tk-feedback", open_feedback)
        .view_submission("tk_feedback", submit_feedback)
        .command("/tk-report", |_cx, _cmd| async move {
            Ok(CommandAck::text("Working on it…"))
        })
        .lazy(report)
}

/// The lazy part of `/tk-report`: runs on the worker, with the same command.
async fn report(cx: Context, payload: tokenkeep_app::Value) -> Result<(), ListenerError> {
    let cmd: SlashCommand = serde_json::from_value(payload)?;
    tokio::time::sleep(std::time::Duration::from_secs(REPORT_SECS)).await;
    cx.respond(&cmd.response_url, &Response::text("Your report is ready."))
        .await?;
    Ok(())
}

/// The install hooks of the app.
pub fn hooks() -> Arc<dyn InstallHooks> {
    Arc::new(Welcome)
}

/// Only Slack ids are echoed into mrkdwn, so no event can inject a mention.
fn slack_id(id: Option<&str>) -> Option<&str> {
    id.filter(|u| {
        !u.is_empty()
            && u.len() <= 32
            && u.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

async fn mention(cx: Context, ev: MessageEvent) -> Result<(), ListenerError> {
    // A bot mentioning us (possibly ourselves) gets no answer: no reply loops.
    if ev.bot_id.is_some() {
        return Ok(());
    }
    let text = match slack_id(ev.user.as_deref()) {
        Some(user) => format!("Hi <@{user}>, tokenkeep heard you."),
        None => "Hi, tokenkeep heard you.".to_owned(),
    };
    cx.client()
        .chat_post_message(
            &ev.channel,
            &Message::text(text).in_thread(ev.reply_thread()),
        )
        .await?;
    Ok(())
}

async fn echo(_cx: Context, cmd: SlashCommand) -> Result<CommandAck, ListenerError> {
    Ok(if cmd.text.trim().is_empty() {
        CommandAck::text("Usage: /tk-echo TEXT")
    } else {
        CommandAck::text(format!("You said: {}", cmd.text.trim()))
    })
}

async fn approve_prompt(_cx: Context, _cmd: SlashCommand) -> Result<CommandAck, ListenerError> {
    let blocks = json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": "Approve this request?"}},
        {"type": "actions", "elements": [
            {"type": "button", "action_id": "tk_approve", "text": {"type": "plain_text", "text": "Approve"}, "value": "yes"}
        ]}
    ]);
    Ok(CommandAck::blocks("Approve this request?", blocks))
}

async fn approve(cx: Context, actions: BlockActions) -> Result<(), ListenerError> {
    let Some(url) = actions.response_url.as_deref() else {
        return Err("block_actions without a response_url".into());
    };
    let by = slack_id(Some(&actions.user.id))
        .map_or_else(|| "someone".to_owned(), |u| format!("<@{u}>"));
    cx.respond(
        url,
        &Response::text(format!("Approved by {by}.")).replacing_original(),
    )
    .await?;
    Ok(())
}

async fn open_feedback(cx: Context, cmd: SlashCommand) -> Result<CommandAck, ListenerError> {
    let view = json!({
        "type": "modal",
        "callback_id": "tk_feedback",
        "title": {"type": "plain_text", "text": "Feedback"},
        "submit": {"type": "plain_text", "text": "Send"},
        "blocks": [{
            "type": "input", "block_id": "email",
            "label": {"type": "plain_text", "text": "Your email"},
            "element": {"type": "plain_text_input", "action_id": "value"}
        }]
    });
    cx.client().views_open(&cmd.trigger_id, &view).await?;
    Ok(CommandAck::empty())
}

async fn submit_feedback(_cx: Context, submission: ViewPayload) -> Result<ViewAck, ListenerError> {
    match submission.view.value("email", "value") {
        Some(email) if email.contains('@') => Ok(ViewAck::close()),
        _ => Ok(ViewAck::errors([(
            "email",
            "Please enter an email address.",
        )])),
    }
}

#[derive(Debug)]
struct Welcome;

#[async_trait]
impl InstallHooks for Welcome {
    async fn on_installed(&self, installed: Installed) -> Result<(), HookError> {
        let (Some(client), Some(user)) = (&installed.client, &installed.installer_user_id) else {
            return Ok(());
        };
        // A DM: posting to a user id opens the app's conversation with them.
        client
            .chat_post_message(user, &Message::text(WELCOME))
            .await?;
        Ok(())
    }

    /// The app's own success page; the cancelled and failure pages stay tokenkeep's.
    fn pages(&self) -> Option<InstallPages> {
        let page = include_str!("../templates/installed.html");
        match InstallPages::default().with_page(Page::Success, page) {
            Ok(pages) => Some(pages),
            Err(e) => {
                tracing::error!(error = %e, "the app's install page does not parse; using tokenkeep's");
                None
            }
        }
    }
}
