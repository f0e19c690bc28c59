//! Hostile browsers and links on `GET /slack/install` and
//! `GET /slack/oauth_redirect`, beyond `oauth_flow.rs` (which covers a
//! replayed state, a missing cookie, another browser's cookie, an expired
//! state, an invalid code, a Slack outage and oversize/repeated parameters):
//! open-redirect attempts, reflected input, CSRF with a cookie that is empty,
//! misnamed or sent twice, a state replayed concurrently, and failure pages
//! that must carry no secret. Refused requests must not exchange a code,
//! store anything or (for malformed states) even touch the store.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{HeaderMap, Request, StatusCode, header};
use tokenkeep_envelope::testing::{Fault, FaultyKeyProvider};
use tokenkeep_envelope::{KeyProvider, LocalKeyProvider};
use tokenkeep_installations::testing::{
    CountingRepository, FaultyRepository, ManualClock, RepoFault,
};
use tokenkeep_installations::{
    EmbeddedRepository, InstallationStore, Repository as _, StoreConfig,
};
use tokenkeep_oauth::{OAuthState, STATE_COOKIE, router};
use tokenkeep_slack_api::fake::{Failure, FakeSlack, FakeSlackConfig, InstallSpec};
use tower::ServiceExt as _;

const AUTHORIZE_URL: &str = "https://slack.example/oauth/v2/authorize";
const REDIRECT_URI: &str = "https://tokenkeep.example/slack/oauth_redirect";
const EVIL: &str = "evil.example";

struct Harness {
    router: Router,
    raw: Arc<EmbeddedRepository>,
    counting: Arc<CountingRepository>,
    faults: Arc<FaultyRepository>,
    kms: Arc<FaultyKeyProvider<LocalKeyProvider>>,
    slack: FakeSlack,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// Everything a browser gets, as one string to search.
    fn everything(&self) -> String {
        format!("{} {:?} {}", self.status, self.headers, self.body)
    }
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let raw = Arc::new(EmbeddedRepository::in_memory().unwrap());
        let faults = Arc::new(FaultyRepository::new(raw.clone()));
        let counting = Arc::new(CountingRepository::new(faults.clone()));
        let kms = Arc::new(FaultyKeyProvider::new(
            LocalKeyProvider::open(dir.path(), "test").unwrap(),
        ));
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let store = InstallationStore::new(
            counting.clone(),
            kms.clone() as Arc<dyn KeyProvider>,
            StoreConfig::new("1111.2222"),
        )
        .with_clock(Arc::new(ManualClock::at_secs(now)));
        let state = OAuthState {
            store: Arc::new(store),
            slack: Arc::new(slack.client()),
            client_id: FakeSlackConfig::default().client_id,
            scopes: "chat:write,commands".into(),
            user_scopes: "search:read".into(),
            authorize_url: AUTHORIZE_URL.into(),
            redirect_uri: Some(REDIRECT_URI.into()),
            bot_client: None,
        };
        Self {
            router: router(state),
            raw,
            counting,
            faults,
            kms,
            slack,
            _dir: dir,
        }
    }

    async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// `/slack/install` as a browser visits it: (state, cookie pair).
    async fn start(&self) -> (String, String) {
        let r = self.get("/slack/install", &[]).await;
        assert_eq!(r.status, StatusCode::FOUND);
        let cookie = r.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let state = cookie.split_once('=').unwrap().1.to_owned();
        (state, cookie)
    }

    fn spec(team: &str) -> InstallSpec {
        InstallSpec {
            with_user_token: true,
            with_webhook: true,
            user_scopes: "search:read".into(),
            redirect_uri: Some(REDIRECT_URI.into()),
            ..InstallSpec::workspace(team)
        }
    }

    async fn stored_records(&self) -> usize {
        self.raw.scan_records(None, 1000).await.unwrap().0.len()
    }

    fn exchanges(&self) -> u64 {
        self.slack.calls("oauth.v2.access")
    }
}

const OPEN_REDIRECT_PARAMS: &str = "redirect_uri=https%3A%2F%2Fevil.example%2Fcb&next=https%3A%2F%2Fevil.example&return_to=%2F%2Fevil.example&returnTo=https%3A%2F%2Fevil.example&redirect=https%3A%2F%2Fevil.example&url=https%3A%2F%2Fevil.example&continue=https%3A%2F%2Fevil.example&authorize_url=https%3A%2F%2Fevil.example&client_id=EVIL&scope=admin";

