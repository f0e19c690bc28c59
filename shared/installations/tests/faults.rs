//! Dependency failures, injected at run time: KMS down or denying
//! (`FaultyKeyProvider`), DynamoDB throttled, timing out or losing every
//! conditional write, and the audit table refusing appends (`FaultyRepository`).
//! Each case shows the documented failure mode of SECURITY.md ("fail closed")
//! and then recovery once the dependency is back.
//!
//! A Slack timeout during a refresh is covered in `tests/refresh.rs`
//! (`slack_timeout_releases_the_lease`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenkeep_envelope::testing::{Fault, FaultyKeyProvider};
use tokenkeep_envelope::{
    CacheLimits, CachingKeyProvider, EnvelopeError, KeyProvider, LocalKeyProvider,
};
use tokenkeep_installations::testing::{
    FaultyRepository, ManualClock, RepoFault, emulator_repository,
};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, Outcome, ReadContext, RecordKey,
    RepoError, Repository, RotateOutcome, StoreConfig, StoreError, VerifiedTenant,
};
use tokenkeep_slack_api::SlackOAuth as _;
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};

const APP_ID: &str = "1111.2222";
const START: i64 = 1_700_000_000;
const LIFETIME: i64 = 43_200;
/// A read that waits this long is stuck (a lease left behind, a retry loop).
const STUCK: Duration = Duration::from_secs(10);

/// One store over fault-injecting storage and keys, with a fake Slack behind it.
struct Rig {
    slack: FakeSlack,
    clock: Arc<ManualClock>,
    repo: Arc<FaultyRepository>,
    kms: Arc<FaultyKeyProvider<LocalKeyProvider>>,
    store: InstallationStore,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn new(cache: CacheLimits) -> Self {
        Self::over(Arc::new(EmbeddedRepository::in_memory().unwrap()), cache).await
    }

    async fn over(inner: Arc<dyn Repository>, cache: CacheLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let kms = Arc::new(FaultyKeyProvider::new(
            LocalKeyProvider::open(dir.path(), "test").unwrap(),
        ));
        let keys: Arc<dyn KeyProvider> = Arc::new(CachingKeyProvider::new(kms.clone(), cache));
        let repo = Arc::new(FaultyRepository::new(inner).with_timeout(Duration::from_millis(300)));
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let clock = Arc::new(ManualClock::at_secs(START));
        let mut config = StoreConfig::new(APP_ID);
        config.background_refresh = false;
        let store = InstallationStore::new(repo.clone(), keys, config)
            .with_clock(clock.clone() as Arc<dyn Clock>)
            .with_refresher(Arc::new(slack.client()));
        Self {
            slack,
            clock,
            repo,
            kms,
            store,
            _dir: dir,
        }
    }

    /// Installs `team` (bot with rotation, installing user U1, incoming webhook)
    /// through the fake's code exchange, as the OAuth callback does.
    async fn install(&self, team: &str) -> VerifiedTenant {
        let code = format!("code-{team}-{}", rand_suffix());
        let spec = InstallSpec {
            user_id: "U1".into(),
            with_user_token: true,
            with_webhook: true,
            ..InstallSpec::workspace(team)
        };
        self.slack.add_install(&code, spec);
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let inst = Installation::from_oauth_response(resp, self.clock.now_secs()).unwrap();
        self.store.store_installation(&tenant, &inst).await.unwrap();
        tenant
    }

    async fn audit(&self, tenant: &VerifiedTenant) -> Vec<tokenkeep_installations::AuditRecord> {
        self.store
            .repository()
            .query_audit(Some(&tenant.key().pk()), 0, 10_000)
            .await
            .unwrap()
    }

    /// Reads all three secrets; each result as Ok(()) or the error.
    async fn read_all(&self, tenant: &VerifiedTenant) -> Vec<Result<(), StoreError>> {
        let c = ctx();
        within(async {
            vec![
                self.store.bot_token(tenant, &c).await.map(drop),
                self.store.user_token(tenant, "U1", &c).await.map(drop),
                self.store.incoming_webhook_url(tenant, &c).await.map(drop),
            ]
        })
        .await
    }
}

