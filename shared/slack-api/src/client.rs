//! The Slack Web API client: OAuth (code exchange, refresh) and the few
//! token-bearing calls tokenkeep itself makes.
//!
//! Retry policy, and why: only an HTTP 429 is retried, only for calls that are
//! safe to repeat (`auth.test`, `auth.revoke`, `chat.postMessage`), at most
//! once and only if Slack asks us to wait no longer than
//! [`SlackClient::with_max_retry_wait`] (30 s by default). A 429 means Slack
//! did not act, so repeating cannot duplicate a message. Timeouts and 5xx are
//! never retried: Slack may have acted. OAuth calls are never retried at all,
//! because codes and refresh tokens are single-use.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{SlackError, SlackErrorCode};
use crate::secrets::{AccessToken, ClientSecret, RefreshToken};
use crate::types::{AuthTestResponse, OAuthGrant, OAuthV2Response};

/// Slack's production Web API base.
pub const DEFAULT_API_URL: &str = "https://slack.com/api";
/// Per-call timeout unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Slack's `response_url`s point (`https://hooks.slack.com/commands/…`, `/actions/…`).
pub const DEFAULT_RESPONSE_URL_BASE: &str = "https://hooks.slack.com/";
/// Longest `Retry-After` the client will sleep through before its one retry.
pub const DEFAULT_MAX_RETRY_WAIT: Duration = Duration::from_secs(30);

/// What a [`SlackClient`] needs. Build with [`SlackClientConfig::new`] for the
/// defaults, then override fields (tests point `api_url` at a fake Slack).
pub struct SlackClientConfig {
    /// Base URL without trailing slash; default [`DEFAULT_API_URL`].
    pub api_url: String,
    pub client_id: String,
    pub client_secret: ClientSecret,
    /// Applies to every call, connect to last body byte; default 10 s.
    pub timeout: Duration,
    /// The only URL prefix `response_url` posts may go to; default
    /// [`DEFAULT_RESPONSE_URL_BASE`] (tests point it at a fake Slack).
    pub response_url_base: String,
}

impl SlackClientConfig {
    /// Production URL and the default timeout.
    pub fn new(client_id: impl Into<String>, client_secret: ClientSecret) -> Self {
        Self {
            api_url: DEFAULT_API_URL.to_owned(),
            client_id: client_id.into(),
            client_secret,
            timeout: DEFAULT_TIMEOUT,
            response_url_base: DEFAULT_RESPONSE_URL_BASE.to_owned(),
        }
    }
}

impl std::fmt::Debug for SlackClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClientConfig")
            .field("api_url", &self.api_url)
            .field("client_id", &self.client_id)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A Slack Web API client. Cheap to clone: one connection pool is built in
/// [`new`](Self::new) (once per cold start) and shared by every clone.
#[derive(Clone)]
pub struct SlackClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api_url: String,
    client_id: String,
    client_secret: ClientSecret,
    timeout: Duration,
    max_retry_wait: Duration,
    response_url_base: String,
}

impl std::fmt::Debug for SlackClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackClient")
            .field("api_url", &self.inner.api_url)
            .field("client_id", &self.inner.client_id)
            .field("timeout", &self.inner.timeout)
            .field("max_retry_wait", &self.inner.max_retry_wait)
            .finish_non_exhaustive()
    }
}

/// How a call authenticates.
pub(crate) enum Auth<'a> {
    /// The app's client id and secret as HTTP Basic (oauth.v2.access, oauth.v2.exchange).
    Client,
    Bearer(&'a AccessToken),
}

