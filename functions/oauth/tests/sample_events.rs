//! The sample events in `events/` (what `cargo lambda invoke` and
//! `sam local invoke` send) parse as API Gateway HTTP API v2 requests and
//! drive the router to a sensible answer.

mod common;

use axum::body::Body;
use common::*;
use http::{StatusCode, header};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::request::LambdaRequest;
use tokenkeep_oauth::STATE_COOKIE;
use tokenkeep_slack_api::fake::InstallSpec;
use tower::ServiceExt as _;

fn sample(name: &str) -> String {
    let path = format!("{}/../../events/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Parses a sample the way the runtime does and turns it into the request the router sees.
fn to_request(json: &str) -> (ApiGatewayV2httpRequest, http::Request<Body>) {
    let event: ApiGatewayV2httpRequest = serde_json::from_str(json).unwrap();
    let parsed: LambdaRequest = serde_json::from_str(json).unwrap();
    assert!(
        matches!(parsed, LambdaRequest::ApiGatewayV2(_)),
        "payload format 2.0"
    );
    let req: http::Request<lambda_http::Body> = parsed.into();
    let (parts, body) = req.into_parts();
    (
        event,
        http::Request::from_parts(parts, Body::from(body.to_vec())),
    )
}

#[tokio::test]
async fn install_sample_redirects_to_slack() {
    // Given the install sample
    let (event, req) = to_request(&sample("oauth-install.json"));
    assert_eq!(event.raw_path.as_deref(), Some("/slack/install"));
    let h = harness(Backend::Embedded).await;
    // When it is driven through the router
    let resp = h.router.clone().oneshot(req).await.unwrap();
    // Then the browser is sent to Slack with a state cookie
    assert_eq!(resp.status(), StatusCode::FOUND);
    assert!(
        resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with(AUTHORIZE_URL)
    );
    assert!(
        resp.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with(STATE_COOKIE)
    );
}

#[tokio::test]
async fn redirect_sample_completes_an_install_once() {
    // Given the redirect sample, its state issued and its code redeemable at Slack
    let json = sample("oauth-redirect.json");
    let (event, req) = to_request(&json);
    let query = event.query_string_parameters.clone();
    let (state, code) = (
        query.first("state").unwrap().to_owned(),
        query.first("code").unwrap().to_owned(),
    );
    assert_eq!(
        event.cookies.as_deref(),
        Some(&[format!("{STATE_COOKIE}={state}")][..])
    );
    assert_eq!(
        req.headers()[header::COOKIE].to_str().unwrap(),
        format!("{STATE_COOKIE}={state}")
    );
    let h = harness(Backend::Embedded).await;
    h.store
        .repository()
        .put_state(&state, h.store.clock().now_secs() + 600)
        .await
        .unwrap();
    h.slack
        .add_install(&code, full_spec(InstallSpec::workspace("T1")));
    // When it is driven through the router
    let resp = h.router.clone().oneshot(req).await.unwrap();
    // Then the install completes
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(h.slack.counters().exchanges, 1);
    assert!(
        h.store
            .fetch_bot(&team_tenant("T1"))
            .await
            .unwrap()
            .is_some()
    );
    // And the same event replayed is refused
    let (_, replay) = to_request(&json);
    let resp = h.router.clone().oneshot(replay).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}
