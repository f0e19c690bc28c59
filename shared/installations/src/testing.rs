//! Test helpers shared with other crates' tests (feature `test-util`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::clock::ManualClock;
use crate::{DynamoRepository, create_tables};

/// The AWS config for the local emulator (moto). Tests that need it fail
/// loudly when it isn't there rather than silently skipping.
pub async fn emulator_config() -> aws_config::SdkConfig {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_else(|_| {
        panic!("AWS_ENDPOINT_URL is not set: run the suite through infra/test.sh, which starts the local AWS emulator (moto)")
    });
    emulator_config_at(&endpoint).await
}

/// DynamoDB and KMS clients of the emulator reached through `endpoint` (a
/// benchmark's latency proxy in front of it).
pub async fn emulator_clients_at(
    endpoint: &str,
) -> (aws_sdk_dynamodb::Client, aws_sdk_kms::Client) {
    let config = emulator_config_at(endpoint).await;
    (
        aws_sdk_dynamodb::Client::new(&config),
        aws_sdk_kms::Client::new(&config),
    )
}

async fn emulator_config_at(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await
}

static TABLE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Fresh, uniquely named tables on the emulator, so tests don't see each other.
pub async fn emulator_repository() -> (DynamoRepository, aws_sdk_dynamodb::Client, String, String) {
    let config = emulator_config().await;
    let client = aws_sdk_dynamodb::Client::new(&config);
    let id = format!(
        "{}-{}-{}",
        std::process::id(),
        TABLE_SEQ.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    );
    let table = format!("tk-test-{id}");
    let audit = format!("tk-test-audit-{id}");
    create_tables(&client, &table, &audit)
        .await
        .expect("create tables on the emulator");
    (
        DynamoRepository::new(client.clone(), &table, &audit),
        client,
        table,
        audit,
    )
}

/// A new KMS key on the emulator.
pub async fn emulator_kms_key() -> (aws_sdk_kms::Client, String) {
    let config = emulator_config().await;
    let client = aws_sdk_kms::Client::new(&config);
    let out = client
        .create_key()
        .description("tokenkeep test key")
        .send()
        .await
        .expect("create kms key on the emulator");
    let arn = out
        .key_metadata()
        .and_then(|m| m.arn())
        .expect("key arn")
        .to_owned();
    (client, arn)
}

/// A `KeyProvider` over a temporary local key file (kept alive by the returned dir).
pub fn local_keys() -> (Arc<dyn tokenkeep_envelope::KeyProvider>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = tokenkeep_envelope::LocalKeyProvider::open(dir.path(), "test").expect("local key");
    (Arc::new(keys), dir)
}

// ---- repository decorators ------------------------------------------------------

use std::sync::atomic::AtomicU8;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    AuditRecord, DueCursor, Expect, RecordKey, RepoError, Repository, StoredRecord, TenantState,
};

/// Per-operation call counts of a [`CountingRepository`].
#[derive(Debug, Default)]
pub struct RepoCalls {
    /// Every call, reads and writes.
    pub total: AtomicU64,
    /// Calls that may change the store: put, delete, purge, open_generation,
    /// lease, state, event and tenant writes (audit appends are counted apart).
    pub writes: AtomicU64,
    /// `get` and `list_tenant`: what a token read starts with.
    pub record_reads: AtomicU64,
    pub audit_appends: AtomicU64,
    /// Every call's method name, in order: tests assert a flow's sequence,
    /// benchmarks print the calls per method ([`CountingRepository::by_method`]).
    pub log: std::sync::Mutex<Vec<&'static str>>,
}

/// Passes every call through, counting it: adversarial tests assert that a
/// refused request cost no store call, and which kinds of call a flow made.
#[derive(Debug)]
pub struct CountingRepository {
    inner: Arc<dyn Repository>,
    pub calls: RepoCalls,
}

