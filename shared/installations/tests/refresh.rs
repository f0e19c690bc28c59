//! Single-flight refresh against the fake Slack, whose rules make a duplicate
//! refresh visible: refresh tokens are single-use (no grace period) and a third
//! access token revokes the oldest. Every case runs on the embedded repository
//! and on DynamoDB + KMS on the local emulator (`AWS_ENDPOINT_URL`, see
//! infra/test.sh).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tokenkeep_envelope::testing::{CountingKeyProvider, Fault, FaultyKeyProvider};
use tokenkeep_envelope::{KeyProvider, KmsKeyProvider};
use tokenkeep_installations::testing::{
    CountingRepository, FaultyRepository, emulator_config, emulator_kms_key, emulator_repository,
    local_keys,
};
use tokenkeep_installations::{
    Clock, CountingStoreMetrics, DynamoRepository, EmbeddedRepository, Installation,
    InstallationStore, ManualClock, Outcome, ReadContext, RecordKey, Repository, Status,
    StoreConfig, StoreError, StoreMetric, VerifiedTenant,
};
use tokenkeep_slack_api::fake::{Failure, FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{AccessToken, SlackClient, SlackClientConfig, SlackOAuth};

const APP_ID: &str = "1111.2222";
/// The fake's token lifetime and what the store records as `expires_in`.
const LIFETIME: i64 = 43_200;
const START: i64 = 1_700_000_000;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Dynamo,
}

/// Storage one or more stores share: the same table (or SQLite database) and key.
struct Shared {
    backend: Backend,
    embedded: Option<Arc<EmbeddedRepository>>,
    local_keys: Option<Arc<dyn KeyProvider>>,
    dynamo: Option<(String, String, String)>, // table, audit table, kms key arn
    _dir: Option<tempfile::TempDir>,
}

impl Shared {
    async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Embedded => {
                let (keys, dir) = local_keys();
                Self {
                    backend,
                    embedded: Some(Arc::new(EmbeddedRepository::in_memory().unwrap())),
                    local_keys: Some(keys),
                    dynamo: None,
                    _dir: Some(dir),
                }
            }
            Backend::Dynamo => {
                let (_, _, table, audit) = emulator_repository().await;
                let (_, key) = emulator_kms_key().await;
                Self {
                    backend,
                    embedded: None,
                    local_keys: None,
                    dynamo: Some((table, audit, key)),
                    _dir: None,
                }
            }
        }
    }

    /// A new store instance: its own lease owner and, on DynamoDB, its own
    /// SDK clients, as a separate Lambda sandbox would have.
    async fn store(
        &self,
        clock: &Arc<ManualClock>,
        slack: Arc<dyn SlackOAuth>,
        cfg: StoreConfig,
    ) -> InstallationStore {
        let (repo, keys) = self.parts().await;
        InstallationStore::new(repo, keys, cfg)
            .with_clock(clock.clone() as Arc<dyn Clock>)
            .with_refresher(slack)
    }

    /// A store whose repository injects write faults and whose key provider stalls on demand.
    async fn faulty_store(
        &self,
        clock: &Arc<ManualClock>,
        slack: Arc<dyn SlackOAuth>,
    ) -> (
        InstallationStore,
        Arc<FaultyRepository>,
        Arc<FaultyKeyProvider<Arc<dyn KeyProvider>>>,
    ) {
        let (repo, keys) = self.parts().await;
        let repo = Arc::new(FaultyRepository::new(repo));
        let keys = Arc::new(FaultyKeyProvider::new(keys));
        let store = InstallationStore::new(repo.clone(), keys.clone(), StoreConfig::new(APP_ID))
            .with_clock(clock.clone() as Arc<dyn Clock>)
            .with_refresher(slack);
        (store, repo, keys)
    }

    async fn parts(&self) -> (Arc<dyn Repository>, Arc<dyn KeyProvider>) {
        match self.backend {
            Backend::Embedded => (
                self.embedded.clone().unwrap(),
                self.local_keys.clone().unwrap(),
            ),
            Backend::Dynamo => {
                let (table, audit, key) = self.dynamo.clone().unwrap();
                let aws = emulator_config().await;
                (
                    Arc::new(DynamoRepository::new(
                        aws_sdk_dynamodb::Client::new(&aws),
                        table,
                        audit,
                    )),
                    Arc::new(KmsKeyProvider::new(aws_sdk_kms::Client::new(&aws), key)),
                )
            }
        }
    }
}