/// `/slack/install` sends the browser to the configured authorize URL with
/// our parameters only, whatever the query, Host or forwarding headers say.
#[tokio::test]
async fn install_redirect_target_cannot_be_chosen_by_the_request() {
    let h = Harness::new().await;
    let r = h
        .get(
            &format!("/slack/install?{OPEN_REDIRECT_PARAMS}&state=attacker-chosen"),
            &[
                ("host", EVIL),
                ("x-forwarded-host", EVIL),
                ("x-forwarded-proto", "http"),
                ("referer", "https://evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FOUND);
    let location = r.headers[header::LOCATION].to_str().unwrap();
    let query = location
        .strip_prefix(&format!("{AUTHORIZE_URL}?"))
        .expect("the configured authorize URL");
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap();
    let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        ["client_id", "scope", "user_scope", "state", "redirect_uri"],
        "{location}"
    );
    let get = |k: &str| params.iter().find(|(n, _)| n == k).unwrap().1.as_str();
    assert_eq!(get("redirect_uri"), REDIRECT_URI);
    assert_eq!(get("client_id"), FakeSlackConfig::default().client_id);
    assert_eq!(get("scope"), "chat:write,commands");
    assert_ne!(get("state"), "attacker-chosen");
    assert!(
        !r.everything().to_lowercase().contains("evil"),
        "{}",
        r.everything()
    );
}

/// The callback never redirects: success, cancellation and failure are pages,
/// whatever `redirect_uri` / `next` / `return_to` say; the code is exchanged
/// with the configured redirect URI (the fake Slack insists on it); and no
/// query value is reflected into the page.
#[tokio::test]
async fn callback_pages_never_redirect_and_reflect_nothing() {
    let h = Harness::new().await;
    h.slack.add_install("code-ok", Harness::spec("T0RED"));
    let script = "%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let xss_id = [("x-request-id", "<script>alert(1)</script>")];

    // Success
    let (state, cookie) = h.start().await;
    let ok = h
        .get(
            &format!("/slack/oauth_redirect?code=code-ok&state={state}&{OPEN_REDIRECT_PARAMS}"),
            &[("cookie", &cookie), xss_id[0]],
        )
        .await;
    // Cancelled at Slack, with an error value trying to inject markup
    let (state2, cookie2) = h.start().await;
    let cancelled = h
        .get(
            &format!("/slack/oauth_redirect?error={script}&state={state2}&{OPEN_REDIRECT_PARAMS}"),
            &[("cookie", &cookie2)],
        )
        .await;
    // Failure (unknown code)
    let (state3, cookie3) = h.start().await;
    let failed = h
        .get(
            &format!(
                "/slack/oauth_redirect?code={script}&state={state3}&next=https%3A%2F%2Fevil.example"
            ),
            &[("cookie", &cookie3)],
        )
        .await;
    // Failure before the state (no cookie)
    let refused = h
        .get(
            &format!("/slack/oauth_redirect?code=x&state={state3}&return_to=%2F%2Fevil.example"),
            &[],
        )
        .await;

    assert_eq!(
        [ok.status, cancelled.status, failed.status, refused.status],
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::BAD_REQUEST,
            StatusCode::BAD_REQUEST
        ]
    );
    assert!(
        ok.body.contains("Installation complete")
            && ok
                .body
                .contains("https:&#x2f;&#x2f;slack.com&#x2f;app_redirect?app=A0001&amp;team=T0RED"),
        "{}",
        ok.body
    );
    for r in [&ok, &cancelled, &failed, &refused] {
        assert!(
            !r.status.is_redirection() && r.headers.get(header::LOCATION).is_none(),
            "{}",
            r.everything()
        );
        let all = r.everything().to_lowercase();
        assert!(
            !all.contains("evil") && !all.contains("<script") && !all.contains("alert("),
            "{all}"
        );
        // Only Slack links, nothing relative or protocol-relative (read as
        // the browser reads them: the entities the template wrote decoded)
        let body = r.body.replace("&#x2f;", "/").replace("&amp;", "&");
        for href in body.split("href=\"").skip(1) {
            assert!(
                href.starts_with("https://slack.com/")
                    || href.starts_with("https://app.slack.com/")
                    || href.starts_with("slack://"),
                "{href}"
            );
        }
    }
    assert_eq!(h.slack.counters().exchanges, 1);
}

/// CSRF: the state travels with a cookie that is empty, misnamed, differently
/// cased, or sent twice (one right, one planted). Each is refused before any
/// exchange, nothing is stored, and the real owner can still finish.
#[tokio::test]
async fn csrf_cookie_variants_are_refused_without_burning_the_state() {
    let h = Harness::new().await;
    h.slack.add_install("code-csrf", Harness::spec("T0CSRF"));
    let (state, cookie) = h.start().await;
    let uri = format!("/slack/oauth_redirect?code=code-csrf&state={state}");
    let upper = format!("{}={state}", STATE_COOKIE.to_uppercase());
    let padded = format!("x{STATE_COOKIE}={state}");
    let planted =
        format!("{STATE_COOKIE}=0000000000000000000000000000000000000000000000000000000000000000");
    let both_in_one = format!("{cookie}; {planted}");
    let empty = format!("{STATE_COOKIE}=");
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("empty cookie", vec![("cookie", &empty)]),
        ("cookie name in upper case", vec![("cookie", &upper)]),
        ("cookie name with a prefix", vec![("cookie", &padded)]),
        (
            "right and planted cookie, two headers",
            vec![("cookie", &cookie), ("cookie", &planted)],
        ),
        (
            "right and planted cookie, one header",
            vec![("cookie", &both_in_one)],
        ),
        ("state in a header instead", vec![("x-oauth-state", &state)]),
    ];
    for (name, headers) in cases {
        let r = h.get(&uri, &headers).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(r.body.contains("Installation failed"), "{name}");
        assert!(
            r.headers.get(header::SET_COOKIE).is_none(),
            "{name}: touched the cookie of an install in flight"
        );
    }
    assert_eq!(h.exchanges(), 0);
    assert_eq!(h.stored_records().await, 0);
    let r = h.get(&uri, &[("cookie", &cookie)]).await;
    assert_eq!(r.status, StatusCode::OK, "the owner finishes");
}