fn ctx() -> ReadContext {
    ReadContext::new("faults-test", "req-faults", "fault injection")
}

fn rand_suffix() -> u32 {
    rand::random()
}

/// Fails the test instead of hanging it.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STUCK, f)
        .await
        .expect("a store call is stuck")
}

// ---- KMS -------------------------------------------------------------------------

/// KMS down or denying, with a cold data-key cache (and with the cache off):
/// every token read fails closed with the provider's error, each failure is
/// audited, and reads work again as soon as KMS is back.
#[tokio::test]
async fn kms_down_reads_fail_closed_with_an_audit_record_then_recover() {
    for cache in [CacheLimits::default(), CacheLimits::disabled()] {
        for fault in [Fault::Unavailable, Fault::AccessDenied] {
            // Given an installation, and a process whose data-key cache is cold
            let rig = Rig::new(cache).await;
            let tenant = rig.install("T0KMS").await;
            // When KMS fails
            rig.kms.set_fault(fault);
            let results = rig.read_all(&tenant).await;
            // Then each read fails with the provider's error, never a token
            for r in &results {
                match (fault, r) {
                    (
                        Fault::Unavailable,
                        Err(StoreError::Envelope(EnvelopeError::Unavailable(_))),
                    ) => {}
                    (
                        Fault::AccessDenied,
                        Err(StoreError::Envelope(EnvelopeError::AccessDenied)),
                    ) => {}
                    other => panic!("{cache:?} {fault:?}: {other:?}"),
                }
            }
            // And each failure left an audit record saying so
            let audit = rig.audit(&tenant).await;
            assert_eq!(audit.len(), 3, "{audit:?}");
            assert!(
                audit
                    .iter()
                    .all(|a| a.outcome == Outcome::Failed && a.version == 1),
                "{audit:?}"
            );
            // And when KMS is back, the same reads succeed (no failure was cached)
            rig.kms.set_fault(Fault::None);
            assert!(rig.read_all(&tenant).await.iter().all(Result::is_ok));
            let audit = rig.audit(&tenant).await;
            assert_eq!(audit.iter().filter(|a| a.outcome == Outcome::Ok).count(), 3);
        }
    }
}

/// GenerateDataKey failing: an install stores nothing sealed under no key.
#[tokio::test]
async fn kms_down_during_install_stores_no_record() {
    let rig = Rig::new(CacheLimits::default()).await;
    rig.kms.set_fault(Fault::Unavailable);
    let code = "code-T0KMSI";
    rig.slack
        .add_install(code, InstallSpec::workspace("T0KMSI"));
    let resp = rig.slack.client().exchange_code(code, None).await.unwrap();
    let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
    let inst = Installation::from_oauth_response(resp, rig.clock.now_secs()).unwrap();
    // When the install is stored while KMS is down
    let r = rig.store.store_installation(&tenant, &inst).await;
    // Then it fails with the provider's error and no record exists
    assert!(
        matches!(r, Err(StoreError::Envelope(EnvelopeError::Unavailable(_)))),
        "{r:?}"
    );
    assert!(
        rig.store
            .repository()
            .list_tenant(&tenant.key().pk())
            .await
            .unwrap()
            .is_empty()
    );
    // And once KMS is back the same install succeeds
    rig.kms.set_fault(Fault::None);
    rig.store.store_installation(&tenant, &inst).await.unwrap();
    assert!(rig.store.bot_token(&tenant, &ctx()).await.is_ok());
}

