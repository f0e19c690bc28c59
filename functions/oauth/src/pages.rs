//! The HTML pages of the install flow: [`InstallPages`], minijinja templates
//! with HTML auto-escaping. tokenkeep's own are in `functions/oauth/templates/`;
//! an app replaces any of them ([`InstallPages::with_page`]) through
//! [`InstallHooks::pages`](crate::InstallHooks::pages). Only validated values
//! (Slack ids, our request id) reach a page, and escaping covers the rest.
//! The security headers every page carries are the router's (see `lib.rs`).

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use minijinja::{AutoEscape, Environment};
use tokenkeep_installations::TenantKey;

use crate::OAuthError;

/// One page of the install flow, and what its template can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The install was stored. `request_id`, `slack_link` (where the app
    /// lives in Slack; tokenkeep's page redirects there at once, as Bolt
    /// does), `app_id`, `team_id`, `enterprise_id` (absent when unknown).
    Success,
    /// The user cancelled on Slack's page. `request_id`.
    Cancelled,
    /// Any failure, always the same page (the cause is only logged). `request_id`.
    Failure,
}

impl Page {
    fn template(self) -> &'static str {
        match self {
            Page::Success => "success.html",
            Page::Cancelled => "cancelled.html",
            Page::Failure => "failure.html",
        }
    }
}

/// A template that did not parse (names the page and minijinja's reason).
#[derive(Debug, thiserror::Error)]
#[error("install page template {page:?} is invalid: {source}")]
pub struct PageError {
    page: Page,
    #[source]
    source: minijinja::Error,
}

/// The install flow's pages. `Default` is tokenkeep's own; templates may
/// `{% extends "base.html" %}` (the default layout) or stand alone.
#[derive(Clone)]
pub struct InstallPages {
    env: Arc<Environment<'static>>,
}

impl std::fmt::Debug for InstallPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallPages").finish_non_exhaustive()
    }
}

impl Default for InstallPages {
    fn default() -> Self {
        let mut env = Environment::new();
        // Every page is HTML, whatever the app names its templates.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for (name, source) in [
            ("base.html", include_str!("../templates/base.html")),
            ("success.html", include_str!("../templates/success.html")),
            (
                "cancelled.html",
                include_str!("../templates/cancelled.html"),
            ),
            ("failure.html", include_str!("../templates/failure.html")),
        ] {
            // Bundled and covered by `bundled_pages_render`: a parse error
            // here is a build defect, not something a deployment can cause.
            #[allow(clippy::expect_used)]
            env.add_template(name, source)
                .expect("bundled install page templates parse");
        }
        Self { env: Arc::new(env) }
    }
}

impl InstallPages {
    /// These pages with `page` replaced by `source` (a minijinja template).
    /// A template that does not parse is an error here, at startup, never
    /// on a user's install.
    pub fn with_page(mut self, page: Page, source: impl Into<String>) -> Result<Self, PageError> {
        let env = Arc::make_mut(&mut self.env);
        env.add_template_owned(page.template(), source.into())
            .map_err(|source| PageError { page, source })?;
        Ok(self)
    }

    fn render(&self, page: Page, status: StatusCode, ctx: minijinja::Value) -> Response {
        let html = self
            .env
            .get_template(page.template())
            .and_then(|t| t.render(ctx));
        let (status, html) = match html {
            Ok(html) => (status, html),
            Err(e) => {
                // An app template that fails at render time (an undefined
                // filter, say): the user still gets an answer, the log says why.
                tracing::error!(page = ?page, error = %e, "install page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!doctype html><title>Error</title><p>Something went wrong.</p>".to_owned(),
                )
            }
        };
        let mut resp = (status, html).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        resp
    }

    pub(crate) fn success(
        &self,
        request_id: &str,
        tenant: &TenantKey,
        app_id: Option<&str>,
    ) -> Response {
        let ctx = minijinja::context! {
            request_id,
            slack_link => slack_link(tenant, app_id),
            app_id => absent_if_none(valid_app_id(app_id)),
            team_id => absent_if_none(tenant.team_id()),
            enterprise_id => absent_if_none(tenant.enterprise_id()),
        };
        self.render(Page::Success, StatusCode::OK, ctx)
    }

    pub(crate) fn cancelled(&self, request_id: &str) -> Response {
        self.render(
            Page::Cancelled,
            StatusCode::OK,
            minijinja::context! { request_id },
        )
    }

    pub(crate) fn failure(&self, e: &OAuthError, request_id: &str) -> Response {
        let status = e.status();
        if status.is_server_error() {
            tracing::error!(request_id, error = %e, "oauth install failed");
        } else {
            tracing::warn!(request_id, error = %e, "oauth install refused");
        }
        self.render(Page::Failure, status, minijinja::context! { request_id })
    }
}