struct Case {
    slack: FakeSlack,
    clock: Arc<ManualClock>,
    shared: Shared,
    store: InstallationStore,
    metrics: Arc<CountingStoreMetrics>,
}

impl Case {
    async fn new(backend: Backend, slack_cfg: FakeSlackConfig) -> Self {
        let slack = FakeSlack::start(slack_cfg).await;
        let clock = Arc::new(ManualClock::at_secs(START));
        let shared = Shared::new(backend).await;
        let metrics = Arc::new(CountingStoreMetrics::default());
        let store = shared
            .store(&clock, Arc::new(slack.client()), StoreConfig::new(APP_ID))
            .await
            .with_metrics(metrics.clone());
        Self {
            slack,
            clock,
            shared,
            store,
            metrics,
        }
    }

    /// Installs `team` through the fake's code exchange, as the OAuth callback does.
    async fn install(&self, team: &str) -> VerifiedTenant {
        let code = format!("code-{team}");
        self.slack.add_install(&code, InstallSpec::workspace(team));
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        assert_eq!(resp.expires_in, Some(LIFETIME), "rotation is on");
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let inst = Installation::from_oauth_response(resp, self.clock.now_secs()).unwrap();
        self.store.store_installation(&tenant, &inst).await.unwrap();
        tenant
    }

    /// Moves the store's clock past the access token's expiry. The fake's own
    /// tokens stay valid (its lifetime runs on the real clock).
    fn expire(&self) {
        self.clock.advance_secs(LIFETIME + 1);
    }

    fn oauth_calls(&self) -> u64 {
        self.slack.calls("oauth.v2.access")
    }
}

fn ctx(i: usize) -> ReadContext {
    ReadContext::new("test", format!("req-{i}"), "refresh test")
}

