//! The rotation sweep against the fake Slack (single-use refresh tokens, so a
//! token refreshed twice shows up in `refreshes_for`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

use tokenkeep_envelope::{KeyProvider, KmsKeyProvider};
use tokenkeep_installations::testing::{emulator_kms_key, emulator_repository, local_keys};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, ManualClock, RecordKey, Repository,
    StoreConfig, VerifiedTenant,
};
use tokenkeep_rotation::{SweepConfig, SweepReport, sweep};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{SlackClient, SlackOAuth};

const APP_ID: &str = "1111.2222";
const T0: i64 = 1_700_000_000;
const HOUR: i64 = 3600;

fn cfg() -> SweepConfig {
    SweepConfig {
        concurrency: 8,
        page: 37,
        stop_before: Duration::from_secs(5),
    }
}

fn store(
    repo: Arc<dyn Repository>,
    keys: Arc<dyn KeyProvider>,
    clock: &Arc<ManualClock>,
    slack: &FakeSlack,
) -> InstallationStore {
    InstallationStore::new(repo, keys, StoreConfig::new(APP_ID))
        .with_clock(clock.clone() as Arc<dyn Clock>)
        .with_refresher(Arc::new(slack.client()))
}

/// Installs `team` through `slack`'s code exchange at the store's current time.
/// (`client` is built once per fleet: building one loads the TLS roots.)
async fn install(
    slack: &FakeSlack,
    client: &SlackClient,
    store: &InstallationStore,
    team: &str,
) -> VerifiedTenant {
    let code = format!("code-{team}");
    slack.add_install(&code, InstallSpec::workspace(team));
    let resp = client.exchange_code(&code, None).await.unwrap();
    let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
    let inst = Installation::from_oauth_response(resp, store.clock().now_secs()).unwrap();
    store.store_installation(&tenant, &inst).await.unwrap();
    tenant
}

/// Teams by what the sweep at `T0 + 13 h` (window 2 h) should do with them.
struct Fleet {
    expired: Vec<String>,
    due_soon: Vec<String>,
    not_due: Vec<String>,
    non_rotating: Vec<String>,
}

impl Fleet {
    fn due(&self) -> impl Iterator<Item = &String> {
        self.expired.iter().chain(&self.due_soon)
    }
    fn untouched(&self) -> impl Iterator<Item = &String> {
        self.not_due.iter().chain(&self.non_rotating)
    }
}

/// Given installs at different times: tokens (12 h lifetime) that expired
/// before the sweep, that expire inside the window, that expire well after it,
/// and tokens that don't rotate at all (a second fake with rotation off).
async fn install_fleet(
    rotating: &FakeSlack,
    static_slack: &FakeSlack,
    store: &InstallationStore,
    clock: &ManualClock,
    [expired, due_soon, not_due, non_rotating]: [usize; 4],
) -> Fleet {
    let names = |prefix: &str, n: usize| {
        (0..n)
            .map(|i| format!("T{prefix}{i:05}"))
            .collect::<Vec<_>>()
    };
    let fleet = Fleet {
        expired: names("X", expired),
        due_soon: names("D", due_soon),
        not_due: names("N", not_due),
        non_rotating: names("S", non_rotating),
    };
    install_all(rotating, store, &fleet.expired).await; // expires T0 + 12 h
    install_all(static_slack, store, &fleet.non_rotating).await;
    clock.advance_secs(2 * HOUR);
    install_all(rotating, store, &fleet.due_soon).await; // expires T0 + 14 h
    clock.advance_secs(8 * HOUR);
    install_all(rotating, store, &fleet.not_due).await; // expires T0 + 22 h
    clock.advance_secs(3 * HOUR); // now T0 + 13 h
    fleet
}

async fn install_all(slack: &FakeSlack, store: &InstallationStore, teams: &[String]) {
    let client = &slack.client();
    futures::stream::iter(teams)
        .for_each_concurrent(32, |team| async move {
            install(slack, client, store, team).await;
        })
        .await;
}

async fn versions(store: &InstallationStore, teams: impl Iterator<Item = &String>) -> Vec<u64> {
    let mut out = Vec::new();
    for team in teams {
        let key =
            RecordKey::bot(tokenkeep_installations::TenantKey::new(None, Some(team)).unwrap());
        out.push(store.repository().get(&key).await.unwrap().unwrap().version);
    }
    out
}

fn assert_each_due_refreshed_once(slack: &FakeSlack, fleet: &Fleet) {
    for team in fleet.due() {
        assert_eq!(
            slack.refreshes_for(team),
            1,
            "{team} refreshed exactly once"
        );
    }
    for team in &fleet.not_due {
        assert_eq!(slack.refreshes_for(team), 0, "{team} is not due");
    }
}