impl CountingRepository {
    pub fn new(inner: Arc<dyn Repository>) -> Self {
        Self {
            inner,
            calls: RepoCalls::default(),
        }
    }
    pub fn total(&self) -> u64 {
        self.calls.total.load(Ordering::SeqCst)
    }
    pub fn writes(&self) -> u64 {
        self.calls.writes.load(Ordering::SeqCst)
    }
    pub fn record_reads(&self) -> u64 {
        self.calls.record_reads.load(Ordering::SeqCst)
    }
    pub fn audit_appends(&self) -> u64 {
        self.calls.audit_appends.load(Ordering::SeqCst)
    }
    /// Calls per method name since the last [`reset`](Self::reset).
    pub fn by_method(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let mut counts = std::collections::BTreeMap::new();
        for method in self.methods_since(0) {
            *counts.entry(method).or_default() += 1;
        }
        counts
    }
    /// The methods called since the first `from` calls, in order.
    pub fn methods_since(&self, from: usize) -> Vec<&'static str> {
        let log = self.calls.log.lock().unwrap_or_else(|p| p.into_inner());
        log.get(from..).unwrap_or_default().to_vec()
    }
    /// Zeroes every counter (e.g. after a benchmark's warm-up).
    pub fn reset(&self) {
        for c in [
            &self.calls.total,
            &self.calls.writes,
            &self.calls.record_reads,
            &self.calls.audit_appends,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        self.calls
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
    fn read(&self, method: &'static str) {
        self.calls.total.fetch_add(1, Ordering::SeqCst);
        self.calls
            .log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(method);
    }
    fn record_read(&self, method: &'static str) {
        self.read(method);
        self.calls.record_reads.fetch_add(1, Ordering::SeqCst);
    }
    fn write(&self, method: &'static str) {
        self.read(method);
        self.calls.writes.fetch_add(1, Ordering::SeqCst);
    }
}

/// What a [`FaultyRepository`] does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RepoFault {
    /// Pass everything through.
    None = 0,
    /// Every call fails at once with `Unavailable`, as DynamoDB throttling
    /// looks once the SDK's own retries are spent.
    Throttle = 1,
    /// Every call waits [`FaultyRepository::with_timeout`] (default 200 ms),
    /// then fails with `Unavailable`: a call that timed out.
    Timeout = 2,
    /// Every conditional write fails its condition, as if a racing writer
    /// always won: `put` returns `ConditionFailed`, `try_lease` `Ok(false)`.
    /// Reads and audit appends pass.
    ConditionFailed = 3,
    /// `append_audit` fails with `Unavailable`; everything else passes.
    AuditFails = 4,
}

/// Passes calls through until told to fail; switchable at run time like
/// `tokenkeep_envelope::testing::FaultyKeyProvider`, so a test can show
/// "storage down → clear error → storage back → works again".
#[derive(Debug)]
pub struct FaultyRepository {
    inner: Arc<dyn Repository>,
    fault: AtomicU8,
    timeout: Duration,
    /// Calls that failed because of an injected fault.
    pub injected: AtomicU64,
    /// The next this many `put` calls fail with `Unavailable` (see [`Self::fail_next_puts`]).
    failing_puts: AtomicU64,
    /// Writes that still pass before `failing_puts` apply.
    passing_puts: AtomicU64,
}

impl FaultyRepository {
    pub fn new(inner: Arc<dyn Repository>) -> Self {
        Self {
            inner,
            fault: AtomicU8::new(RepoFault::None as u8),
            timeout: Duration::from_millis(200),
            injected: AtomicU64::new(0),
            failing_puts: AtomicU64::new(0),
            passing_puts: AtomicU64::new(0),
        }
    }

    /// After `pass` more record writes succeed, the next `n` fail (see
    /// [`Self::fail_next_puts`]): fails the second write of an install.
    pub fn fail_puts_after(&self, pass: u64, n: u64) {
        self.passing_puts.store(pass, Ordering::SeqCst);
        self.failing_puts.fetch_add(n, Ordering::SeqCst);
    }

