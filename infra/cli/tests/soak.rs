//! A bounded concurrency soak, loopback only, that stops by itself.
//!
//! Three "processes" (each its own `InstallationStore`, data-key cache, lease
//! owner and HTTP server on 127.0.0.1, serving the real OAuth and events
//! routers) share one embedded store and one fake Slack with token rotation.
//! For the run's duration, 200 tenants are installed, sent signed events,
//! uninstalled and reinstalled concurrently, rotation sweeps run on every
//! process, and the store's clock jumps past every token's expiry at a fixed
//! pace so refreshes race with all of it. Faults are injected all along: a
//! process's next record writes fail (500s past the SDK's retries) and its
//! key provider stalls (KMS answering late, across a lease expiry). A failed
//! install or uninstall is retried, as the user and Slack would. Afterwards:
//!
//! - faults were injected, and every live installation opens
//!   (`verify_record`) and is active (none lost);
//! - every uninstalled tenant has no record left and a tombstone (none resurrected);
//! - no token was refreshed twice per expiry: the fake Slack's refresh
//!   tokens are single-use, so a duplicate shows as a refresh failure, and
//!   no tenant was refreshed more often than its tokens expired;
//! - the audit trail has one record per event token read.
//!
//! Duration: `TOKENKEEP_SOAK_SECS` (default 8 s, so the normal suite stays
//! fast). A long run: `TOKENKEEP_SOAK_SECS=60 cargo test -p tokenkeep --test soak -- --nocapture`.
//! The DynamoDB emulator is not used here: moto serialises poorly under
//! concurrent TransactWriteItems, and the repository conformance and refresh
//! suites already run the same paths on it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokenkeep_envelope::testing::{Fault, FaultyKeyProvider};
use tokenkeep_envelope::{CacheLimits, CachingKeyProvider, KeyProvider, LocalKeyProvider};
use tokenkeep_events::{CountingMetrics, EventsState, MentionReplier, Metric};
use tokenkeep_installations::testing::{FaultyRepository, ManualClock};
use tokenkeep_installations::{
    Clock, EmbeddedRepository, InstallationStore, Outcome, ReadContext, Repository, Status,
    StoreConfig, SystemClock, TenantKey,
};
use tokenkeep_oauth::OAuthState;
use tokenkeep_rotation::{SweepConfig, sweep};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec, sign_request};
use tokenkeep_slack_api::{RequestVerifier, SigningSecret};

/// TEST value, for this file only.
const SIGNING_SECRET: &str = "tokenkeep-soak-test-signing-secret";
const TENANTS: usize = 200;
const PROCESSES: usize = 3;
const LIFECYCLE_WORKERS: usize = 4;
const EVENT_WORKERS: usize = 4;
const LIFETIME: i64 = 43_200;
const START: i64 = 1_700_000_000;
/// How often the store's clock jumps past every token's expiry.
const EPOCH: Duration = Duration::from_millis(1500);
/// The longest a stalled key-provider call hangs; stalls span clock jumps,
/// so a stalled refresh holder's lease runs out under it.
const STALL: Duration = Duration::from_millis(3200);
/// Attempts of an install or uninstall before the soak gives up on it.
const RETRIES: usize = 100;

struct Process {
    store: Arc<InstallationStore>,
    base: String,
    /// This process's view of the shared store and keys, with faults on demand.
    faults: Arc<FaultyRepository>,
    keys: Arc<FaultyKeyProvider<Arc<dyn KeyProvider>>>,
}