async fn fakes(latency_ms: u64) -> (FakeSlack, FakeSlack) {
    let latency = Duration::from_millis(latency_ms);
    let rotating = FakeSlack::start(FakeSlackConfig {
        latency,
        ..FakeSlackConfig::default()
    })
    .await;
    let static_slack = FakeSlack::start(FakeSlackConfig {
        rotation: false,
        ..FakeSlackConfig::default()
    })
    .await;
    (rotating, static_slack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_refreshes_every_due_token_once_and_nothing_else() {
    let (slack, static_slack) = fakes(0).await;
    let clock = Arc::new(ManualClock::at_secs(T0));
    let (keys, _dir) = local_keys();
    let store = store(
        Arc::new(EmbeddedRepository::in_memory().unwrap()),
        keys,
        &clock,
        &slack,
    );
    let fleet = install_fleet(&slack, &static_slack, &store, &clock, [150, 350, 400, 100]).await;
    let untouched_before = versions(&store, fleet.untouched()).await;

    let report = sweep(&store, clock.now_secs(), None, &cfg()).await;

    assert_eq!(
        report,
        SweepReport {
            due: 500,
            refreshed: 500,
            elapsed_ms: report.elapsed_ms,
            ..SweepReport::default()
        },
    );
    assert_each_due_refreshed_once(&slack, &fleet);
    assert_eq!(slack.counters().refreshes, 500);
    assert_eq!(static_slack.counters().refreshes, 0);
    assert_eq!(
        versions(&store, fleet.untouched()).await,
        untouched_before,
        "records that weren't due are untouched"
    );
    assert!(
        versions(&store, fleet.due()).await.iter().all(|v| *v == 2),
        "each due record written once"
    );

    // A second run finds nothing: the refreshed tokens left the window.
    let again = sweep(&store, clock.now_secs(), None, &cfg()).await;
    assert_eq!(again.due, 0);
    assert_eq!(slack.counters().refreshes, 500);
}

/// Two sweeps at once (two stores: two lease owners) over one repository.
async fn two_concurrent_sweeps(
    repo: Arc<dyn Repository>,
    keys: Arc<dyn KeyProvider>,
    sizes: [usize; 4],
) {
    let (slack, static_slack) = fakes(20).await;
    let clock = Arc::new(ManualClock::at_secs(T0));
    let first = store(repo.clone(), keys.clone(), &clock, &slack);
    let second = store(repo, keys, &clock, &slack);
    let fleet = install_fleet(&slack, &static_slack, &first, &clock, sizes).await;
    let due = sizes[0] + sizes[1];

    let (now, cfg) = (clock.now_secs(), cfg());
    let (a, b) = tokio::join!(
        sweep(&first, now, None, &cfg),
        sweep(&second, now, None, &cfg)
    );

    assert_each_due_refreshed_once(&slack, &fleet);
    assert_eq!(slack.counters().refreshes as usize, due);
    assert_eq!(a.refreshed + b.refreshed, due, "{a:?} {b:?}");
    assert_eq!(a.failed + b.failed, 0, "{a:?} {b:?}");
    // Whatever one sweep refreshed, the other skipped (held) or found fresh.
    assert_eq!(a.refreshed + a.skipped_held + a.not_due, a.due);
    assert_eq!(b.refreshed + b.skipped_held + b.not_due, b.due);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_sweeps_embedded() {
    let (keys, _dir) = local_keys();
    two_concurrent_sweeps(
        Arc::new(EmbeddedRepository::in_memory().unwrap()),
        keys,
        [100, 200, 150, 50],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_sweeps_dynamodb() {
    let (repo, _, _, _) = emulator_repository().await;
    let (kms, key) = emulator_kms_key().await;
    two_concurrent_sweeps(
        Arc::new(repo),
        Arc::new(KmsKeyProvider::new(kms, key)),
        [20, 30, 30, 20],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passed_deadline_starts_nothing() {
    let (slack, static_slack) = fakes(0).await;
    let clock = Arc::new(ManualClock::at_secs(T0));
    let (keys, _dir) = local_keys();
    let store = store(
        Arc::new(EmbeddedRepository::in_memory().unwrap()),
        keys,
        &clock,
        &slack,
    );
    install_fleet(&slack, &static_slack, &store, &clock, [5, 5, 5, 0]).await;

    let report = sweep(&store, clock.now_secs(), Some(Instant::now()), &cfg()).await;

    assert!(report.deadline_reached, "{report:?}");
    assert_eq!(
        (
            report.refreshed,
            report.skipped_held,
            report.not_due,
            report.gone,
            report.failed
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(slack.counters().refreshes, 0, "no refresh started");
    // The next run, with time to spare, takes them.
    let later = sweep(
        &store,
        clock.now_secs(),
        Some(Instant::now() + Duration::from_secs(60)),
        &cfg(),
    )
    .await;
    assert!(!later.deadline_reached);
    assert_eq!(later.refreshed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_deadline_stops_starting_work_and_defers_the_rest() {
    let (slack, static_slack) = fakes(100).await;
    let clock = Arc::new(ManualClock::at_secs(T0));
    let (keys, _dir) = local_keys();
    let store = store(
        Arc::new(EmbeddedRepository::in_memory().unwrap()),
        keys,
        &clock,
        &slack,
    );
    install_fleet(&slack, &static_slack, &store, &clock, [0, 200, 0, 0]).await;

    // Time for a few rounds of 2 x 100 ms Slack calls, not for 200 refreshes at 2 in flight.
    let cfg = SweepConfig {
        concurrency: 2,
        page: 50,
        stop_before: Duration::from_millis(100),
    };
    let report = sweep(
        &store,
        clock.now_secs(),
        Some(Instant::now() + Duration::from_millis(600)),
        &cfg,
    )
    .await;

    assert!(report.deadline_reached, "{report:?}");
    assert!(report.refreshed > 0 && report.refreshed < 200, "{report:?}");
    assert_eq!(
        slack.counters().refreshes as usize,
        report.refreshed,
        "a started refresh is finished, not abandoned"
    );
    let rest = sweep(
        &store,
        clock.now_secs(),
        None,
        &SweepConfig {
            concurrency: 8,
            ..cfg
        },
    )
    .await;
    assert_eq!(report.refreshed + rest.refreshed, 200, "{rest:?}");
    assert_eq!(slack.counters().refreshes, 200);
}