/// A state that is not one of ours (wrong length, not hex, non-UTF-8 once
/// decoded) is refused without a single store call, even with a matching cookie.
#[tokio::test]
async fn malformed_states_cost_no_store_call() {
    let h = Harness::new().await;
    h.slack.add_install("code-m", Harness::spec("T0MAL"));
    for (state_param, cookie_value) in [
        ("%FF%FE", "%FF%FE"),
        ("abc", "abc"),
        (&"g".repeat(64)[..], &"g".repeat(64)[..]),
        (&"A".repeat(256)[..], &"A".repeat(256)[..]),
    ] {
        let before = h.counting.total();
        let r = h
            .get(
                &format!("/slack/oauth_redirect?code=code-m&state={state_param}"),
                &[("cookie", &format!("{STATE_COOKIE}={cookie_value}"))],
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{state_param}");
        assert_eq!(
            h.counting.total(),
            before,
            "{state_param}: reached the store"
        );
    }
    assert_eq!(h.exchanges(), 0);
}

/// One state replayed by many tabs at once: exactly one exchange and one install.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_replayed_concurrently_installs_once() {
    let h = Arc::new(Harness::new().await);
    for i in 0..8 {
        h.slack
            .add_install(&format!("code-c{i}"), Harness::spec(&format!("T0CON{i}")));
    }
    let (state, cookie) = h.start().await;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (h, state, cookie) = (h.clone(), state.clone(), cookie.clone());
            tokio::spawn(async move {
                h.get(
                    &format!("/slack/oauth_redirect?code=code-c{i}&state={state}"),
                    &[("cookie", &cookie)],
                )
                .await
                .status
            })
        })
        .collect();
    let mut statuses = vec![];
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(h.exchanges(), 1);
    assert_eq!(h.raw.scan_tenants().await.unwrap().len(), 1);
}