    /// The next `n` record writes (`put`) fail with `Unavailable` without
    /// reaching storage, as a write does that got 500s past the SDK's retries;
    /// every other call passes. Adds to any failures still pending.
    pub fn fail_next_puts(&self, n: u64) {
        self.failing_puts.fetch_add(n, Ordering::SeqCst);
    }

    /// Injected put failures not yet spent.
    pub fn pending_put_failures(&self) -> u64 {
        self.failing_puts.load(Ordering::SeqCst)
    }

    fn take_put_failure(&self) -> Result<(), RepoError> {
        if self
            .passing_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Ok(());
        }
        let took = self
            .failing_puts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        match took {
            true => Err(self.unavailable("injected: internal server error")),
            false => Ok(()),
        }
    }

    /// How long a `RepoFault::Timeout` call hangs before failing.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn set_fault(&self, fault: RepoFault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
    }

    pub fn fault(&self) -> RepoFault {
        match self.fault.load(Ordering::SeqCst) {
            1 => RepoFault::Throttle,
            2 => RepoFault::Timeout,
            3 => RepoFault::ConditionFailed,
            4 => RepoFault::AuditFails,
            _ => RepoFault::None,
        }
    }

    fn unavailable(&self, what: &'static str) -> RepoError {
        self.injected.fetch_add(1, Ordering::SeqCst);
        RepoError::Unavailable(what.into())
    }

    /// Applies Throttle and Timeout, which hit every call alike.
    async fn any_call(&self) -> Result<(), RepoError> {
        match self.fault() {
            RepoFault::Throttle => Err(self.unavailable("injected: throughput exceeded")),
            RepoFault::Timeout => {
                tokio::time::sleep(self.timeout).await;
                Err(self.unavailable("injected: request timed out"))
            }
            _ => Ok(()),
        }
    }

    async fn conditional_write(&self) -> Result<(), RepoError> {
        self.any_call().await?;
        if self.fault() == RepoFault::ConditionFailed {
            self.injected.fetch_add(1, Ordering::SeqCst);
            return Err(RepoError::ConditionFailed);
        }
        Ok(())
    }
}

