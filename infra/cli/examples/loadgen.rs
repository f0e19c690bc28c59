//! End-to-end load generator for `tokenkeep dev` (a benchmark, not a test).
//!
//! 1. Starts the fake Slack and spawns the built `tokenkeep dev` on a temporary
//!    data dir (embedded store, local key file), `SLACK_API_URL` at the fake.
//! 2. Installs N tenants through the real OAuth flow (`/slack/install` → cookie
//!    + state → `/slack/oauth_redirect?code=..&state=..`).
//! 3. Pre-signs a pool of `event_callback` requests (a bot's `app_mention`: the
//!    example handler doesn't call Slack; unique `event_id`s, fresh timestamps,
//!    tenants round-robin) and drives `/slack/events` at fixed concurrency for a
//!    fixed duration over keep-alive loopback connections.
//! 4. Prints requests/s, p50/p99/max latency, errors, the server's CPU µs per
//!    request (utime+stime from /proc/PID/stat) and its RSS (VmRSS / VmHWM).
//! 5. Cold start: exec → first 200 on `/slack/events` (median of several runs),
//!    on the populated data dir (a signed bot `app_mention` for an installed tenant:
//!    the whole authorized path) and on an empty one (`url_verification`).
//!
//! ```sh
//! cargo build --release -p tokenkeep --bin tokenkeep --example loadgen
//! ./target/release/examples/loadgen [--tenants 1000] [--concurrency 32] [--seconds 10] [--cold-runs 9]
//! ```
//! Loopback only; it stops the server with SIGTERM and exits by itself.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt as _};
use tokenkeep_slack_api::fake::{FakeSlack, FakeSlackConfig, InstallSpec};
use tokenkeep_slack_api::{SigningSecret, sign_request};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SIGNING_SECRET: &str = "tokenkeep-loadgen-signing-secret";
const APP_ID: &str = "ALOADGEN";

#[derive(Debug, Clone)]
struct Args {
    tenants: usize,
    concurrency: usize,
    seconds: u64,
    cold_runs: usize,
    pool: usize,
    bin: PathBuf,
}

fn parse_args() -> Args {
    let mut args = Args {
        tenants: 1000,
        concurrency: 32,
        seconds: 10,
        cold_runs: 9,
        pool: 300_000,
        bin: default_bin(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--tenants" => args.tenants = value().parse().unwrap(),
            "--concurrency" => args.concurrency = value().parse().unwrap(),
            "--seconds" => args.seconds = value().parse().unwrap(),
            "--cold-runs" => args.cold_runs = value().parse().unwrap(),
            "--pool" => args.pool = value().parse().unwrap(),
            "--bin" => args.bin = PathBuf::from(value()),
            other => panic!("unknown flag {other}; see the file header"),
        }
    }
    assert!(args.seconds <= 120, "bounded runs only (--seconds <= 120)");
    args
}

/// `target/<profile>/tokenkeep`, next to this example's own binary.
fn default_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(Path::parent)
        .unwrap()
        .join("tokenkeep")
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn team(i: usize) -> String {
    format!("T{i:07}")
}