/// Leak check: Slack refusing or failing, the store throttled, KMS down after
/// Slack issued the tokens. Each failure page is generic and carries no code,
/// no full state, no token, no webhook URL, no client secret, no cause.
#[tokio::test]
async fn failure_pages_carry_no_secret() {
    let h = Harness::new().await;
    let secret = FakeSlackConfig::default()
        .client_secret
        .expose_secret()
        .to_owned();
    type Setup = Box<dyn Fn(&Harness)>;
    let scenarios: Vec<(&str, Setup, StatusCode)> = vec![
        (
            "slack 500",
            Box::new(|h: &Harness| h.slack.fail_next("oauth.v2.access", Failure::Http(500))),
            StatusCode::BAD_GATEWAY,
        ),
        (
            "slack bad_client_secret",
            Box::new(|h: &Harness| {
                h.slack.fail_next(
                    "oauth.v2.access",
                    Failure::SlackError("bad_client_secret".into()),
                )
            }),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            "slack rate limited",
            Box::new(|h: &Harness| {
                h.slack.fail_next(
                    "oauth.v2.access",
                    Failure::RateLimited {
                        retry_after_secs: 30,
                    },
                )
            }),
            StatusCode::BAD_GATEWAY,
        ),
        (
            "kms down after the exchange",
            Box::new(|h: &Harness| h.kms.set_fault(Fault::Unavailable)),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            "kms denies after the exchange",
            Box::new(|h: &Harness| h.kms.set_fault(Fault::AccessDenied)),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            "table throttled",
            Box::new(|h: &Harness| h.faults.set_fault(RepoFault::Throttle)),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            "writes lose every race",
            Box::new(|h: &Harness| h.faults.set_fault(RepoFault::ConditionFailed)),
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (i, (name, setup, expected)) in scenarios.into_iter().enumerate() {
        let code = format!("code-leak-{i}-7f3a9c");
        h.slack
            .add_install(&code, Harness::spec(&format!("T0LEAK{i}")));
        let (state, cookie) = h.start().await;
        setup(&h);
        let r = h
            .get(
                &format!("/slack/oauth_redirect?code={code}&state={state}"),
                &[("cookie", &cookie)],
            )
            .await;
        h.kms.set_fault(Fault::None);
        h.faults.set_fault(RepoFault::None);
        assert_eq!(r.status, expected, "{name}: {}", r.body);
        assert!(r.body.contains("Installation failed"), "{name}");
        let all = r.everything();
        for f in [
            code.as_str(),
            &state[8..],
            secret.as_str(),
            "xox",
            "hooks.slack.com",
            "injected",
            "bad_client_secret",
            "ratelimited",
            "Unavailable",
        ] {
            assert!(!all.contains(f), "{name}: {f:?} in {all}");
        }
    }
    assert_eq!(
        h.stored_records().await,
        0,
        "no failed install left a record"
    );
}

/// Every answer, redirect or page, success or refusal, carries the security
/// headers and one plain request id (the same one the page shows); a hostile
/// `x-request-id` is replaced, never echoed; a body on these GETs is refused.
#[tokio::test]
async fn every_answer_has_security_headers_and_a_plain_request_id() {
    // Given an install redirect, a success page and a refusal, one with a hostile request id
    let h = Harness::new().await;
    h.slack.add_install("code-hdr", Harness::spec("T0HDR"));
    let redirect = h
        .get("/slack/install", &[("x-request-id", "abc\"><script>")])
        .await;
    let (state, cookie) = h.start().await;
    let ok = h
        .get(
            &format!("/slack/oauth_redirect?code=code-hdr&state={state}"),
            &[("cookie", &cookie), ("x-request-id", "req-from-the-edge")],
        )
        .await;
    let refused = h.get("/slack/oauth_redirect?code=x&state=y", &[]).await;

    // Then each carries the headers, whatever the handler answered
    for r in [&redirect, &ok, &refused] {
        let get = |name: header::HeaderName| r.headers.get(name).map(|v| v.to_str().unwrap());
        assert_eq!(
            get(header::CACHE_CONTROL),
            Some("no-store"),
            "{}",
            r.everything()
        );
        assert_eq!(get(header::REFERRER_POLICY), Some("no-referrer"));
        assert_eq!(get(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
        assert_eq!(
            get(header::CONTENT_SECURITY_POLICY),
            Some("default-src 'none'; frame-ancestors 'none'")
        );
        let id = r.headers.get_all("x-request-id").iter().collect::<Vec<_>>();
        assert_eq!(id.len(), 1, "{}", r.everything());
        let id = id[0].to_str().unwrap();
        assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        // And a page shows the id its header carries
        if r.body.contains("Request id") {
            assert!(r.body.contains(&format!("Request id: {id}")), "{}", r.body);
        }
    }
    // And a plain incoming id is kept, a hostile one replaced
    assert_eq!(ok.headers["x-request-id"], "req-from-the-edge");
    assert!(!redirect.everything().contains("script"));

    // When a GET arrives with a body larger than these routes accept
    let resp = h
        .router
        .clone()
        .oneshot(
            Request::get("/slack/install")
                .header(header::CONTENT_LENGTH, "4096")
                .body(Body::from(vec![b'x'; 4096]))
                .unwrap(),
        )
        .await
        .unwrap();
    // Then it is refused unread, and no state was issued for it
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp.headers().get(header::SET_COOKIE).is_none());
}