/// KMS down while an expired token needs its refresh: the read fails before
/// Slack is called, the refresh lease is released (not left to run out while
/// every reader waits), and the first read after KMS is back refreshes once.
#[tokio::test]
async fn kms_down_during_a_refresh_fails_before_slack_and_releases_the_lease() {
    // Given an installed tenant whose token has expired, and KMS down
    let rig = Rig::new(CacheLimits::disabled()).await;
    let tenant = rig.install("T0KMSR").await;
    rig.clock.advance_secs(LIFETIME + 1);
    rig.kms.set_fault(Fault::Unavailable);
    // When a reader needs the token
    let r = within(rig.store.bot_token(&tenant, &ctx())).await;
    // Then it fails closed, Slack was not asked, and the lease is free again
    assert!(
        matches!(r, Err(StoreError::Envelope(EnvelopeError::Unavailable(_)))),
        "{r:?}"
    );
    assert_eq!(
        rig.slack.calls("oauth.v2.access"),
        1,
        "only the install's exchange"
    );
    let record = rig
        .store
        .repository()
        .get(&RecordKey::bot(tenant.key().clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (record.lease_owner.as_deref(), record.lease_until),
        (None, None),
        "lease left behind"
    );
    assert!(
        rig.audit(&tenant)
            .await
            .iter()
            .any(|a| a.outcome == Outcome::RefreshFailed)
    );
    // And when KMS is back, the next read refreshes once and gets a live token, at once
    rig.kms.set_fault(Fault::None);
    let started = Instant::now();
    let token = within(rig.store.bot_token(&tenant, &ctx())).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for a stale lease",
        started.elapsed()
    );
    assert!(rig.slack.is_token_active(&token));
    assert_eq!(rig.slack.refreshes_for("T0KMSR"), 1);
}

/// KMS can decrypt but not generate: the refresh must fail before Slack is
/// asked, because once Slack answers the old refresh token is spent and a new
/// pair that can't be sealed would be lost (the installation would need a
/// reinstall). Generating the new data key first makes that impossible.
#[tokio::test]
async fn kms_generate_down_during_a_refresh_never_spends_the_refresh_token() {
    let rig = Rig::new(CacheLimits::disabled()).await;
    let tenant = rig.install("T0KMSG").await;
    rig.clock.advance_secs(LIFETIME + 1);
    rig.kms.set_fault(Fault::GenerateUnavailable);
    let r = within(rig.store.bot_token(&tenant, &ctx())).await;
    assert!(
        matches!(r, Err(StoreError::Envelope(EnvelopeError::Unavailable(_)))),
        "{r:?}"
    );
    assert_eq!(
        rig.slack.calls("oauth.v2.access"),
        1,
        "only the install's exchange: the refresh token is unspent"
    );
    rig.kms.set_fault(Fault::None);
    let token = within(rig.store.bot_token(&tenant, &ctx())).await.unwrap();
    assert!(rig.slack.is_token_active(&token));
    assert_eq!(rig.slack.refreshes_for("T0KMSG"), 1);
}

// ---- audit -----------------------------------------------------------------------

/// SECURITY.md: "Audit write fails → the token read fails: there are no
/// unaudited reads." For every kind of secret, and recovering after.
#[tokio::test]
async fn audit_append_failing_fails_every_token_read() {
    // Given an installation, and an audit table that refuses appends
    let rig = Rig::new(CacheLimits::default()).await;
    let tenant = rig.install("T0AUD").await;
    rig.repo.set_fault(RepoFault::AuditFails);
    // When the bot token, the user token and the webhook URL are read
    let results = rig.read_all(&tenant).await;
    // Then each read fails with the storage error, handing out nothing
    for r in &results {
        assert!(
            matches!(r, Err(StoreError::Repository(RepoError::Unavailable(_)))),
            "{r:?}"
        );
    }
    assert!(rig.audit(&tenant).await.is_empty());
    // And when the audit table is back, reads work and are audited again
    rig.repo.set_fault(RepoFault::None);
    assert!(rig.read_all(&tenant).await.iter().all(Result::is_ok));
    assert_eq!(rig.audit(&tenant).await.len(), 3);
}