struct Soak {
    slack: FakeSlack,
    repo: Arc<EmbeddedRepository>,
    clock: Arc<ManualClock>,
    processes: Vec<Process>,
    http: reqwest::Client,
    metrics: Arc<CountingMetrics>,
    /// Lifecycle flows hold it shared; the clock jump takes it exclusively, so
    /// an OAuth state never expires between /install and the redirect.
    epoch_lock: tokio::sync::RwLock<()>,
    epochs: AtomicU64,
    /// Per tenant: installed (true) or uninstalled (false); each tenant is
    /// changed by one lifecycle worker only, so this is the truth at the end.
    live: Vec<Mutex<Option<bool>>>,
    mentions_sent: AtomicU64,
    statuses: Mutex<HashMap<(&'static str, u16), u64>>,
    codes: AtomicU64,
    _dir: tempfile::TempDir,
}

fn team(i: usize) -> String {
    format!("T0S{i:03}")
}

impl Soak {
    async fn start() -> Arc<Self> {
        let slack = FakeSlack::start(FakeSlackConfig::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(EmbeddedRepository::open(dir.path().join("soak.db")).unwrap());
        let local = Arc::new(LocalKeyProvider::open(dir.path(), "soak").unwrap());
        let clock = Arc::new(ManualClock::at_secs(START));
        let metrics = Arc::new(CountingMetrics::default());
        let mut processes = vec![];
        for _ in 0..PROCESSES {
            let cached: Arc<dyn KeyProvider> = Arc::new(CachingKeyProvider::new(
                local.clone(),
                CacheLimits::default(),
            ));
            let keys = Arc::new(FaultyKeyProvider::new(cached).with_stall_limit(STALL));
            let faults = Arc::new(FaultyRepository::new(repo.clone() as Arc<dyn Repository>));
            let mut cfg = StoreConfig::new(FakeSlackConfig::default().client_id);
            // As in Lambda: the sweep refreshes due tokens, requests only expired ones.
            cfg.background_refresh = false;
            // The clock jumps LIFETIME + 1 per epoch, which real time never does
            // to a lease. A lease of 1.5 x LIFETIME survives one jump and runs out
            // at the second: a refresh retrying its write (well under an epoch)
            // keeps it, as it keeps a real 30 s lease, while a KMS stall that
            // spans two jumps outlives it and exercises the lease check before Slack.
            cfg.lease_secs = LIFETIME * 3 / 2;
            let store = Arc::new(
                InstallationStore::new(
                    faults.clone() as Arc<dyn Repository>,
                    keys.clone() as Arc<dyn KeyProvider>,
                    cfg,
                )
                .with_clock(clock.clone() as Arc<dyn Clock>)
                .with_refresher(Arc::new(slack.client())),
            );
            let oauth = tokenkeep_oauth::router(OAuthState {
                store: store.clone(),
                slack: Arc::new(slack.client()),
                client_id: FakeSlackConfig::default().client_id,
                scopes: "chat:write,app_mentions:read".into(),
                user_scopes: String::new(),
                authorize_url: "https://slack.example/oauth/v2/authorize".into(),
                redirect_uri: None,
                bot_client: None,
            });
            let events = tokenkeep_events::router_with_metrics(
                EventsState {
                    store: store.clone(),
                    verifier: RequestVerifier::new(SigningSecret::new(SIGNING_SECRET)),
                    handler: Arc::new(MentionReplier {
                        slack: slack.client(),
                    }),
                    clock: Arc::new(SystemClock),
                },
                metrics.clone(),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, oauth.merge(events)).await });
            processes.push(Process {
                store,
                base,
                faults,
                keys,
            });
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Arc::new(Self {
            slack,
            repo,
            clock,
            processes,
            http,
            metrics,
            epoch_lock: tokio::sync::RwLock::new(()),
            epochs: AtomicU64::new(0),
            live: (0..TENANTS).map(|_| Mutex::new(None)).collect(),
            mentions_sent: AtomicU64::new(0),
            statuses: Mutex::default(),
            codes: AtomicU64::new(0),
            _dir: dir,
        })
    }

    fn process(&self) -> &Process {
        &self.processes[below(PROCESSES)]
    }

    fn count(&self, what: &'static str, status: u16) {
        *self
            .statuses
            .lock()
            .unwrap()
            .entry((what, status))
            .or_default() += 1;
    }

