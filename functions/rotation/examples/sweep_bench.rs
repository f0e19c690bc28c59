//! Sweep benchmark (not a timed test): N due installations on the embedded
//! store, the fake Slack answering every call after a simulated latency.
//! Prints wall time, refreshes per token (must be 1.0) and storage / key
//! provider calls per refresh.
//!
//! cargo run --release -p tokenkeep-rotation --example sweep_bench -- [installs=10000] [concurrency=64] [latency_ms=20]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use tokenkeep_envelope::testing::CountingKeyProvider;
use tokenkeep_envelope::{KeyProvider, LocalKeyProvider};
use tokenkeep_installations::{
    AuditRecord, Clock, EmbeddedRepository, Expect, Installation, InstallationStore, ManualClock, RecordKey,
    RepoError, Repository, StoreConfig, StoredRecord, TenantState, VerifiedTenant,
};
use tokenkeep_rotation::{sweep, SweepConfig};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::SlackOAuth;

/// Counts repository calls per method, passing them through.
#[derive(Debug)]
struct CountingRepository<R> {
    inner: R,
    calls: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
}

impl<R> CountingRepository<R> {
    fn new(inner: R) -> Self {
        Self { inner, calls: Mutex::default(), total: AtomicU64::new(0) }
    }
    fn count(&self, method: &'static str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.calls.lock().unwrap().entry(method).or_default() += 1;
    }
    fn reset(&self) {
        self.total.store(0, Ordering::Relaxed);
        self.calls.lock().unwrap().clear();
    }
}

#[async_trait]
impl<R: Repository> Repository for CountingRepository<R> {
    async fn get(&self, key: &RecordKey) -> Result<Option<StoredRecord>, RepoError> {
        self.count("get");
        self.inner.get(key).await
    }
    async fn list_tenant(&self, pk: &str) -> Result<Vec<StoredRecord>, RepoError> {
        self.count("list_tenant");
        self.inner.list_tenant(pk).await
    }
    async fn put(&self, record: &StoredRecord, expect: Expect) -> Result<(), RepoError> {
        self.count("put");
        self.inner.put(record, expect).await
    }
    async fn delete(&self, key: &RecordKey) -> Result<bool, RepoError> {
        self.count("delete");
        self.inner.delete(key).await
    }
    async fn tenant_state(&self, pk: &str) -> Result<Option<TenantState>, RepoError> {
        self.count("tenant_state");
        self.inner.tenant_state(pk).await
    }
    async fn open_generation(&self, pk: &str) -> Result<u64, RepoError> {
        self.count("open_generation");
        self.inner.open_generation(pk).await
    }
    async fn purge_tenant(&self, pk: &str, now: i64) -> Result<usize, RepoError> {
        self.count("purge_tenant");
        self.inner.purge_tenant(pk, now).await
    }
    async fn try_lease(&self, key: &RecordKey, version: u64, generation: u64, owner: &str, now: i64, until: i64)
        -> Result<bool, RepoError> {
        self.count("try_lease");
        self.inner.try_lease(key, version, generation, owner, now, until).await
    }
    async fn release_lease(&self, key: &RecordKey, owner: &str) -> Result<(), RepoError> {
        self.count("release_lease");
        self.inner.release_lease(key, owner).await
    }
    async fn query_due(&self, shard: &str, before: i64, limit: usize) -> Result<Vec<RecordKey>, RepoError> {
        self.count("query_due");
        self.inner.query_due(shard, before, limit).await
    }
    async fn scan_records(&self, after: Option<(String, String)>, limit: usize)
        -> Result<(Vec<StoredRecord>, Option<(String, String)>), RepoError> {
        self.count("scan_records");
        self.inner.scan_records(after, limit).await
    }
    async fn scan_tenants(&self) -> Result<Vec<(String, TenantState)>, RepoError> {
        self.count("scan_tenants");
        self.inner.scan_tenants().await
    }
    async fn restore_tenant(&self, pk: &str, state: TenantState) -> Result<bool, RepoError> {
        self.count("restore_tenant");
        self.inner.restore_tenant(pk, state).await
    }
    async fn put_state(&self, nonce: &str, expires_at: i64) -> Result<(), RepoError> {
        self.count("put_state");
        self.inner.put_state(nonce, expires_at).await
    }
    async fn consume_state(&self, nonce: &str, now: i64) -> Result<bool, RepoError> {
        self.count("consume_state");
        self.inner.consume_state(nonce, now).await
    }
    async fn record_event(&self, event_id: &str, now: i64, expires_at: i64) -> Result<bool, RepoError> {
        self.count("record_event");
        self.inner.record_event(event_id, now, expires_at).await
    }
    async fn append_audit(&self, record: &AuditRecord, expires_at: i64) -> Result<(), RepoError> {
        self.count("append_audit");
        self.inner.append_audit(record, expires_at).await
    }
    async fn query_audit(&self, tenant: Option<&str>, since_ms: i64, limit: usize) -> Result<Vec<AuditRecord>, RepoError> {
        self.count("query_audit");
        self.inner.query_audit(tenant, since_ms, limit).await
    }
}

fn arg(n: usize, default: u64) -> u64 {
    std::env::args().nth(n).and_then(|a| a.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let installs = arg(1, 10_000) as usize;
    let concurrency = arg(2, 64) as usize;
    let latency = Duration::from_millis(arg(3, 20));

    let slack = FakeSlack::start(FakeSlackConfig { latency, ..FakeSlackConfig::default() }).await;
    let repo = Arc::new(CountingRepository::new(EmbeddedRepository::in_memory().unwrap()));
    let dir = tempfile_dir();
    let keys = Arc::new(CountingKeyProvider::new(LocalKeyProvider::open(&dir, "bench").unwrap()));
    let clock = Arc::new(ManualClock::at_secs(1_700_000_000));
    let store = InstallationStore::new(repo.clone(), keys.clone() as Arc<dyn KeyProvider>, StoreConfig::new("1111.2222"))
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
    let cfg = SweepConfig { concurrency, page: 500, stop_before: Duration::from_secs(20) };
    let started = Instant::now();
    let report = sweep(&store, clock.now_secs(), None, &cfg).await;
    let wall = started.elapsed();

    let refreshes = slack.counters().refreshes;
    let max_per_team = teams.iter().map(|t| slack.refreshes_for(t)).max().unwrap_or(0);
    let repo_calls = repo.total.load(Ordering::Relaxed);
    let per = |n: u64| n as f64 / refreshes.max(1) as f64;
    println!("sweep_bench: {installs} due installations, embedded store, fake Slack latency {latency:?}, concurrency {concurrency}");
    println!("  wall time              {:.2} s ({:.0} refreshes/s)", wall.as_secs_f64(), refreshes as f64 / wall.as_secs_f64());
    println!("  report                 {}", serde_json::to_string(&report).unwrap());
    println!("  refreshes per token    {:.3} (max for one team: {max_per_team})", refreshes as f64 / installs as f64);
    println!("  repository calls       {repo_calls} = {:.2} per refresh", per(repo_calls));
    for (method, n) in repo.calls.lock().unwrap().iter() {
        println!("    {method:<20} {:.3} per refresh", per(*n));
    }
    println!("  key provider calls     {:.2} per refresh", per(keys.total() - keys_before));
    assert_eq!(refreshes as usize, installs, "every due token refreshed");
    assert_eq!(max_per_team, 1, "no token refreshed twice");
    std::fs::remove_dir_all(&dir).ok();
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tokenkeep-sweep-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