/// Forwards every `Repository` method to `self.inner` after `$before` (an
/// async method of `Self` returning `Result<(), RepoError>`, or a counter).
macro_rules! forward_repository {
    ($ty:ty, |$this:ident| {
        get: $get:expr, get_with_tenant: $gwt:expr, list_tenant: $list:expr, put: $put:expr, delete: $delete:expr,
        revoke: $revoke:expr, revoked_at: $revoked:expr, restore_revocation: $restorer:expr,
        scan_revocations: $scanr:expr,
        tenant_state: $ts:expr, open_generation: $og:expr, purge_tenant: $purge:expr,
        try_lease: $lease:expr, release_lease: $release:expr, query_due: $due:expr,
        scan_records: $scan:expr, scan_tenants: $scant:expr, restore_tenant: $restore:expr,
        put_state: $ps:expr, consume_state: $cs:expr, record_event: $re:expr, event_seen: $es:expr,
        append_audit: $aa:expr, append_audit_claiming: $aac:expr, query_audit: $qa:expr $(,)?
    }) => {
        #[async_trait]
        impl Repository for $ty {
            async fn get(&self, key: &RecordKey) -> Result<Option<StoredRecord>, RepoError> {
                let $this = self;
                $get;
                self.inner.get(key).await
            }
            // Forwarded, not left to the default: the inner repository's own
            // (one BatchGetItem on DynamoDB) is what is being wrapped.
            async fn get_with_tenant(
                &self,
                key: &RecordKey,
            ) -> Result<(Option<StoredRecord>, Option<TenantState>), RepoError> {
                let $this = self;
                $gwt;
                self.inner.get_with_tenant(key).await
            }
            async fn list_tenant(&self, pk: &str) -> Result<Vec<StoredRecord>, RepoError> {
                let $this = self;
                $list;
                self.inner.list_tenant(pk).await
            }
            async fn put(&self, record: &StoredRecord, expect: Expect) -> Result<(), RepoError> {
                let $this = self;
                $put;
                self.inner.put(record, expect).await
            }
            async fn delete(&self, key: &RecordKey) -> Result<bool, RepoError> {
                let $this = self;
                $delete;
                self.inner.delete(key).await
            }
            async fn revoke(&self, key: &RecordKey, revoked_at: i64) -> Result<bool, RepoError> {
                let $this = self;
                $revoke;
                self.inner.revoke(key, revoked_at).await
            }
            async fn revoked_at(&self, key: &RecordKey) -> Result<Option<i64>, RepoError> {
                let $this = self;
                $revoked;
                self.inner.revoked_at(key).await
            }
            async fn restore_revocation(
                &self,
                key: &RecordKey,
                revoked_at: i64,
            ) -> Result<bool, RepoError> {
                let $this = self;
                $restorer;
                self.inner.restore_revocation(key, revoked_at).await
            }
            async fn scan_revocations(&self) -> Result<Vec<(RecordKey, i64)>, RepoError> {
                let $this = self;
                $scanr;
                self.inner.scan_revocations().await
            }
            async fn tenant_state(&self, pk: &str) -> Result<Option<TenantState>, RepoError> {
                let $this = self;
                $ts;
                self.inner.tenant_state(pk).await
            }
            async fn open_generation(&self, pk: &str) -> Result<u64, RepoError> {
                let $this = self;
                $og;
                self.inner.open_generation(pk).await
            }
            async fn purge_tenant(&self, pk: &str, now: i64) -> Result<usize, RepoError> {
                let $this = self;
                $purge;
                self.inner.purge_tenant(pk, now).await
            }
            async fn try_lease(
                &self,
                key: &RecordKey,
                version: u64,
                generation: u64,
                owner: &str,
                now: i64,
                until: i64,
            ) -> Result<bool, RepoError> {
                let $this = self;
                $lease;
                self.inner
                    .try_lease(key, version, generation, owner, now, until)
                    .await
            }
            async fn release_lease(&self, key: &RecordKey, owner: &str) -> Result<(), RepoError> {
                let $this = self;
                $release;
                self.inner.release_lease(key, owner).await
            }
            async fn query_due(
                &self,
                shard: &str,
                before: i64,
                after: Option<&DueCursor>,
                limit: usize,
            ) -> Result<(Vec<RecordKey>, Option<DueCursor>), RepoError> {
                let $this = self;
                $due;
                self.inner.query_due(shard, before, after, limit).await
            }
            async fn scan_records(
                &self,
                after: Option<(String, String)>,
                limit: usize,
            ) -> Result<(Vec<StoredRecord>, Option<(String, String)>), RepoError> {
                let $this = self;
                $scan;
                self.inner.scan_records(after, limit).await
            }
            async fn scan_tenants(&self) -> Result<Vec<(String, TenantState)>, RepoError> {
                let $this = self;
                $scant;
                self.inner.scan_tenants().await
            }
            async fn restore_tenant(
                &self,
                pk: &str,
                state: TenantState,
            ) -> Result<bool, RepoError> {
                let $this = self;
                $restore;
                self.inner.restore_tenant(pk, state).await
            }
            async fn put_state(&self, nonce: &str, expires_at: i64) -> Result<(), RepoError> {
                let $this = self;
                $ps;
                self.inner.put_state(nonce, expires_at).await
            }
            async fn consume_state(&self, nonce: &str, now: i64) -> Result<bool, RepoError> {
                let $this = self;
                $cs;
                self.inner.consume_state(nonce, now).await
            }
            async fn record_event(
                &self,
                event_id: &str,
                now: i64,
                expires_at: i64,
            ) -> Result<bool, RepoError> {
                let $this = self;
                $re;
                self.inner.record_event(event_id, now, expires_at).await
            }
            async fn event_seen(&self, event_id: &str, now: i64) -> Result<bool, RepoError> {
                let $this = self;
                $es;
                self.inner.event_seen(event_id, now).await
            }
            async fn append_audit(
                &self,
                record: &AuditRecord,
                expires_at: i64,
            ) -> Result<(), RepoError> {
                let $this = self;
                $aa;
                self.inner.append_audit(record, expires_at).await
            }
            async fn append_audit_claiming(
                &self,
                record: &AuditRecord,
                expires_at: i64,
                event_id: &str,
                now: i64,
                event_expires_at: i64,
            ) -> Result<bool, RepoError> {
                let $this = self;
                $aac;
                self.inner
                    .append_audit_claiming(record, expires_at, event_id, now, event_expires_at)
                    .await
            }
            async fn query_audit(
                &self,
                tenant: Option<&str>,
                since_ms: i64,
                limit: usize,
            ) -> Result<Vec<AuditRecord>, RepoError> {
                let $this = self;
                $qa;
                self.inner.query_audit(tenant, since_ms, limit).await
            }
        }
    };
}