    /// Installs tenant `i`, again until it works: an install that failed on an
    /// injected fault left nothing behind, and the user would just retry.
    async fn install(&self, i: usize) {
        for _ in 0..RETRIES {
            if self.try_install(i).await {
                *self.live[i].lock().unwrap() = Some(true);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("install of {} kept failing", team(i));
    }

    /// The OAuth flow a browser goes through, on a random process.
    async fn try_install(&self, i: usize) -> bool {
        let _epoch = self.epoch_lock.read().await;
        let code = format!("soak-code-{}", self.codes.fetch_add(1, Ordering::Relaxed));
        self.slack
            .add_install(&code, InstallSpec::workspace(&team(i)));
        let p = self.process();
        let start = self
            .http
            .get(format!("{}/slack/install", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(start.status(), 302);
        let cookie = start.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let state = cookie.split_once('=').unwrap().1.to_owned();
        let p = self.process();
        let done = self
            .http
            .get(format!(
                "{}/slack/oauth_redirect?code={code}&state={state}",
                p.base
            ))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        self.count("install", done.status().as_u16());
        assert!(
            matches!(done.status().as_u16(), 200 | 500),
            "install of {}: {}",
            team(i),
            done.status()
        );
        done.status() == 200
    }

    async fn post_event(&self, what: &'static str, body: String) -> u16 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let sig = sign_request(&SigningSecret::new(SIGNING_SECRET), now, body.as_bytes());
        let resp = self
            .http
            .post(format!("{}/slack/events", self.process().base))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", now.to_string())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        self.count(what, status);
        status
    }

    fn callback(i: usize, event: serde_json::Value) -> String {
        let event_id = format!("Ev{}", hex_id());
        serde_json::json!({
            "type": "event_callback", "team_id": team(i), "api_app_id": "A0001", "event_id": event_id,
            "event": event,
            "authorizations": [{ "enterprise_id": null, "team_id": team(i), "user_id": "UBOT", "is_bot": true, "is_enterprise_install": false }],
        })
        .to_string()
    }

    /// `app_uninstalled`, redelivered until acknowledged (as Slack retries).
    async fn uninstall(&self, i: usize) {
        let _epoch = self.epoch_lock.read().await;
        let body = Self::callback(i, serde_json::json!({ "type": "app_uninstalled" }));
        for _ in 0..RETRIES {
            if self.post_event("uninstall", body.clone()).await == 200 {
                *self.live[i].lock().unwrap() = Some(false);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("uninstall of {} kept failing", team(i));
    }

    async fn mention(&self, i: usize) {
        let ts = format!("{}.{:06}", START, below(1_000_000));
        let event = serde_json::json!({ "type": "app_mention", "user": "U0FROM", "text": "<@UBOT> hi", "ts": ts, "channel": "C1", "event_ts": ts });
        self.mentions_sent.fetch_add(1, Ordering::SeqCst);
        self.post_event("mention", Self::callback(i, event)).await;
    }
}

/// A pseudo-random u64 from std alone (this crate has no `rand`): a
/// randomly keyed hash of a counter.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let mut h = KEYS.get_or_init(Default::default).build_hasher();
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

fn below(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

fn hex_id() -> String {
    format!("{:016X}", random_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_installs_events_uninstalls_and_sweeps_over_200_tenants() {
    let secs: u64 = std::env::var("TOKENKEEP_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let soak = Soak::start().await;

    // Given 200 installed tenants
    let installs: Vec<_> = (0..TENANTS)
        .map(|i| {
            let soak = soak.clone();
            tokio::spawn(async move { soak.install(i).await })
        })
        .collect();
    for t in installs {
        t.await.unwrap();
    }

    // When, for `secs`, everything happens at once
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = vec![];
    for w in 0..LIFECYCLE_WORKERS {
        let (soak, stop) = (soak.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (0..TENANTS)
                .filter(|i| i % LIFECYCLE_WORKERS == w)
                .collect();
            while !stop.load(Ordering::Relaxed) {
                let i = mine[below(mine.len())];
                let live = soak.live[i].lock().unwrap().unwrap_or(false);
                // live: uninstall or reinstall; gone: install again
                if !live || below(2) == 0 {
                    soak.install(i).await;
                } else {
                    soak.uninstall(i).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for _ in 0..EVENT_WORKERS {
        let (soak, stop) = (soak.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = below(TENANTS);
                soak.mention(i).await;
            }
        }));
    }
    {
        let (soak, stop) = (soak.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(EPOCH).await;
                let _all = soak.epoch_lock.write().await;
                soak.clock.advance_secs(LIFETIME + 1);
                soak.epochs.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Faults: a process's next writes fail, or its key provider stalls, in
    // turn (not by a coin flip: on a busy machine a short run may see only a
    // few rounds, and each kind must happen at least once).
    {
        let (soak, stop) = (soak.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(150 + below(300) as u64)).await;
                let p = &soak.processes[below(PROCESSES)];
                round += 1;
                if round % 2 == 1 {
                    p.faults.fail_next_puts(1 + below(3) as u64);
                } else {
                    p.keys.set_fault(Fault::Stall);
                    tokio::time::sleep(Duration::from_millis(200 + below(3000) as u64)).await;
                    p.keys.set_fault(Fault::None);
                }
            }
        }));
    }
    // Rotation sweeps, on a random process each time, from this task (the
    // sweep future borrows the store, so it isn't spawned).
    let mut sweeps = 0;
    while Instant::now() < deadline {
        let p = &soak.processes[below(PROCESSES)];
        let report = sweep(
            &p.store,
            soak.clock.now_secs(),
            None,
            &SweepConfig::default(),
        )
        .await;
        assert_eq!(report.query_errors, 0, "{report:?}");
        sweeps += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let injected_writes: u64 = soak
        .processes
        .iter()
        .map(|p| p.faults.injected.load(Ordering::SeqCst))
        .sum();
    let stalls: u64 = soak
        .processes
        .iter()
        .map(|p| p.keys.stalled.load(Ordering::SeqCst))
        .sum();
    for p in &soak.processes {
        p.keys.set_fault(Fault::None);
    }

    // Then: the numbers, for a long run's log
    let epochs = soak.epochs.load(Ordering::SeqCst);
    let counters = soak.slack.counters();
    let statuses = soak.statuses.lock().unwrap().clone();
    println!(
        "soak: {secs}s, {epochs} expiries, {sweeps} sweeps, {} mentions, {injected_writes} failed writes and {stalls} KMS stalls injected, statuses {statuses:?}, slack {counters:?}, unknown-tenant {}, handler failures {}",
        soak.mentions_sent.load(Ordering::SeqCst),
        soak.metrics.count_of(Metric::UnknownTenant),
        soak.metrics.count_of(Metric::HandlerFailed) + soak.metrics.count_of(Metric::Unhandled),
    );
    assert!(
        epochs >= 1 && counters.refreshes > 0,
        "the soak refreshed nothing: {counters:?}"
    );
    assert!(
        injected_writes > 0 && stalls > 0,
        "no faults were injected: {injected_writes} writes, {stalls} stalls"
    );

    // And every live installation opens and is active; every uninstalled one is gone, with a tombstone
    let store = &soak.processes[0].store;
    let (mut live, mut gone) = (0, 0);
    for i in 0..TENANTS {
        let pk = TenantKey::new(None, Some(&team(i))).unwrap().pk();
        let records = soak.repo.list_tenant(&pk).await.unwrap();
        let is_live = soak.live[i].lock().unwrap().unwrap();
        match is_live {
            true => {
                live += 1;
                assert!(
                    !records.is_empty(),
                    "{}: live tenant has no record",
                    team(i)
                );
                for r in &records {
                    assert_eq!(r.meta.status, Status::Active, "{}", team(i));
                    store
                        .verify_record(r, &ReadContext::new("soak", "soak-final", "verify"))
                        .await
                        .unwrap_or_else(|e| panic!("{}: {e}", team(i)));
                }
            }
            false => {
                gone += 1;
                assert!(
                    records.is_empty(),
                    "{}: uninstalled tenant still has records",
                    team(i)
                );
                assert!(
                    soak.repo.tenant_state(&pk).await.unwrap().unwrap().purged,
                    "{}: no tombstone",
                    team(i)
                );
            }
        }
    }
    assert!(
        live > 0 && gone > 0,
        "the soak exercised both ends: {live} live, {gone} gone"
    );

    // And no refresh token was spent twice, no grant condemned, no tenant
    // refreshed more often than its tokens expired
    assert_eq!(
        counters.refresh_failures, 0,
        "a refresh token was used twice: {counters:?}"
    );
    for p in &soak.processes {
        assert_eq!(
            p.store
                .refresh_metrics()
                .needs_reinstall
                .load(Ordering::SeqCst),
            0
        );
    }
    for i in 0..TENANTS {
        let n = soak.slack.refreshes_for(&team(i));
        assert!(
            n <= epochs,
            "{}: {n} refreshes over {epochs} expiries",
            team(i)
        );
    }

    // And one audit record per event token read (every mention reads the bot token once),
    // and one per refresh
    let audit = soak.repo.query_audit(None, 0, 10_000_000).await.unwrap();
    let event_reads = audit.iter().filter(|a| a.actor == "events").count() as u64;
    assert_eq!(event_reads, soak.mentions_sent.load(Ordering::SeqCst));
    let refresh_reads = audit
        .iter()
        .filter(|a| a.actor == "tokenkeep-refresh" && a.outcome == Outcome::Ok)
        .count() as u64;
    assert!(
        refresh_reads <= counters.refreshes,
        "{refresh_reads} audited refreshes, {} at Slack",
        counters.refreshes
    );
    let unaudited = counters.refreshes
        - audit
            .iter()
            .filter(|a| a.actor == "tokenkeep-refresh")
            .count() as u64;
    assert_eq!(unaudited, 0, "refreshes at Slack without an audit record");
    assert!(
        statuses.keys().all(|(_, s)| *s == 200 || *s == 500),
        "{statuses:?}"
    );
}