fn slack_with_latency(ms: u64) -> FakeSlackConfig {
    FakeSlackConfig {
        latency: Duration::from_millis(ms),
        ..FakeSlackConfig::default()
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- cases -------------------------------------------------------------------

/// 64 concurrent readers of one expired token in one store: one refresh, one new token.
async fn one_store_many_readers(backend: Backend) {
    let case = Case::new(backend, slack_with_latency(50)).await;
    let tenant = case.install("T1").await;
    case.expire();

    let started = Instant::now();
    let reads = join_all((0..64).map(|i| {
        let (store, tenant) = (case.store.clone(), tenant.clone());
        tokio::spawn(async move { store.bot_token(&tenant, &ctx(i)).await })
    }))
    .await;
    let waited = started.elapsed();

    let tokens: Vec<AccessToken> = reads.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "exactly one refresh at Slack"
    );
    if matches!(backend, Backend::Embedded) {
        // Queued readers pick up the new token as soon as the one refresh is
        // stored; they must not each sleep a poll interval in turn (that took
        // 64 x 50 ms > 3 s, past Slack's 3 s ack deadline). A loose bound: one
        // 50 ms Slack call plus SQLite is well under it.
        assert!(
            waited < Duration::from_millis(1500),
            "64 readers took {waited:?}"
        );
    }
    assert!(
        tokens
            .iter()
            .all(|t| t.expose_secret() == tokens[0].expose_secret()),
        "every reader got the same token"
    );
    assert!(
        case.slack.is_token_active(&tokens[0]),
        "the new token works at Slack"
    );
    assert_eq!(
        case.store
            .refresh_metrics()
            .refreshed
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Four store instances (four lease owners, four sets of clients) on one table,
/// 16 readers each: still one refresh.
async fn many_stores_many_readers(backend: Backend) {
    let case = Case::new(backend, slack_with_latency(50)).await;
    let tenant = case.install("T1").await;
    case.expire();

    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(
            case.shared
                .store(
                    &case.clock,
                    Arc::new(case.slack.client()),
                    StoreConfig::new(APP_ID),
                )
                .await,
        );
    }
    let reads = join_all(stores.iter().flat_map(|store| {
        (0..16).map(|i| {
            let (store, tenant) = (store.clone(), tenant.clone());
            tokio::spawn(async move { store.bot_token(&tenant, &ctx(i)).await })
        })
    }))
    .await;

    let tokens: Vec<AccessToken> = reads.into_iter().map(|r| r.unwrap().unwrap()).collect();
    assert_eq!(tokens.len(), 64);
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "exactly one refresh across four processes"
    );
    assert!(
        tokens
            .iter()
            .all(|t| t.expose_secret() == tokens[0].expose_secret())
    );
    assert!(case.slack.is_token_active(&tokens[0]));
}

/// A token inside the refresh window but still valid: readers get it at once,
/// one background refresh replaces it.
async fn due_but_valid_does_not_wait(backend: Backend) {
    // Slack's answer takes longer than the reads may: the emulator is slower
    // than SQLite, so it gets a longer latency.
    let latency = match backend {
        Backend::Embedded => Duration::from_millis(500),
        Backend::Dynamo => Duration::from_millis(2500),
    };
    let case = Case::new(
        backend,
        FakeSlackConfig {
            latency,
            ..FakeSlackConfig::default()
        },
    )
    .await;
    let tenant = case.install("T1").await;
    let old = case.store.bot_token(&tenant, &ctx(0)).await.unwrap();
    // Given: due (inside the 120-minute window), not expired.
    case.clock
        .advance_secs(LIFETIME - case.store.config().refresh_window_secs + 60);

    let started = Instant::now();
    let reads = join_all((0..32).map(|i| {
        let (store, tenant) = (case.store.clone(), tenant.clone());
        tokio::spawn(async move { store.bot_token(&tenant, &ctx(i)).await })
    }))
    .await;
    let waited = started.elapsed();

    for read in reads {
        assert_eq!(
            read.unwrap().unwrap().expose_secret(),
            old.expose_secret(),
            "the current token, at once"
        );
    }
    // Slack answers after `latency`: a reader that waited for the refresh would take longer.
    assert!(
        waited < latency * 4 / 5,
        "readers waited {waited:?} for a refresh they didn't need"
    );
    assert_eq!(
        case.slack.refreshes_for("T1"),
        0,
        "the refresh is still in flight"
    );

    wait_until("the background refresh", || {
        case.slack.refreshes_for("T1") == 1
    })
    .await;
    let key = RecordKey::bot(tenant.key().clone());
    let mut record = case.store.repository().get(&key).await.unwrap().unwrap();
    for _ in 0..200 {
        if record.version == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        record = case.store.repository().get(&key).await.unwrap().unwrap();
    }
    assert_eq!(record.version, 2, "the new pair was stored once");
    // Nothing else is queued behind it.
    tokio::time::sleep(latency + Duration::from_millis(200)).await;
    assert_eq!(case.slack.refreshes_for("T1"), 1, "exactly one refresh");
    let new = case.store.bot_token(&tenant, &ctx(99)).await.unwrap();
    assert_ne!(new.expose_secret(), old.expose_secret());
    assert!(case.slack.is_token_active(&new));
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "a fresh token is not refreshed again"
    );
}