fn spawn_dev(bin: &Path, slack: &FakeSlack, data: &Path, port: u16) -> Child {
    let cfg = slack.client_config();
    Command::new(bin)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SLACK_CLIENT_ID", &cfg.client_id)
        .env("SLACK_CLIENT_SECRET", cfg.client_secret.expose_secret())
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
        .env("SLACK_API_URL", slack.api_url())
        .env(
            "SLACK_AUTHORIZE_URL",
            format!("{}/oauth/authorize", slack.api_url()),
        )
        .env("TOKENKEEP_DATA_DIR", data)
        // Allocator options pass through, to measure them (BENCHMARKS.md).
        .envs(std::env::vars().filter(|(name, _)| name.starts_with("MIMALLOC_")))
        // The JSON log lines (one per event, one per audited read) are written as
        // in a real run; nothing reads them here.
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "start {}: {e} (build it: cargo build --release -p tokenkeep)",
                bin.display()
            )
        })
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// A signed `POST /slack/events` request, as raw HTTP/1.1 bytes.
fn signed_request(secret: &SigningSecret, body: &str, ts: i64) -> Vec<u8> {
    let sig = sign_request(secret, ts, body.as_bytes());
    format!(
        "POST /slack/events HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
         x-slack-request-timestamp: {ts}\r\nx-slack-signature: {sig}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// An `app_mention` sent by a bot: the example app's mention listener matches
/// it, so the whole authorized path runs (token read, audit record, dedupe
/// claim), and the listener returns without calling Slack (it never answers
/// bots). A plain `message` would match no listener and touch no store.
fn authorized_event(team_id: &str, event_id: &str, ts: i64) -> String {
    serde_json::json!({
        "type": "event_callback", "team_id": team_id, "api_app_id": APP_ID, "event_id": event_id, "event_time": ts,
        "authorizations": [{"team_id": team_id, "is_enterprise_install": false, "user_id": "UBOT", "is_bot": true}],
        "event": {"type": "app_mention", "user": "U123", "bot_id": "B0LOADGEN", "text": "<@UBOT> hello from loadgen", "channel": "C1", "ts": "1.000100"}
    })
    .to_string()
}

// ---- a minimal HTTP/1.1 keep-alive client (cheap, so the server gets the CPU) ----

/// Reads one response; returns its status. Handles `content-length` bodies only
/// (axum answers every route here with one).
async fn read_response(
    conn: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<u16> {
    loop {
        if let Some(end) = find(buf, b"\r\n\r\n") {
            let head =
                std::str::from_utf8(&buf[..end]).map_err(|_| std::io::ErrorKind::InvalidData)?;
            let status: u16 = head
                .get(9..12)
                .and_then(|s| s.parse().ok())
                .ok_or(std::io::ErrorKind::InvalidData)?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                })
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let total = end + 4 + len;
            while buf.len() < total {
                read_more(conn, buf).await?;
            }
            buf.drain(..total);
            return Ok(status);
        }
        read_more(conn, buf).await?;
    }
}

async fn read_more(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---- /proc ----------------------------------------------------------------

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may contain spaces: state is field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---- phases -----------------------------------------------------------------

/// Waits until the port accepts connections (at most `limit`).
fn wait_listening(addr: SocketAddr, limit: Duration) {
    let start = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            start.elapsed() < limit,
            "tokenkeep dev did not start listening"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

async fn install_all(base: &str, slack: &FakeSlack, tenants: usize) -> usize {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for i in 0..tenants {
        let mut spec = InstallSpec::workspace(&team(i));
        spec.app_id = APP_ID.into();
        slack.add_install(&format!("code-{i}"), spec);
    }
    let failures = AtomicUsize::new(0);
    stream::iter(0..tenants)
        .for_each_concurrent(8, |i| {
            let (http, failures) = (&http, &failures);
            async move {
                let install = http
                    .get(format!("{base}/slack/install"))
                    .send()
                    .await
                    .unwrap();
                let cookie = install.headers()["set-cookie"]
                    .to_str()
                    .unwrap()
                    .split(';')
                    .next()
                    .unwrap()
                    .to_owned();
                let location = install.headers()["location"].to_str().unwrap().to_owned();
                let state = location
                    .split("state=")
                    .nth(1)
                    .unwrap()
                    .split('&')
                    .next()
                    .unwrap()
                    .to_owned();
                let done = http
                    .get(format!(
                        "{base}/slack/oauth_redirect?code=code-{i}&state={state}"
                    ))
                    .header("cookie", &cookie)
                    .send()
                    .await
                    .unwrap();
                if done.status() != 200 {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    failures.into_inner()
}

struct LoadResult {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
    wrapped: bool,
}

async fn drive(
    addr: SocketAddr,
    pool: Arc<Vec<Vec<u8>>>,
    concurrency: usize,
    seconds: u64,
) -> LoadResult {
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (pool, next, stop) = (pool.clone(), next.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(1 << 16);
            let mut errors = 0usize;
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut buf = Vec::with_capacity(8192);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let req = &pool[i % pool.len()];
                let t0 = Instant::now();
                let ok = async {
                    conn.write_all(req).await?;
                    read_response(&mut conn, &mut buf).await
                }
                .await;
                latencies.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                match ok {
                    Ok(200) => {}
                    Ok(_) => errors += 1,
                    Err(_) => {
                        errors += 1;
                        buf.clear();
                        match tokio::net::TcpStream::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        latencies_us.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies_us.sort_unstable();
    LoadResult {
        requests: latencies_us.len(),
        errors,
        elapsed,
        wrapped: next.load(Ordering::Relaxed) > pool.len(),
        latencies_us,
    }
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// exec → first 200 answer to `request` on `/slack/events`, in milliseconds.
fn cold_start(bin: &Path, slack: &FakeSlack, data: &Path, request: &[u8]) -> f64 {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let t0 = Instant::now();
    let child = spawn_dev(bin, slack, data, port);
    let ms = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no 200 from a fresh tokenkeep dev within 10 s"
        );
        let Ok(mut conn) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        };
        conn.set_nodelay(true).unwrap();
        let mut resp = [0u8; 12];
        if conn.write_all(request).is_ok()
            && conn.read_exact(&mut resp).is_ok()
            && &resp[9..12] == b"200"
        {
            break t0.elapsed().as_secs_f64() * 1e3;
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    stop(child);
    ms
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let args = parse_args();
    let secret = SigningSecret::new(SIGNING_SECRET);
    let slack = FakeSlack::start(FakeSlackConfig::default()).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let base = format!("http://{addr}");
    println!(
        "loadgen: {} tenants, concurrency {}, {} s, server {}",
        args.tenants,
        args.concurrency,
        args.seconds,
        args.bin.display()
    );

    let child = spawn_dev(&args.bin, &slack, data.path(), port);
    let pid = child.id();
    wait_listening(addr, Duration::from_secs(10));
    let rss_idle = status_kb(pid, "VmRSS:");

    let t = Instant::now();
    let failed = install_all(&base, &slack, args.tenants).await;
    println!(
        "installed {} tenants through the OAuth routes in {:.2} s ({} failed)",
        args.tenants - failed,
        t.elapsed().as_secs_f64(),
        failed
    );
    assert_eq!(failed, 0, "every install must succeed");

    // Pre-sign the pool: unique event ids, tenants round-robin, timestamps now.
    let ts = now_secs();
    let pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.pool)
            .map(|n| {
                signed_request(
                    &secret,
                    &authorized_event(&team(n % args.tenants), &format!("Ev{n:010}"), ts),
                    ts,
                )
            })
            .collect(),
    );

    // Warm-up: one event per tenant (fills the data-key cache), not measured.
    let warm_pool: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..args.tenants)
            .map(|n| {
                signed_request(
                    &secret,
                    &authorized_event(&team(n), &format!("EvWARM{n:010}"), ts),
                    ts,
                )
            })
            .collect(),
    );
    let warm = drive_count(addr, warm_pool, args.concurrency).await;
    assert_eq!(warm, 0, "warm-up requests must all succeed");

    let ticks = clock_ticks();
    let cpu0 = cpu_ticks(pid);
    let r = drive(addr, pool, args.concurrency, args.seconds).await;
    let cpu1 = cpu_ticks(pid);
    let rss = status_kb(pid, "VmRSS:");
    let hwm = status_kb(pid, "VmHWM:");
    stop(child);

    let secs = r.elapsed.as_secs_f64();
    let cpu_us = (cpu1 - cpu0) as f64 * 1e6 / ticks as f64;
    println!("load: {} requests in {:.2} s", r.requests, secs);
    println!("  requests/s          {:.0}", r.requests as f64 / secs);
    println!(
        "  latency µs          p50 {}  p99 {}  max {}",
        pct(&r.latencies_us, 0.50),
        pct(&r.latencies_us, 0.99),
        pct(&r.latencies_us, 1.0)
    );
    println!("  errors              {}", r.errors);
    if r.wrapped {
        println!(
            "  NOTE: the pre-signed pool wrapped; later requests were deduplicated retries (raise --pool)"
        );
    }
    println!(
        "  server CPU          {:.1} µs/request ({:.2} cores busy)",
        cpu_us / r.requests.max(1) as f64,
        cpu_us / 1e6 / secs
    );
    println!(
        "  server memory       VmRSS {:.1} MB after load (idle {:.1} MB), VmHWM {:.1} MB",
        rss as f64 / 1024.0,
        rss_idle as f64 / 1024.0,
        hwm as f64 / 1024.0
    );

    // Cold starts.
    if args.cold_runs > 0 {
        let ts = now_secs();
        let warm_event = signed_request(&secret, &authorized_event(&team(0), "EvCOLD", ts), ts);
        let populated: Vec<f64> = (0..args.cold_runs)
            .map(|_| cold_start(&args.bin, &slack, data.path(), &warm_event))
            .collect();
        let url_verification =
            r#"{"token":"x","challenge":"loadgen-challenge","type":"url_verification"}"#;
        let verify_req = signed_request(&secret, url_verification, ts);
        let empty: Vec<f64> = (0..args.cold_runs)
            .map(|_| {
                let dir = tempfile::tempdir().unwrap();
                cold_start(&args.bin, &slack, dir.path(), &verify_req)
            })
            .collect();
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "cold start (exec → first 200 on /slack/events), {} runs each:",
            args.cold_runs
        );
        println!(
            "  {} tenants, signed app_mention  median {:.1} ms  [{}]",
            args.tenants,
            median(populated.clone()),
            fmt(&populated)
        );
        println!(
            "  empty data dir, url_verification median {:.1} ms  [{}]",
            median(empty.clone()),
            fmt(&empty)
        );
    }
    slack.shutdown();
}

/// Sends every request in `pool` once at `concurrency`; returns the error count.
async fn drive_count(addr: SocketAddr, pool: Arc<Vec<Vec<u8>>>, concurrency: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (pool, next, errors) = (pool.clone(), next.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = pool.get(i) else { break };
                conn.write_all(req).await.unwrap();
                if read_response(&mut conn, &mut buf).await.unwrap() != 200 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    errors.load(Ordering::Relaxed)
}
