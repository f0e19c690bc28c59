//! A bounded cache of decrypted data keys, in front of any `KeyProvider`.
//!
//! Modelled on the AWS Encryption SDK's caching materials manager: an entry
//! lives at most `max_age` and serves at most `max_uses` decrypts, and at most
//! `max_entries` keys are held. Keys are zeroized when their last reference
//! drops (eviction, expiry, or the end of the request using them). Only
//! successful decrypts are cached: a failure always goes back to the provider.
//! Generation is never cached: every record write gets its own data key.
//!
//! Expired entries are also evicted on a timer (a task on the tokio runtime
//! the cache was made on, every half `max_age`), so a key nobody asks for
//! again is zeroized within its lifetime rather than held until the next
//! lookup or until the cache fills.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::{
    DataKey, EncryptedDataKey, EncryptionContext, EnvelopeError, KeyProvider, PlainDataKey,
};

#[derive(Debug, Clone, Copy)]
pub struct CacheLimits {
    pub enabled: bool,
    pub max_age: Duration,
    pub max_uses: u64,
    pub max_entries: usize,
}

impl Default for CacheLimits {
    /// Five minutes and 10,000 uses per key bound how long a key revoked in KMS
    /// (or a disabled KMS key) keeps working in a warm process.
    fn default() -> Self {
        Self {
            enabled: true,
            max_age: Duration::from_secs(300),
            max_uses: 10_000,
            max_entries: 10_000,
        }
    }
}

impl CacheLimits {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }
}

/// Counters for benchmarks and metrics: how many decrypts the cache answered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

struct Entry {
    key: Arc<PlainDataKey>,
    created: Instant,
    uses: u64,
}

pub struct CachingKeyProvider<P> {
    inner: P,
    limits: CacheLimits,
    /// Shared with the eviction timer, which holds it weakly and stops once
    /// the cache is dropped.
    entries: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: Arc<AtomicU64>,
}

type Entries = Mutex<HashMap<[u8; 32], Entry>>;

/// Drops entries older than `max_age`; returns how many.
fn evict_expired(entries: &Entries, max_age: Duration, evictions: &AtomicU64) -> usize {
    let mut entries = entries.lock().unwrap_or_else(|p| p.into_inner());
    let before = entries.len();
    entries.retain(|_, e| e.created.elapsed() < max_age);
    let n = before - entries.len();
    evictions.fetch_add(n as u64, Ordering::Relaxed);
    n
}

/// Runs [`evict_expired`] every half `max_age` while the cache lives. Without
/// a tokio runtime (a sync caller) there is no timer; lookups still evict.
fn spawn_eviction_timer(entries: &Arc<Entries>, max_age: Duration, evictions: &Arc<AtomicU64>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (entries, evictions) = (Arc::downgrade(entries), evictions.clone());
    let every = (max_age / 2).clamp(Duration::from_millis(10), Duration::from_secs(60));
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(entries) = entries.upgrade() else {
                return;
            };
            evict_expired(&entries, max_age, &evictions);
        }
    });
}

impl<P: std::fmt::Debug> std::fmt::Debug for CachingKeyProvider<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachingKeyProvider")
            .field("inner", &self.inner)
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<P> CachingKeyProvider<P> {
    pub fn new(inner: P, limits: CacheLimits) -> Self {
        let (entries, evictions) = (
            Arc::new(Mutex::new(HashMap::new())),
            Arc::new(AtomicU64::new(0)),
        );
        if limits.enabled {
            spawn_eviction_timer(&entries, limits.max_age, &evictions);
        }
        Self {
            inner,
            limits,
            entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions,
        }
    }

    /// Drops expired entries now (the timer does this on its own); returns how many.
    pub fn evict_expired(&self) -> usize {
        evict_expired(&self.entries, self.limits.max_age, &self.evictions)
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl<P: KeyProvider> CachingKeyProvider<P> {
    /// Drops every cached key (e.g. after a KMS key is disabled).
    pub fn clear(&self) {
        self.entries.lock().expect("cache poisoned").clear();
    }

    fn cache_key(edk: &EncryptedDataKey, ctx: &EncryptionContext) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update((edk.key_id.len() as u32).to_be_bytes());
        h.update(edk.key_id.as_bytes());
        h.update((edk.blob.len() as u32).to_be_bytes());
        h.update(&edk.blob);
        h.update(ctx.canonical_bytes());
        h.finalize().into()
    }

    fn lookup(&self, id: &[u8; 32]) -> Option<Arc<PlainDataKey>> {
        let mut entries = self.entries.lock().expect("cache poisoned");
        let entry = entries.get_mut(id)?;
        if entry.created.elapsed() >= self.limits.max_age || entry.uses >= self.limits.max_uses {
            entries.remove(id);
            self.evictions.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        entry.uses += 1;
        Some(entry.key.clone())
    }

    fn insert(&self, id: [u8; 32], key: Arc<PlainDataKey>) {
        let mut entries = self.entries.lock().expect("cache poisoned");
        if entries.len() >= self.limits.max_entries && !entries.contains_key(&id) {
            // Full: drop expired entries first, then the oldest one.
            let max_age = self.limits.max_age;
            let before = entries.len();
            entries.retain(|_, e| e.created.elapsed() < max_age);
            let oldest = entries
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| *k);
            if let Some(oldest) = oldest.filter(|_| entries.len() >= self.limits.max_entries) {
                entries.remove(&oldest);
            }
            self.evictions
                .fetch_add((before - entries.len()) as u64, Ordering::Relaxed);
        }
        if self.limits.max_entries > 0 {
            entries.insert(
                id,
                Entry {
                    key,
                    created: Instant::now(),
                    uses: 1,
                },
            );
        }
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for CachingKeyProvider<P> {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }

    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        self.inner.generate_data_key(ctx).await
    }

    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        if !self.limits.enabled {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return self.inner.decrypt_data_key(edk, ctx).await;
        }
        let id = Self::cache_key(edk, ctx);
        if let Some(key) = self.lookup(&id) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let key = self.inner.decrypt_data_key(edk, ctx).await?;
        self.insert(id, key.clone());
        Ok(key)
    }

    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to_key_id: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        self.inner.re_encrypt(edk, ctx, to_key_id).await
    }
}
