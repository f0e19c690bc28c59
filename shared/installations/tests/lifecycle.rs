//! Install and uninstall under races and faults: a late lifecycle event never
//! wipes a reinstall, an install an uninstall overtook never reopens the
//! tenant, and a failed install leaves nothing behind (its tokens revoked at
//! Slack). Installs go through the fake Slack's code exchange, as the OAuth
//! callback does; each case runs on the embedded repository and on DynamoDB on
//! the local emulator.

use std::sync::Arc;

use tokenkeep_envelope::KmsKeyProvider;
use tokenkeep_installations::testing::{
    FaultyRepository, emulator_kms_key, emulator_repository, local_keys,
};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, LifecycleEvent, LifecycleOutcome,
    ManualClock, ReadContext, RecordKey, Repository, StoreConfig, StoreError, VerifiedTenant,
};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{AccessToken, OAuthV2Response, SlackOAuth};

const START: i64 = 1_700_000_000;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Embedded,
    Dynamo,
}

struct Case {
    slack: FakeSlack,
    clock: Arc<ManualClock>,
    repo: Arc<FaultyRepository>,
    store: InstallationStore,
    _dir: Option<tempfile::TempDir>,
}

impl Case {
    async fn new(backend: Backend) -> Self {
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let clock = Arc::new(ManualClock::at_secs(START));
        let (inner, keys, dir): (
            Arc<dyn Repository>,
            Arc<dyn tokenkeep_envelope::KeyProvider>,
            _,
        ) = match backend {
            Backend::Embedded => {
                let (keys, dir) = local_keys();
                (
                    Arc::new(EmbeddedRepository::in_memory().unwrap()),
                    keys,
                    Some(dir),
                )
            }
            Backend::Dynamo => {
                let (repo, _, _, _) = emulator_repository().await;
                let (kms, key) = emulator_kms_key().await;
                (
                    Arc::new(repo),
                    Arc::new(KmsKeyProvider::new(kms, key)),
                    None,
                )
            }
        };
        let repo = Arc::new(FaultyRepository::new(inner));
        let store = InstallationStore::new(repo.clone(), keys, StoreConfig::new("A1"))
            .with_clock(clock.clone() as Arc<dyn Clock>)
            .with_refresher(Arc::new(slack.client()));
        Self {
            slack,
            clock,
            repo,
            store,
            _dir: dir,
        }
    }

    /// The OAuth callback's first half: Slack's answer to a code exchange made now.
    async fn exchange(
        &self,
        team: &str,
        n: usize,
    ) -> (VerifiedTenant, Installation, OAuthV2Response) {
        let code = format!("code-{team}-{n}");
        let spec = InstallSpec {
            user_id: "U1".into(),
            user_scopes: "search:read".into(),
            with_user_token: true,
            ..InstallSpec::workspace(team)
        };
        self.slack.add_install(&code, spec);
        let started_ms = self.clock.now_millis();
        let resp = self
            .slack
            .client()
            .exchange_code(&code, None)
            .await
            .unwrap();
        let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
        let mut inst = Installation::from_oauth_response(resp.clone(), started_ms / 1000).unwrap();
        inst.exchange_started_ms = started_ms;
        // The exchange takes time; anything after it happens later.
        self.clock.advance_millis(1);
        (tenant, inst, resp.into())
    }

    async fn install(&self, team: &str, n: usize) -> VerifiedTenant {
        let (tenant, inst, _) = self.exchange(team, n).await;
        self.store.store_installation(&tenant, &inst).await.unwrap();
        tenant
    }

    async fn bot_token(&self, tenant: &VerifiedTenant) -> Result<AccessToken, StoreError> {
        self.store
            .bot_token(tenant, &ReadContext::new("test", "req", "lifecycle test"))
            .await
    }
}

fn event(id: &str, at: i64) -> LifecycleEvent<'_> {
    LifecycleEvent {
        event_id: id,
        event_time: at,
    }
}

/// Uninstall, reinstall a second later, then Slack's retry of the same
/// `app_uninstalled` (and a `tokens_revoked` sent with it, arriving late):
/// the reinstall survives both.
async fn late_lifecycle_events_do_not_wipe_a_reinstall(backend: Backend) {
    let case = Case::new(backend).await;
    let tenant = case.install("T1", 1).await;
    let sent_at = case.clock.now_secs() + 5;
    case.clock.advance_secs(5);
    let uninstall = event("Ev-uninstall", sent_at);
    assert_eq!(
        case.store
            .apply_app_uninstalled(&tenant, &uninstall)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { records: 2 }
    );

    case.clock.advance_secs(1);
    case.install("T1", 2).await;

    // The retry: same event id, same event_time.
    assert_eq!(
        case.store
            .apply_app_uninstalled(&tenant, &uninstall)
            .await
            .unwrap(),
        LifecycleOutcome::Duplicate
    );
    // A different delivery of an event sent before the reinstall.
    let late = event("Ev-uninstall-other", sent_at);
    assert_eq!(
        case.store
            .apply_app_uninstalled(&tenant, &late)
            .await
            .unwrap(),
        LifecycleOutcome::Stale
    );
    let revoked = event("Ev-revoked", sent_at);
    let users = vec!["U1".to_owned()];
    assert_eq!(
        case.store
            .apply_tokens_revoked(&tenant, &revoked, &users, true)
            .await
            .unwrap(),
        LifecycleOutcome::Stale
    );
    assert_eq!(
        case.store.stale_lifecycle_events(),
        3,
        "each stale event counted (bot, user, tenant)"
    );

    let token = case
        .bot_token(&tenant)
        .await
        .expect("the reinstall survives");
    assert!(case.slack.is_token_active(&token));
    assert_eq!(case.store.list_tenant(tenant.key()).await.unwrap().len(), 2);

    // An uninstall sent after the reinstall does purge it.
    case.clock.advance_secs(10);
    let real = event("Ev-uninstall-2", case.clock.now_secs());
    assert_eq!(
        case.store
            .apply_app_uninstalled(&tenant, &real)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { records: 2 }
    );
    assert!(matches!(
        case.bot_token(&tenant).await,
        Err(StoreError::NotInstalled)
    ));
}

