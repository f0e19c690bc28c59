//! Install hooks: `on_installed` runs after the installation is stored, with a
//! client bound to the new bot token; a failing or panicking hook never loses
//! the installation nor turns the page into a failure; `on_install_failed`
//! hears about every failed install.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use http::StatusCode;
use tokenkeep_oauth::{HookError, InstallHooks, Installed, OAuthError, router_with_hooks};
use tokenkeep_slack_api::fake::InstallSpec;

#[derive(Debug, Default)]
struct Hooks {
    mode: usize, // 0: DM the installer, 1: fail, 2: panic
    installed: AtomicUsize,
    failed: AtomicUsize,
}

#[async_trait::async_trait]
impl InstallHooks for Hooks {
    async fn on_installed(&self, installed: Installed) -> Result<(), HookError> {
        self.installed.fetch_add(1, Ordering::SeqCst);
        match self.mode {
            0 => {
                let client = installed.client.ok_or("no bot client")?;
                let user = installed.installer_user_id.ok_or("no installer")?;
                client
                    .chat_post_message(&user, &tokenkeep_slack_api::Message::text("welcome"))
                    .await?;
                Ok(())
            }
            1 => Err("hook failed".into()),
            _ => panic!("hook panicked"),
        }
    }

    async fn on_install_failed(&self, _reason: &OAuthError, _request_id: &str) {
        self.failed.fetch_add(1, Ordering::SeqCst);
    }
}

async fn with_hooks(mode: usize) -> (Harness, Arc<Hooks>) {
    let mut h = harness(Backend::Embedded).await;
    let hooks = Arc::new(Hooks {
        mode,
        ..Hooks::default()
    });
    h.router = router_with_hooks(h.state.clone(), Some(hooks.clone()));
    (h, hooks)
}

#[tokio::test]
async fn on_installed_runs_after_the_install_with_the_new_bot_token() {
    // Given hooks that DM the installer
    let (h, hooks) = with_hooks(0).await;
    // When T1 installs
    h.install(
        "c1",
        InstallSpec {
            user_id: "UINST".into(),
            ..InstallSpec::workspace("T1")
        },
    )
    .await;
    // Then the installation is stored and the DM went out with T1's bot token
    assert!(!h.records().await.is_empty());
    assert_eq!(hooks.installed.load(Ordering::SeqCst), 1);
    let dm = h
        .slack
        .posts()
        .into_iter()
        .find(|p| p.channel == "UINST")
        .expect("welcome DM");
    assert_eq!(dm.team_id, "T1");
}

#[tokio::test]
async fn a_failing_or_panicking_hook_keeps_the_installation() {
    for mode in [1, 2] {
        // Given a hook that fails (1) or panics (2)
        let (h, hooks) = with_hooks(mode).await;
        // When T1 installs, then the page still says installed (install asserts 200)
        let body = h.install("c1", InstallSpec::workspace("T1")).await;
        assert!(body.contains("Installation complete"), "{body}");
        // And by default the page sends the browser into the app in Slack
        assert!(body.contains(r#"http-equiv="refresh" content="0; url=https:&#x2f;&#x2f;slack.com&#x2f;app_redirect?app=A0001&amp;team=T1""#), "{body}");
        // And the installation is stored
        assert_eq!(hooks.installed.load(Ordering::SeqCst), 1);
        assert!(
            !h.records().await.is_empty(),
            "mode {mode}: installation kept"
        );
    }
}

#[tokio::test]
async fn on_install_failed_hears_of_a_failed_install() {
    // Given hooks, when the redirect comes back with an unknown state and no cookie
    let (h, hooks) = with_hooks(0).await;
    let (status, _, _) = h.redirect("code=c1&state=nope", None).await;
    // Then the install fails and the hook heard of it; nothing was installed
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(hooks.failed.load(Ordering::SeqCst), 1);
    assert_eq!(hooks.installed.load(Ordering::SeqCst), 0);
    h.assert_nothing_stored().await;
}