forward_repository!(CountingRepository, |c| {
    get: c.record_read("get"), get_with_tenant: c.record_read("get_with_tenant"), list_tenant: c.record_read("list_tenant"), put: c.write("put"),
    delete: c.write("delete"), revoke: c.write("revoke"), revoked_at: c.read("revoked_at"),
    restore_revocation: c.write("restore_revocation"), scan_revocations: c.read("scan_revocations"),
    tenant_state: c.read("tenant_state"), open_generation: c.write("open_generation"),
    purge_tenant: c.write("purge_tenant"), try_lease: c.write("try_lease"), release_lease: c.write("release_lease"),
    query_due: c.read("query_due"), scan_records: c.read("scan_records"), scan_tenants: c.read("scan_tenants"),
    restore_tenant: c.write("restore_tenant"), put_state: c.write("put_state"), consume_state: c.write("consume_state"),
    record_event: c.write("record_event"), event_seen: c.read("event_seen"),
    append_audit: { c.read("append_audit"); c.calls.audit_appends.fetch_add(1, Ordering::SeqCst) },
    append_audit_claiming: {
        c.write("append_audit_claiming");
        c.calls.audit_appends.fetch_add(1, Ordering::SeqCst)
    },
    query_audit: c.read("query_audit"),
});

forward_repository!(FaultyRepository, |f| {
    get: f.any_call().await?, get_with_tenant: f.any_call().await?, list_tenant: f.any_call().await?,
    put: { f.take_put_failure()?; f.conditional_write().await? }, delete: f.any_call().await?,
    revoke: f.any_call().await?, revoked_at: f.any_call().await?,
    restore_revocation: f.any_call().await?, scan_revocations: f.any_call().await?,
    tenant_state: f.any_call().await?, open_generation: f.any_call().await?,
    purge_tenant: f.any_call().await?,
    // A lost lease race is `Ok(false)` in the trait's contract, not an error.
    try_lease: {
        f.any_call().await?;
        if f.fault() == RepoFault::ConditionFailed {
            f.injected.fetch_add(1, Ordering::SeqCst);
            return Ok(false);
        }
    },
    release_lease: f.any_call().await?, query_due: f.any_call().await?,
    scan_records: f.any_call().await?, scan_tenants: f.any_call().await?,
    restore_tenant: f.any_call().await?, put_state: f.any_call().await?,
    consume_state: f.any_call().await?, record_event: f.any_call().await?, event_seen: f.any_call().await?,
    append_audit: {
        f.any_call().await?;
        if f.fault() == RepoFault::AuditFails {
            return Err(f.unavailable("injected: audit table unavailable"));
        }
    },
    append_audit_claiming: {
        f.any_call().await?;
        if f.fault() == RepoFault::AuditFails {
            return Err(f.unavailable("injected: audit table unavailable"));
        }
    },
    query_audit: f.any_call().await?,
});