/// `tokens_revoked` naming one user: that record goes, the bot stays; a retry is recognised.
async fn tokens_revoked_removes_only_what_it_names(backend: Backend) {
    let case = Case::new(backend).await;
    let tenant = case.install("T1", 1).await;
    case.clock.advance_secs(5);
    let revoked = event("Ev-1", case.clock.now_secs());
    let users = vec!["U1".to_owned(), "not a user id".to_owned()];
    let outcome = case
        .store
        .apply_tokens_revoked(&tenant, &revoked, &users, false)
        .await
        .unwrap();
    assert_eq!(outcome, LifecycleOutcome::Applied { records: 1 });
    assert_eq!(
        case.store
            .apply_tokens_revoked(&tenant, &revoked, &users, false)
            .await
            .unwrap(),
        LifecycleOutcome::Duplicate
    );
    assert!(case.bot_token(&tenant).await.is_ok());
    let user = case
        .store
        .user_token(&tenant, "U1", &ReadContext::new("test", "req", "t"))
        .await;
    assert!(matches!(user, Err(StoreError::NotInstalled)), "{user:?}");
}

/// The code was exchanged, then `app_uninstalled` purged the tenant before
/// the write: the install fails, the tenant stays purged, and the tokens
/// Slack issued are revoked.
async fn install_overtaken_by_an_uninstall_does_not_resurrect(backend: Backend) {
    let case = Case::new(backend).await;
    let tenant = case.install("T1", 1).await;
    case.clock.advance_secs(60);
    let (_, inst, resp) = case.exchange("T1", 2).await;
    let uninstall = event("Ev-u", case.clock.now_secs());
    assert!(matches!(
        case.store
            .apply_app_uninstalled(&tenant, &uninstall)
            .await
            .unwrap(),
        LifecycleOutcome::Applied { .. }
    ));

    let result = case.store.store_installation(&tenant, &inst).await;
    assert!(
        matches!(result, Err(StoreError::PurgedDuringInstall)),
        "{result:?}"
    );
    let state = case
        .store
        .repository()
        .tenant_state(&tenant.key().pk())
        .await
        .unwrap()
        .unwrap();
    assert!(state.purged, "the tenant was not reopened");
    assert!(
        case.store
            .list_tenant(tenant.key())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        !case
            .slack
            .is_token_active(resp.access_token.as_ref().unwrap()),
        "the bot token was revoked"
    );
    let user_token = resp
        .authed_user
        .as_ref()
        .unwrap()
        .access_token
        .as_ref()
        .unwrap();
    assert!(
        !case.slack.is_token_active(user_token),
        "the user token was revoked"
    );

    // Installing again (a new exchange, after the uninstall) works.
    case.clock.advance_secs(1);
    case.install("T1", 3).await;
    assert!(case.bot_token(&tenant).await.is_ok());
}

/// The bot record was written, the user record's write failed: nothing of
/// the install is left, and both new tokens are revoked at Slack.
async fn failed_install_leaves_nothing_half_done(backend: Backend) {
    let case = Case::new(backend).await;
    let (tenant, inst, resp) = case.exchange("T1", 1).await;
    case.repo.fail_puts_after(1, 1);

    let result = case.store.store_installation(&tenant, &inst).await;
    assert!(
        matches!(result, Err(StoreError::Repository(_))),
        "{result:?}"
    );
    assert!(
        case.store
            .list_tenant(tenant.key())
            .await
            .unwrap()
            .is_empty(),
        "no bot record without its user record"
    );
    assert!(
        case.store
            .repository()
            .get(&RecordKey::bot(tenant.key().clone()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !case
            .slack
            .is_token_active(resp.access_token.as_ref().unwrap())
    );
    assert!(
        !case.slack.is_token_active(
            resp.authed_user
                .as_ref()
                .unwrap()
                .access_token
                .as_ref()
                .unwrap()
        )
    );
    assert_eq!(case.slack.counters().revokes, 2);
}

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Embedded).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::Backend::Dynamo).await;
                }
            )*
        }
    };
}

on_both!(
    late_lifecycle_events_do_not_wipe_a_reinstall,
    tokens_revoked_removes_only_what_it_names,
    install_overtaken_by_an_uninstall_does_not_resurrect,
    failed_install_leaves_nothing_half_done,
);