/// The lease holder dies without finishing: after the lease runs out a reader
/// takes over, and the refresh token it spends is still the valid one.
async fn crashed_lease_holder_is_taken_over(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let tenant = case.install("T1").await;
    case.expire();
    let key = RecordKey::bot(tenant.key().clone());
    let record = case.store.repository().get(&key).await.unwrap().unwrap();
    let now = case.clock.now_secs();
    let lease = case.store.config().lease_secs;
    assert!(
        case.store
            .repository()
            .try_lease(
                &key,
                record.version,
                record.generation,
                "crashed-sandbox",
                now,
                now + lease
            )
            .await
            .unwrap()
    );

    let reader = {
        let (store, tenant) = (case.store.clone(), tenant.clone());
        tokio::spawn(async move { store.bot_token(&tenant, &ctx(1)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reader.is_finished(),
        "the reader waits while the lease is live"
    );
    assert_eq!(
        case.oauth_calls(),
        1,
        "only the install's code exchange so far"
    );

    // The lease runs out on the store's clock (the reader's wait loop reads it too).
    case.clock.advance_secs(lease + 1);
    let token = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(case.slack.refreshes_for("T1"), 1);
    assert!(case.slack.is_token_active(&token));
    let after = case.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!(after.version, record.version + 1);
    assert_eq!(after.lease_owner, None, "the write cleared the lease");

    // No refresh token was lost: the stored one works for the next rotation.
    case.expire();
    let next = case.store.bot_token(&tenant, &ctx(2)).await.unwrap();
    assert_eq!(case.slack.refreshes_for("T1"), 2);
    assert!(case.slack.is_token_active(&next));
}

/// An uninstall while the refresh is at Slack: the refresh's write loses, the
/// read fails and nothing is resurrected.
async fn uninstall_during_refresh_wins(backend: Backend) {
    let case = Case::new(backend, slack_with_latency(500)).await;
    let tenant = case.install("T1").await;
    case.expire();
    let calls_before = case.oauth_calls();

    let reader = {
        let (store, tenant) = (case.store.clone(), tenant.clone());
        tokio::spawn(async move { store.bot_token(&tenant, &ctx(1)).await })
    };
    // The refresh has reached Slack (counted on arrival; the answer comes 500 ms later).
    wait_until("the refresh call", || case.oauth_calls() > calls_before).await;
    assert!(case.store.purge_tenant(&tenant).await.unwrap() >= 1);

    let result = reader.await.unwrap();
    assert!(
        matches!(result, Err(StoreError::NotInstalled)),
        "the read fails: {result:?}"
    );
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "Slack did refresh; the result was discarded"
    );
    assert!(
        case.store
            .list_tenant(tenant.key())
            .await
            .unwrap()
            .is_empty(),
        "no record came back"
    );
    let state = case
        .store
        .repository()
        .tenant_state(&tenant.key().pk())
        .await
        .unwrap()
        .unwrap();
    assert!(state.purged);
    assert!(matches!(
        case.store.bot_token(&tenant, &ctx(2)).await,
        Err(StoreError::NotInstalled)
    ));
}

/// Slack refuses the refresh token: the installation is marked, the failure
/// audited, and later reads fail without calling Slack.
async fn revoked_grant_needs_reinstall(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let tenant = case.install("T1").await;
    case.slack.revoke_refresh_tokens_for_team("T1");
    case.expire();

    let first = case.store.bot_token(&tenant, &ctx(1)).await;
    match &first {
        Err(StoreError::Refresh(e)) => assert!(e.is_revoked(), "{e}"),
        Err(StoreError::NeedsReinstall) => {}
        other => panic!("expected a refresh failure, got {other:?}"),
    }
    let info = case.store.fetch_bot(&tenant).await.unwrap().unwrap();
    assert_eq!(info.meta.status, Status::NeedsReinstall);
    assert_eq!(
        case.metrics.count_of(StoreMetric::NeedsReinstall),
        1,
        "the marking is counted once"
    );
    assert!(
        !info.has_token && !info.has_refresh_token,
        "no dead token is kept"
    );
    let audit = case
        .store
        .repository()
        .query_audit(Some(&tenant.key().pk()), 0, 100)
        .await
        .unwrap();
    assert!(
        audit.iter().any(|a| a.outcome == Outcome::RefreshFailed),
        "refresh failure audited: {audit:?}"
    );

    let calls = case.oauth_calls();
    let second = case.store.bot_token(&tenant, &ctx(2)).await;
    assert!(
        matches!(second, Err(StoreError::NeedsReinstall)),
        "{second:?}"
    );
    assert_eq!(
        case.oauth_calls(),
        calls,
        "a dead grant is not retried at Slack"
    );
    let audit = case
        .store
        .repository()
        .query_audit(Some(&tenant.key().pk()), 0, 100)
        .await
        .unwrap();
    assert!(audit.iter().any(|a| a.outcome == Outcome::NeedsReinstall));
    assert_eq!(
        case.store
            .refresh_metrics()
            .needs_reinstall
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Slack times out (and did not act): the read fails, the lease is released,
/// the next read refreshes with the same, still valid, refresh token.
async fn slack_timeout_releases_the_lease(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let impatient = SlackClient::new(SlackClientConfig {
        timeout: Duration::from_millis(300),
        ..case.slack.client_config()
    })
    .unwrap();
    let store = case
        .shared
        .store(&case.clock, Arc::new(impatient), StoreConfig::new(APP_ID))
        .await;
    let case = Case { store, ..case };
    let tenant = case.install("T1").await;
    case.expire();
    case.slack.fail_next("oauth.v2.access", Failure::Timeout);

    let first = case.store.bot_token(&tenant, &ctx(1)).await;
    assert!(
        matches!(&first, Err(StoreError::Refresh(e)) if e.is_ambiguous()),
        "{first:?}"
    );
    let key = RecordKey::bot(tenant.key().clone());
    let record = case.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!(
        (record.lease_owner.as_deref(), record.lease_until),
        (None, None),
        "lease released"
    );
    assert_eq!(
        record.meta.status,
        Status::Active,
        "an ambiguous failure does not condemn the grant"
    );
    assert_eq!(case.slack.refreshes_for("T1"), 0);

    let token = case.store.bot_token(&tenant, &ctx(2)).await.unwrap();
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "one more refresh, and it succeeded"
    );
    assert!(case.slack.is_token_active(&token));
}

/// Slack answered the refresh, then the conditional write of the new pair got
/// three 500s: the write is retried under the lease, the pair reaches the
/// table, and the next read (any process) uses it without another refresh.
async fn write_errors_after_slack_answered_lose_no_pair(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let (store, repo, _) = case
        .shared
        .faulty_store(&case.clock, Arc::new(case.slack.client()))
        .await;
    let case = Case { store, ..case };
    let tenant = case.install("T1").await;
    case.expire();
    repo.fail_next_puts(3);

    let token = case
        .store
        .bot_token(&tenant, &ctx(1))
        .await
        .expect("the read survives transient write errors");
    assert_eq!(
        repo.pending_put_failures(),
        0,
        "all three injected failures were hit"
    );
    assert_eq!(case.slack.refreshes_for("T1"), 1);
    assert!(case.slack.is_token_active(&token));
    let key = RecordKey::bot(tenant.key().clone());
    let stored = case.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!(
        (
            stored.version,
            stored.meta.status,
            stored.lease_owner.as_deref()
        ),
        (2, Status::Active, None)
    );

    // Another process reads the stored pair; nothing is refreshed again.
    let other = case
        .shared
        .store(
            &case.clock,
            Arc::new(case.slack.client()),
            StoreConfig::new(APP_ID),
        )
        .await;
    assert_eq!(
        other
            .bot_token(&tenant, &ctx(2))
            .await
            .unwrap()
            .expose_secret(),
        token.expose_secret()
    );
    assert_eq!(case.slack.refreshes_for("T1"), 1);
    // And the stored refresh token is the live one: the next rotation works.
    case.expire();
    let next = other.bot_token(&tenant, &ctx(3)).await.unwrap();
    assert!(case.slack.is_token_active(&next));
    assert_eq!(case.slack.refreshes_for("T1"), 2);
}

/// KMS stalls while the lease holder prepares the refresh, past its lease;
/// another process takes over and refreshes. When the stall ends, the first
/// holder finds its lease gone and never sends the (now spent) refresh token.
async fn lease_lost_in_a_kms_stall_is_not_spent_twice(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let (stalling, _, keys) = case
        .shared
        .faulty_store(&case.clock, Arc::new(case.slack.client()))
        .await;
    let tenant = case.install("T1").await;
    case.expire();
    keys.set_fault(Fault::Stall);

    let first = {
        let (store, tenant) = (stalling.clone(), tenant.clone());
        tokio::spawn(async move { store.bot_token(&tenant, &ctx(1)).await })
    };
    let stalled = std::sync::atomic::Ordering::SeqCst;
    wait_until("the lease holder stalls in KMS", || {
        keys.stalled.load(stalled) > 0
    })
    .await;
    let key = RecordKey::bot(tenant.key().clone());
    let leased = case.store.repository().get(&key).await.unwrap().unwrap();
    assert!(
        leased.lease_owner.is_some(),
        "the stalled store holds the lease"
    );

    // Its lease runs out; another process takes over and refreshes.
    case.clock.advance_secs(case.store.config().lease_secs + 1);
    let token = case.store.bot_token(&tenant, &ctx(2)).await.unwrap();
    assert_eq!(case.slack.refreshes_for("T1"), 1);

    keys.set_fault(Fault::None);
    let late = tokio::time::timeout(Duration::from_secs(20), first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        late.expect("the stalled reader gets the new token")
            .expose_secret(),
        token.expose_secret()
    );
    assert_eq!(
        case.slack.refreshes_for("T1"),
        1,
        "the stalled holder did not refresh again"
    );
    assert_eq!(
        case.slack.counters().refresh_failures,
        0,
        "no spent refresh token was sent"
    );
    let stored = case.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!(stored.meta.status, Status::Active);
    assert!(case.slack.is_token_active(&token));
}

/// A request whose invocation ends before a refresh could be written does not
/// start one: the refresh token stays unspent and the next read refreshes.
async fn request_deadline_too_short_spends_nothing(backend: Backend) {
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    let tenant = case.install("T1").await;
    case.expire();
    let short = ctx(1).with_deadline(Instant::now() + Duration::from_secs(3));

    let read = case.store.bot_token(&tenant, &short).await;
    assert!(matches!(read, Err(StoreError::Expired)), "{read:?}");
    assert_eq!(
        case.slack.refreshes_for("T1") + case.slack.counters().refresh_failures,
        0,
        "slack was not called"
    );
    let key = RecordKey::bot(tenant.key().clone());
    let record = case.store.repository().get(&key).await.unwrap().unwrap();
    assert_eq!(
        record.lease_owner, None,
        "the lease was released for the next reader"
    );

    let roomy = ctx(2).with_deadline(Instant::now() + Duration::from_secs(30));
    let token = case.store.bot_token(&tenant, &roomy).await.unwrap();
    assert!(case.slack.is_token_active(&token));
    assert_eq!(case.slack.refreshes_for("T1"), 1);
}

// ---- the matrix -----------------------------------------------------------------

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(Backend::Embedded).await;
                }
            )*
        }
        mod dynamodb {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(Backend::Dynamo).await;
                }
            )*
        }
    };
}

