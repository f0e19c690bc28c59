//! Sweep benchmark (not a timed test): N due installations on the embedded
//! store, the fake Slack answering every call after a simulated latency.
//! Prints wall time, refreshes per token (must be 1.0) and storage / key
//! provider calls per refresh.
//!
//! cargo run --release -p tokenkeep-rotation --example sweep_bench -- [installs=10000] [concurrency=64] [latency_ms=20] [embedded|emulator]
//!
//! `emulator` puts the installations on DynamoDB (moto at `AWS_ENDPOINT_URL`)
//! instead of the embedded store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokenkeep_envelope::testing::CountingKeyProvider;
use tokenkeep_envelope::{KeyProvider, LocalKeyProvider};
use tokenkeep_installations::testing::{CountingRepository, emulator_repository};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, Installation, InstallationStore, ManualClock, Repository,
    StoreConfig, VerifiedTenant,
};
use tokenkeep_rotation::{SweepConfig, sweep};
use tokenkeep_slack_api::SlackOAuth;
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let installs = arg(1, 10_000) as usize;
    let concurrency = arg(2, 64) as usize;
    let latency = Duration::from_millis(arg(3, 20));

    let slack = FakeSlack::start(FakeSlackConfig {
        latency,
        ..FakeSlackConfig::default()
    })
    .await;
    let backend = std::env::args()
        .nth(4)
        .unwrap_or_else(|| "embedded".to_owned());
    let inner: Arc<dyn Repository> = match backend.as_str() {
        "embedded" => Arc::new(EmbeddedRepository::in_memory().unwrap()),
        "emulator" => Arc::new(emulator_repository().await.0),
        other => panic!("backend: embedded or emulator, not {other}"),
    };
    let repo = Arc::new(CountingRepository::new(inner));
    let dir = tempfile_dir();
    let keys = Arc::new(CountingKeyProvider::new(
        LocalKeyProvider::open(&dir, "bench").unwrap(),
    ));
    let clock = Arc::new(ManualClock::at_secs(1_700_000_000));
    let store = InstallationStore::new(
        repo.clone(),
        keys.clone() as Arc<dyn KeyProvider>,
        StoreConfig::new("1111.2222"),
    )
    .with_clock(clock.clone() as Arc<dyn Clock>)
    .with_refresher(Arc::new(slack.client()));

    // Given N installations (concurrent code exchanges: each waits out the latency too).
    let started = Instant::now();
    let teams: Vec<String> = (0..installs).map(|i| format!("T{i:06}")).collect();
    let client = &slack.client(); // one client: building one loads the TLS roots
    stream::iter(&teams)
        .for_each_concurrent(256, |team| {
            let (slack, store, clock) = (&slack, &store, &clock);
            async move {
                let code = format!("code-{team}");
                slack.add_install(&code, InstallSpec::workspace(team));
                let resp = client.exchange_code(&code, None).await.unwrap();
                let tenant = VerifiedTenant::from_oauth_response(&resp).unwrap();
                let inst = Installation::from_oauth_response(resp, clock.now_secs()).unwrap();
                store.store_installation(&tenant, &inst).await.unwrap();
            }
        })
        .await;
    eprintln!("installed {installs} in {:?}", started.elapsed());

    // When: 11.5 h later every 12 h token is inside the 2 h window.
    clock.advance_secs(11 * 3600 + 1800);
    repo.reset();
    let keys_before = keys.total();
    let cfg = SweepConfig {
        concurrency,
        page: 500,
        stop_before: Duration::from_secs(20),
    };
    let started = Instant::now();
    let report = sweep(&store, clock.now_secs(), None, &cfg).await;
    let wall = started.elapsed();

    let refreshes = slack.counters().refreshes;
    let max_per_team = teams
        .iter()
        .map(|t| slack.refreshes_for(t))
        .max()
        .unwrap_or(0);
    let repo_calls = repo.total();
    let per = |n: u64| n as f64 / refreshes.max(1) as f64;
    println!(
        "sweep_bench: {installs} due installations, {backend} store, fake Slack latency {latency:?}, concurrency {concurrency}"
    );
    println!(
        "  wall time              {:.2} s ({:.0} refreshes/s)",
        wall.as_secs_f64(),
        refreshes as f64 / wall.as_secs_f64()
    );
    println!(
        "  report                 {}",
        serde_json::to_string(&report).unwrap()
    );
    println!(
        "  refreshes per token    {:.3} (max for one team: {max_per_team})",
        refreshes as f64 / installs as f64
    );
    println!(
        "  repository calls       {repo_calls} = {:.2} per refresh",
        per(repo_calls)
    );
    for (method, n) in repo.by_method() {
        println!("    {method:<20} {:.3} per refresh", per(n));
    }
    println!(
        "  key provider calls     {:.2} per refresh",
        per(keys.total() - keys_before)
    );
    assert_eq!(refreshes as usize, installs, "every due token refreshed");
    assert_eq!(max_per_team, 1, "no token refreshed twice");
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenkeep-sweep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