/// The events path's read: the audit record and the event's dedupe claim are
/// one write, so an audit failure claims nothing and Slack's retry of the
/// event, once the table is back, gets the token (it is not taken for a
/// duplicate); the retry after that is one.
#[tokio::test]
async fn audit_failure_on_an_event_read_claims_nothing() {
    let rig = Rig::new(CacheLimits::default()).await;
    let tenant = rig.install("T0AUDE").await;
    rig.repo.set_fault(RepoFault::AuditFails);
    let r = within(rig.store.bot_token_for_event(&tenant, &ctx(), "Ev0AUD")).await;
    assert!(
        matches!(r, Err(StoreError::Repository(RepoError::Unavailable(_)))),
        "{r:?}"
    );
    rig.repo.set_fault(RepoFault::None);
    let first = within(rig.store.bot_token_for_event(&tenant, &ctx(), "Ev0AUD"))
        .await
        .unwrap();
    assert!(first.is_some(), "the retry is processed, not dropped");
    let again = within(rig.store.bot_token_for_event(&tenant, &ctx(), "Ev0AUD"))
        .await
        .unwrap();
    assert!(again.is_none(), "the next retry is a duplicate");
    assert_eq!(rig.audit(&tenant).await.len(), 1, "one audited hand-out");
}

/// The audit table down during a refresh: the read fails, but the refreshed
/// pair was persisted first (the old refresh token is spent at Slack), so the
/// next read after recovery uses it without refreshing again.
#[tokio::test]
async fn audit_down_during_a_refresh_fails_the_read_but_keeps_the_new_pair() {
    let rig = Rig::new(CacheLimits::default()).await;
    let tenant = rig.install("T0AUDR").await;
    rig.clock.advance_secs(LIFETIME + 1);
    rig.repo.set_fault(RepoFault::AuditFails);
    let r = within(rig.store.bot_token(&tenant, &ctx())).await;
    assert!(
        matches!(r, Err(StoreError::Repository(RepoError::Unavailable(_)))),
        "{r:?}"
    );
    assert_eq!(rig.slack.refreshes_for("T0AUDR"), 1);
    rig.repo.set_fault(RepoFault::None);
    let token = within(rig.store.bot_token(&tenant, &ctx())).await.unwrap();
    assert!(rig.slack.is_token_active(&token));
    assert_eq!(rig.slack.refreshes_for("T0AUDR"), 1, "no second refresh");
    assert_eq!(rig.slack.counters().refresh_failures, 0);
}

// ---- DynamoDB --------------------------------------------------------------------

/// Throttling: reads, installs, OAuth states and event ids fail with
/// `StoreError::Repository(RepoError::Unavailable)` (handlers answer a
/// generic 5xx), and everything works again when it stops.
async fn throttling_is_a_clear_error_then_recovers(inner: Arc<dyn Repository>) {
    let rig = Rig::over(inner, CacheLimits::default()).await;
    let tenant = rig
        .install(&format!("T0THR{}", rand_suffix() % 10_000))
        .await;
    let unavailable = |r: &Result<(), StoreError>| {
        matches!(r, Err(StoreError::Repository(RepoError::Unavailable(_))))
    };
    rig.repo.set_fault(RepoFault::Throttle);
    for r in rig.read_all(&tenant).await {
        assert!(unavailable(&r), "{r:?}");
    }
    let reinstall = async {
        let code = format!("code-re-{}", rand_suffix());
        rig.slack.add_install(
            &code,
            InstallSpec::workspace(tenant.key().team_id().unwrap()),
        );
        let resp = rig.slack.client().exchange_code(&code, None).await.unwrap();
        rig.store
            .store_installation(
                &tenant,
                &Installation::from_oauth_response(resp, START).unwrap(),
            )
            .await
    };
    let r = reinstall.await;
    assert!(unavailable(&r), "{r:?}");
    let r = rig.store.issue_state().await.map(drop);
    assert!(unavailable(&r), "{r:?}");
    let r = rig.store.record_event("Ev0THR").await.map(drop);
    assert!(unavailable(&r), "{r:?}");
    let r = rig.store.purge_tenant(&tenant).await.map(drop);
    assert!(unavailable(&r), "{r:?}");
    assert!(rig.repo.injected.load(std::sync::atomic::Ordering::SeqCst) >= 7);

    rig.repo.set_fault(RepoFault::None);
    assert!(
        rig.read_all(&tenant).await.iter().all(Result::is_ok),
        "recovered"
    );
    assert!(
        rig.store.record_event("Ev0THR").await.unwrap(),
        "the failed claim left nothing behind"
    );
    let audit = rig.audit(&tenant).await;
    assert_eq!(
        audit.len(),
        3,
        "only the reads that happened are audited: {audit:?}"
    );
}