/// What one rotation costs the stores behind it: the record is opened under
/// one unwrapped data key and re-sealed under one new one (2 key-provider
/// calls), and a lease taken just now is not renewed before Slack (a read,
/// the lease, the conditional put, the audit record: 4 repository calls).
async fn a_refresh_is_two_key_calls_and_four_repository_calls(backend: Backend) {
    // Given an installation (with a webhook: three sealed fields) due for rotation
    let case = Case::new(backend, FakeSlackConfig::default()).await;
    case.slack.add_install(
        "code-T1",
        InstallSpec {
            with_webhook: true,
            ..InstallSpec::workspace("T1")
        },
    );
    let grant = case
        .slack
        .client()
        .exchange_code("code-T1", None)
        .await
        .unwrap();
    let tenant = VerifiedTenant::from_oauth_response(&grant).unwrap();
    let inst = Installation::from_oauth_response(grant, case.clock.now_secs()).unwrap();
    case.store.store_installation(&tenant, &inst).await.unwrap();
    let (repo, keys) = case.shared.parts().await;
    let repo = Arc::new(CountingRepository::new(repo));
    let keys = Arc::new(CountingKeyProvider::new(keys));
    let store = InstallationStore::new(repo.clone(), keys.clone(), StoreConfig::new(APP_ID))
        .with_clock(case.clock.clone() as Arc<dyn Clock>)
        .with_refresher(Arc::new(case.slack.client()));
    case.clock.advance_secs(LIFETIME - 60);

    // When the sweep rotates it
    let key = RecordKey::bot(tenant.key().clone());
    let outcome = store.rotate(&key).await.unwrap();

    // Then it was refreshed at the cost above, and every field survived
    assert_eq!(outcome, tokenkeep_installations::RotateOutcome::Refreshed);
    let counted = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (counted(&keys.decrypts), counted(&keys.generates)),
        (1, 1),
        "one unwrap, one new key"
    );
    let calls = repo.by_method();
    assert_eq!(
        calls,
        [
            ("append_audit", 1),
            ("get", 1),
            ("put", 1),
            ("try_lease", 1)
        ]
        .into_iter()
        .collect(),
        "{calls:?}"
    );
    let stored = repo.get(&key).await.unwrap().unwrap();
    assert_eq!(stored.sealed.len(), 3, "token, refresh token, webhook");
}

on_both!(
    a_refresh_is_two_key_calls_and_four_repository_calls,
    one_store_many_readers,
    many_stores_many_readers,
    due_but_valid_does_not_wait,
    crashed_lease_holder_is_taken_over,
    uninstall_during_refresh_wins,
    revoked_grant_needs_reinstall,
    slack_timeout_releases_the_lease,
    write_errors_after_slack_answered_lose_no_pair,
    lease_lost_in_a_kms_stall_is_not_spent_twice,
    request_deadline_too_short_spends_nothing,
);