/// A missing id is undefined in the template (prints nothing, false in an
/// `{% if %}`), not the word "None".
fn absent_if_none(v: Option<&str>) -> minijinja::Value {
    v.map_or(minijinja::Value::UNDEFINED, minijinja::Value::from)
}

/// An app id as Slack issues them (`A0123ABCD`), or nothing.
fn valid_app_id(app_id: Option<&str>) -> Option<&str> {
    app_id.filter(|a| {
        !a.is_empty()
            && a.len() <= 32
            && a.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

/// Where the success page sends the user: the app in Slack for a workspace
/// install, the org's app management page for an org-wide one (where the admin
/// picks workspaces). Ids are Slack-validated (`TenantKey`) or checked here,
/// so nothing user-controlled reaches the URL; the template escapes it.
pub(crate) fn slack_link(tenant: &TenantKey, app_id: Option<&str>) -> String {
    match (
        valid_app_id(app_id),
        tenant.team_id(),
        tenant.enterprise_id(),
    ) {
        (Some(app), Some(team), _) => {
            format!("https://slack.com/app_redirect?app={app}&team={team}")
        }
        (Some(app), None, Some(enterprise)) => {
            format!(
                "https://app.slack.com/manage/{enterprise}/integrations/profile/{app}/workspaces/add"
            )
        }
        _ => "slack://open".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(resp: Response) -> (StatusCode, String) {
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn bundled_pages_render() {
        // Given tokenkeep's own pages
        let pages = InstallPages::default();
        let team = TenantKey::new(None, Some("T1")).unwrap();
        // When each is rendered
        let (status, success) = text(pages.success("req-1", &team, Some("A1"))).await;
        let (_, cancelled) = text(pages.cancelled("req-2")).await;
        let (failed, failure) = text(pages.failure(&OAuthError::CookieMissing, "req-3")).await;
        // Then each has its text and request id, and the link is HTML-escaped
        // (`&` and `/` as entities, which the browser reads back as the URL)
        assert_eq!(status, StatusCode::OK);
        assert!(
            success.contains("<title>Installation complete</title>"),
            "{success}"
        );
        assert!(
            success
                .contains("url=https:&#x2f;&#x2f;slack.com&#x2f;app_redirect?app=A1&amp;team=T1"),
            "{success}"
        );
        assert!(success.contains("Request id: req-1"));
        assert!(cancelled.contains("nothing was installed") && cancelled.contains("req-2"));
        assert_eq!(failed, OAuthError::CookieMissing.status());
        assert!(failure.contains("<h1>Installation failed</h1>") && failure.contains("req-3"));
    }

    #[tokio::test]
    async fn an_app_replaces_a_page_and_values_stay_escaped() {
        // Given an app's own success page that prints every value it gets
        let pages = InstallPages::default()
            .with_page(
                Page::Success,
                "<p>Welcome to {{ team_id }} ({{ app_id }})</p><a href=\"{{ slack_link }}\">go</a>",
            )
            .unwrap();
        let team = TenantKey::new(None, Some("T1")).unwrap();
        // When it is rendered for an app id that is not an app id
        let (_, html) = text(pages.success("r", &team, Some("\"><script>"))).await;
        // Then the app's page is served, the bad id is dropped, the link escaped
        assert_eq!(
            html,
            "<p>Welcome to T1 ()</p><a href=\"slack:&#x2f;&#x2f;open\">go</a>"
        );
        // And the other pages are still tokenkeep's
        let (_, cancelled) = text(pages.cancelled("r")).await;
        assert!(cancelled.contains("Installation cancelled"));
    }

    #[test]
    fn a_template_that_does_not_parse_is_refused_at_startup() {
        // Given a template with an unclosed block, then with_page says which page
        let err = InstallPages::default()
            .with_page(Page::Failure, "{% block body %}")
            .unwrap_err();
        assert!(err.to_string().contains("Failure"), "{err}");
    }

    #[test]
    fn slack_link_uses_only_validated_ids() {
        let team = TenantKey::new(None, Some("T1")).unwrap();
        let org = TenantKey::new(Some("E1"), None).unwrap();
        assert_eq!(
            slack_link(&team, Some("A1")),
            "https://slack.com/app_redirect?app=A1&team=T1"
        );
        assert_eq!(
            slack_link(&org, Some("A1")),
            "https://app.slack.com/manage/E1/integrations/profile/A1/workspaces/add"
        );
        assert_eq!(slack_link(&team, Some("\"><script>")), "slack://open");
    }
}