/// What a call sends.
pub(crate) enum Payload<'a> {
    Form(&'a [(&'a str, &'a str)]),
    Json(&'a serde_json::Value),
}

/// The fields every Web API answer carries.
#[derive(Deserialize)]
struct Envelope {
    ok: Option<bool>,
    error: Option<String>,
}

impl SlackClient {
    /// Builds the HTTP client. Fails only if the TLS backend cannot initialise.
    ///
    /// Redirects are not followed: the Web API never redirects, and following
    /// one would send a bearer token or client secret somewhere unplanned.
    pub fn new(cfg: SlackClientConfig) -> Result<Self, SlackError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tokenkeep/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SlackError::from_reqwest)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_url: cfg.api_url.trim_end_matches('/').to_owned(),
                client_id: cfg.client_id,
                client_secret: cfg.client_secret,
                timeout: cfg.timeout,
                max_retry_wait: DEFAULT_MAX_RETRY_WAIT,
                response_url_base: cfg.response_url_base,
            }),
        })
    }

    /// Caps how long a retryable call sleeps on a 429 before its single retry;
    /// a longer `Retry-After` is returned as [`SlackError::RateLimited`] at
    /// once. Use `Duration::ZERO` in request handlers that must answer Slack
    /// within 3 s.
    pub fn with_max_retry_wait(self, max: Duration) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                api_url: inner.api_url.clone(),
                client_id: inner.client_id.clone(),
                client_secret: inner.client_secret.clone(),
                timeout: inner.timeout,
                max_retry_wait: max,
                response_url_base: inner.response_url_base.clone(),
            }),
        }
    }

    /// Who the token belongs to; errors with `invalid_auth`/`token_revoked`
    /// when it is dead, which makes it the liveness probe after a refresh.
    pub async fn auth_test(&self, token: &AccessToken) -> Result<AuthTestResponse, SlackError> {
        self.call_retrying("auth.test", token, Payload::Form(&[]))
            .await
    }

    /// Revokes the token at Slack (used on uninstall). A token that is already
    /// dead answers with an error for which [`SlackError::is_revoked`] holds;
    /// uninstall code may treat that as done.
    pub async fn auth_revoke(&self, token: &AccessToken) -> Result<(), SlackError> {
        self.call_retrying::<serde::de::IgnoredAny>("auth.revoke", token, Payload::Form(&[]))
            .await?;
        Ok(())
    }

    /// Posts `text` to `channel`, optionally in a thread.
    pub async fn chat_post_message(
        &self,
        token: &AccessToken,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Result<(), SlackError> {
        let mut body = serde_json::json!({ "channel": channel, "text": text });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = serde_json::Value::from(ts);
        }
        self.call_retrying::<serde::de::IgnoredAny>(
            "chat.postMessage",
            token,
            Payload::Json(&body),
        )
        .await?;
        Ok(())
    }

    /// A bearer call that may be repeated once after a 429 (see the module doc).
    pub(crate) async fn call_retrying<T: DeserializeOwned>(
        &self,
        method: &'static str,
        token: &AccessToken,
        payload: Payload<'_>,
    ) -> Result<T, SlackError> {
        match self.call(method, Auth::Bearer(token), &payload).await {
            Err(SlackError::RateLimited { retry_after_secs })
                if Duration::from_secs(retry_after_secs) <= self.inner.max_retry_wait =>
            {
                tracing::info!(
                    method,
                    retry_after_secs,
                    "slack rate limited; retrying once"
                );
                tokio::time::sleep(Duration::from_secs(retry_after_secs)).await;
                self.call(method, Auth::Bearer(token), &payload).await
            }
            other => other,
        }
    }

    /// POSTs `body` to a `response_url` Slack handed out with an interaction
    /// or a slash command. The URL is itself the credential (no token goes
    /// with it), and it must start with the configured base: anything else
    /// would turn a listener into a request forwarder. A 429 is retried once
    /// as for the Web API; any other non-2xx is an error.
    pub(crate) async fn post_response_url(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<(), SlackError> {
        if !url.starts_with(&self.inner.response_url_base) {
            tracing::warn!("response_url outside the allowed base refused");
            return Err(SlackError::ResponseUrl);
        }
        let mut retried = false;
        loop {
            let response = self
                .inner
                .http
                .post(url)
                .json(body)
                .send()
                .await
                .map_err(SlackError::from_reqwest)?;
            let status = response.status();
            if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let retry_after_secs = retry_after(response.headers());
                if !retried && Duration::from_secs(retry_after_secs) <= self.inner.max_retry_wait {
                    retried = true;
                    tokio::time::sleep(Duration::from_secs(retry_after_secs)).await;
                    continue;
                }
                return Err(SlackError::RateLimited { retry_after_secs });
            }
            if !status.is_success() {
                tracing::warn!(http_status = status.as_u16(), "response_url post failed");
                return Err(SlackError::Http(status.as_u16()));
            }
            return Ok(());
        }
    }

    /// One HTTP exchange, no retry. The only place secrets meet the wire.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        auth: Auth<'_>,
        payload: &Payload<'_>,
    ) -> Result<T, SlackError> {
        let url = format!("{}/{}", self.inner.api_url, method);
        let mut request = self.inner.http.post(url);
        request = match auth {
            Auth::Client => request.basic_auth(
                &self.inner.client_id,
                Some(self.inner.client_secret.expose_secret()),
            ),
            Auth::Bearer(token) => {
                tracing::debug!(method, token = %token.fingerprint(), "slack call");
                request.bearer_auth(token.expose_secret())
            }
        };
        request = match payload {
            Payload::Form(fields) => request.form(fields),
            Payload::Json(body) => request.json(body),
        };

        let response = request.send().await.map_err(|e| {
            let e = SlackError::from_reqwest(e);
            tracing::warn!(method, error = %e, "slack call failed");
            e
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            let retry_after_secs = retry_after(response.headers());
            tracing::warn!(
                method,
                http_status = status.as_u16(),
                retry_after_secs,
                "slack rate limited"
            );
            return Err(SlackError::RateLimited { retry_after_secs });
        }
        if status.is_server_error() || status.is_redirection() || status.is_informational() {
            tracing::warn!(method, http_status = status.as_u16(), "slack http error");
            return Err(SlackError::Http(status.as_u16()));
        }
        let body = response.bytes().await.map_err(SlackError::from_reqwest)?;
        if !status.is_success() {
            // A 4xx that still carries Slack's `ok:false` envelope is a refusal
            // the caller can act on (e.g. a dead refresh token); anything else
            // stays a bare status.
            return match serde_json::from_slice::<Envelope>(&body) {
                Ok(Envelope {
                    ok: Some(false),
                    error: Some(code),
                }) => {
                    let code = SlackErrorCode::from_slack(&code);
                    tracing::warn!(method, http_status = status.as_u16(), slack_error = %code, "slack refused");
                    Err(SlackError::Api(code))
                }
                _ => {
                    tracing::warn!(method, http_status = status.as_u16(), "slack http error");
                    Err(SlackError::Http(status.as_u16()))
                }
            };
        }

        let envelope: Envelope = serde_json::from_slice(&body).map_err(SlackError::from_json)?;
        match envelope.ok {
            Some(true) => serde_json::from_slice(&body).map_err(SlackError::from_json),
            Some(false) => {
                let code = SlackErrorCode::from_slack(envelope.error.as_deref().unwrap_or(""));
                tracing::warn!(method, slack_error = %code, "slack refused");
                Err(SlackError::Api(code))
            }
            None => Err(SlackError::from_json(serde::de::Error::missing_field("ok"))),
        }
    }
}

