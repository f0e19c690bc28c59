//! The HTML pages of the install flow. Only static text and validated values
//! (Slack ids, our request id) reach them.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{self, HeaderValue};
use tokenkeep_installations::TenantKey;

use crate::OAuthError;

/// A small HTML page. Only static text and validated values reach `body_html`.
pub(crate) fn page(status: StatusCode, request_id: &str, title: &str, body_html: &str) -> Response {
    page_with_head(status, request_id, title, "", body_html)
}

/// The success page: as Bolt does, it sends the browser straight into the
/// app in Slack (`link` is built from validated ids, already HTML-escaped),
/// with the link as a fallback.
pub(crate) fn success_page(request_id: &str, link: &str) -> Response {
    let head = format!("<meta http-equiv=\"refresh\" content=\"0; url={link}\">");
    let body = format!("<p>The app was installed.</p><p><a href=\"{link}\">Open Slack</a></p>");
    page_with_head(
        StatusCode::OK,
        request_id,
        "Installation complete",
        &head,
        &body,
    )
}

fn page_with_head(
    status: StatusCode,
    request_id: &str,
    title: &str,
    head: &str,
    body_html: &str,
) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{head}<title>{title}</title></head>\
         <body><h1>{title}</h1>{body_html}<p><small>Request id: {request_id}</small></p></body></html>"
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page's URL carries the code and state: keep it out of caches and Referer headers.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-request-id", v);
    }
    resp
}

pub(crate) fn failure_page(e: &OAuthError, request_id: &str) -> Response {
    let status = e.status();
    if status.is_server_error() {
        tracing::error!(request_id, error = %e, "oauth install failed");
    } else {
        tracing::warn!(request_id, error = %e, "oauth install refused");
    }
    page(
        status,
        request_id,
        "Installation failed",
        "<p>The app could not be installed. Please start the installation again.</p>",
    )
}

/// install, the org's app management page for an org-wide one (where the admin
/// picks workspaces). Ids are Slack-validated (`TenantKey`) or checked here,
/// so nothing user-controlled reaches the HTML.
/// Where the success page sends the user: the app in Slack for a workspace
pub(crate) fn slack_link(tenant: &TenantKey, app_id: Option<&str>) -> String {
    let app_id = app_id.filter(|a| {
        !a.is_empty()
            && a.len() <= 32
            && a.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    match (app_id, tenant.team_id(), tenant.enterprise_id()) {
        (Some(app), Some(team), _) => {
            format!("https://slack.com/app_redirect?app={app}&amp;team={team}")
        }
        (Some(app), None, Some(enterprise)) => {
            format!(
                "https://app.slack.com/manage/{enterprise}/integrations/profile/{app}/workspaces/add"
            )
        }
        _ => "slack://open".to_owned(),
    }
}