#[tokio::test]
async fn throttling_is_a_clear_error_then_recovers_embedded() {
    throttling_is_a_clear_error_then_recovers(Arc::new(EmbeddedRepository::in_memory().unwrap()))
        .await;
}

#[tokio::test]
async fn throttling_is_a_clear_error_then_recovers_dynamodb_on_the_emulator() {
    let (repo, ..) = emulator_repository().await;
    throttling_is_a_clear_error_then_recovers(Arc::new(repo)).await;
}

/// A call that times out fails after its wait with the same clear error, and
/// a read costs one wait, not one per retry.
#[tokio::test]
async fn storage_timeout_fails_after_the_wait_with_unavailable() {
    let rig = Rig::new(CacheLimits::default()).await;
    let tenant = rig.install("T0TMO").await;
    rig.repo.set_fault(RepoFault::Timeout);
    let started = Instant::now();
    let r = within(rig.store.bot_token(&tenant, &ctx())).await;
    let waited = started.elapsed();
    assert!(
        matches!(r, Err(StoreError::Repository(RepoError::Unavailable(_)))),
        "{r:?}"
    );
    // get (timed out) + the audit append of the failure (timed out): two waits of 300 ms
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    rig.repo.set_fault(RepoFault::None);
    assert!(rig.store.bot_token(&tenant, &ctx()).await.is_ok());
}

/// Every conditional write losing its race: a reinstall is a `Conflict` that
/// overwrites nothing, and the rotation sweep leaves the record to the
/// (apparent) lease holder without calling Slack.
#[tokio::test]
async fn failed_conditional_writes_never_overwrite() {
    let rig = Rig::new(CacheLimits::default()).await;
    let tenant = rig.install("T0CND").await;
    let before = rig.store.bot_token(&tenant, &ctx()).await.unwrap();
    rig.repo.set_fault(RepoFault::ConditionFailed);
    // When a reinstall races and loses
    let code = "code-T0CND-2";
    rig.slack.add_install(code, InstallSpec::workspace("T0CND"));
    let resp = rig.slack.client().exchange_code(code, None).await.unwrap();
    let r = rig
        .store
        .store_installation(
            &tenant,
            &Installation::from_oauth_response(resp, START).unwrap(),
        )
        .await;
    // Then it is a conflict and the stored token is unchanged
    assert!(matches!(r, Err(StoreError::Conflict)), "{r:?}");
    assert_eq!(
        rig.store
            .bot_token(&tenant, &ctx())
            .await
            .unwrap()
            .fingerprint(),
        before.fingerprint()
    );
    // And a sweep of the (due) record backs off without asking Slack
    rig.clock.advance_secs(LIFETIME - 60);
    let calls = rig.slack.calls("oauth.v2.access");
    let out = rig
        .store
        .rotate(&RecordKey::bot(tenant.key().clone()))
        .await
        .unwrap();
    assert_eq!(out, RotateOutcome::HeldElsewhere);
    assert_eq!(rig.slack.calls("oauth.v2.access"), calls);
    rig.repo.set_fault(RepoFault::None);
    assert_eq!(
        rig.store
            .rotate(&RecordKey::bot(tenant.key().clone()))
            .await
            .unwrap(),
        RotateOutcome::Refreshed
    );
}