/// Slack sends whole seconds; a missing or unreadable header gets a short default
/// rather than an immediate retry storm.
fn retry_after(headers: &reqwest::header::HeaderMap) -> u64 {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1)
}

/// The OAuth half of Slack, as a seam: the installation store depends on this
/// trait so its tests can use the fake Slack or a stub.
///
/// Neither call is ever retried here, because both spend a single-use value.
/// Errors: [`SlackError::Api`] when Slack refused (`invalid_code`,
/// `invalid_refresh_token`, `bad_client_secret`, ...), [`SlackError::RateLimited`]
/// on 429, and the ambiguous ones ([`SlackError::is_ambiguous`]) when Slack may
/// have acted without us seeing the answer.
#[async_trait::async_trait]
pub trait SlackOAuth: Send + Sync + std::fmt::Debug {
    /// grant_type=authorization_code: trades the one-time `code` from the
    /// OAuth redirect for the installation's tokens. `redirect_uri` must match
    /// the one sent to the authorize URL, if one was sent.
    async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthGrant, SlackError>;

    /// grant_type=refresh_token: trades a rotation refresh token for a new
    /// access token and a new refresh token.
    ///
    /// NEVER retried internally: the refresh token is single-use, and a second
    /// attempt after an unseen success would spend it twice and revoke tokens
    /// other requests hold. On an error the error is returned and the stored
    /// refresh token stays the one to try next: the store releases its lease
    /// so the next reader tries once more. If Slack did rotate (an ambiguous
    /// failure: timeout, 5xx), that attempt answers `invalid_refresh_token`
    /// and the installation is marked `needs_reinstall` rather than guessing.
    /// Only [`SlackError::is_revoked`] means the grant is gone.
    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<OAuthV2Response, SlackError>;

    /// oauth.v2.exchange: trades a long-lived (non-rotating) access token for
    /// a rotating pair, once the app has token rotation on. NEVER retried
    /// internally, for the same reason as [`refresh`](Self::refresh): Slack
    /// may have issued the pair without us seeing the answer.
    async fn exchange_long_lived(&self, token: &AccessToken)
    -> Result<OAuthV2Response, SlackError>;

    /// auth.revoke: kills a token Slack just issued that could not be stored
    /// (a failed install), so no live grant exists that nothing holds. Safe
    /// to repeat; a token that is already dead counts as revoked.
    async fn revoke(&self, token: &AccessToken) -> Result<(), SlackError>;
}

#[async_trait::async_trait]
impl SlackOAuth for SlackClient {
    async fn exchange_code(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthGrant, SlackError> {
        let mut form: Vec<(&str, &str)> =
            vec![("grant_type", "authorization_code"), ("code", code)];
        if let Some(uri) = redirect_uri {
            form.push(("redirect_uri", uri));
        }
        self.call("oauth.v2.access", Auth::Client, &Payload::Form(&form))
            .await
            .map(OAuthGrant::from_slack)
    }

    async fn refresh(&self, refresh_token: &RefreshToken) -> Result<OAuthV2Response, SlackError> {
        tracing::debug!(method = "oauth.v2.access", refresh_token = %refresh_token.fingerprint(), "slack refresh");
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose_secret()),
        ];
        self.call("oauth.v2.access", Auth::Client, &Payload::Form(&form))
            .await
    }

    async fn exchange_long_lived(
        &self,
        token: &AccessToken,
    ) -> Result<OAuthV2Response, SlackError> {
        tracing::debug!(method = "oauth.v2.exchange", token = %token.fingerprint(), "slack token exchange");
        let form = [("token", token.expose_secret())];
        self.call("oauth.v2.exchange", Auth::Client, &Payload::Form(&form))
            .await
    }

    async fn revoke(&self, token: &AccessToken) -> Result<(), SlackError> {
        match self.auth_revoke(token).await {
            Err(e) if e.is_revoked() => Ok(()),
            other => other,
        }
    }
}
