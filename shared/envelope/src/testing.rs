//! Test doubles that sit next to the real providers: a counting wrapper (call
//! accounting for benchmarks) and a fault-injecting wrapper (KMS down, throttled
//! or denying access).

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use async_trait::async_trait;

use crate::{
    DataKey, EncryptedDataKey, EncryptionContext, EnvelopeError, KeyProvider, PlainDataKey,
};

/// Counts calls per operation, passing them through.
#[derive(Debug)]
pub struct CountingKeyProvider<P> {
    inner: P,
    pub generates: AtomicU64,
    pub decrypts: AtomicU64,
    pub re_encrypts: AtomicU64,
}

impl<P> CountingKeyProvider<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            generates: AtomicU64::new(0),
            decrypts: AtomicU64::new(0),
            re_encrypts: AtomicU64::new(0),
        }
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.generates.load(Ordering::Relaxed)
            + self.decrypts.load(Ordering::Relaxed)
            + self.re_encrypts.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for CountingKeyProvider<P> {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        self.generates.fetch_add(1, Ordering::Relaxed);
        self.inner.generate_data_key(ctx).await
    }
    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        self.decrypts.fetch_add(1, Ordering::Relaxed);
        self.inner.decrypt_data_key(edk, ctx).await
    }
    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        self.re_encrypts.fetch_add(1, Ordering::Relaxed);
        self.inner.re_encrypt(edk, ctx, to).await
    }
}

/// What a [`FaultyKeyProvider`] does with the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    Unavailable = 1,
    AccessDenied = 2,
    /// Only `generate_data_key` fails (Unavailable); decrypts still work.
    GenerateUnavailable = 3,
    /// Every call hangs until the fault is lifted (`set_fault(Fault::None)`) or
    /// the stall limit passes ([`FaultyKeyProvider::with_stall_limit`]), then
    /// passes through: KMS answering late, as a stalled connection looks.
    Stall = 4,
}

/// Passes calls through until told to fail; switchable at run time so a test
/// can show "KMS down → fail closed → KMS back → works again".
#[derive(Debug)]
pub struct FaultyKeyProvider<P> {
    inner: P,
    fault: AtomicU8,
    /// Wakes stalled calls when the fault changes.
    changed: tokio::sync::Notify,
    stall_limit: std::time::Duration,
    /// Calls that have started stalling (tests wait for the first one).
    pub stalled: AtomicU64,
}

impl<P> FaultyKeyProvider<P> {
    pub fn new(inner: P) -> Self {
        Self {
            inner,
            fault: AtomicU8::new(Fault::None as u8),
            changed: tokio::sync::Notify::new(),
            stall_limit: std::time::Duration::from_secs(60),
            stalled: AtomicU64::new(0),
        }
    }

    /// The longest a `Fault::Stall` call hangs (default 60 s).
    pub fn with_stall_limit(mut self, limit: std::time::Duration) -> Self {
        self.stall_limit = limit;
        self
    }

    pub fn set_fault(&self, fault: Fault) {
        self.fault.store(fault as u8, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    async fn stall(&self) {
        if self.fault.load(Ordering::SeqCst) != Fault::Stall as u8 {
            return;
        }
        self.stalled.fetch_add(1, Ordering::SeqCst);
        let lifted = async {
            loop {
                let changed = self.changed.notified();
                if self.fault.load(Ordering::SeqCst) != Fault::Stall as u8 {
                    return;
                }
                changed.await;
            }
        };
        let _ = tokio::time::timeout(self.stall_limit, lifted).await;
    }

    fn check_generate(&self) -> Result<(), EnvelopeError> {
        match self.fault.load(Ordering::SeqCst) {
            3 => Err(EnvelopeError::Unavailable(
                "injected: generate unavailable".into(),
            )),
            _ => self.check(),
        }
    }

    fn check(&self) -> Result<(), EnvelopeError> {
        match self.fault.load(Ordering::SeqCst) {
            1 => Err(EnvelopeError::Unavailable(
                "injected: key provider unavailable".into(),
            )),
            2 => Err(EnvelopeError::AccessDenied),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl<P: KeyProvider> KeyProvider for FaultyKeyProvider<P> {
    fn key_id(&self) -> &str {
        self.inner.key_id()
    }
    async fn generate_data_key(&self, ctx: &EncryptionContext) -> Result<DataKey, EnvelopeError> {
        self.stall().await;
        self.check_generate()?;
        self.inner.generate_data_key(ctx).await
    }
    async fn decrypt_data_key(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
    ) -> Result<Arc<PlainDataKey>, EnvelopeError> {
        self.stall().await;
        self.check()?;
        self.inner.decrypt_data_key(edk, ctx).await
    }
    async fn re_encrypt(
        &self,
        edk: &EncryptedDataKey,
        ctx: &EncryptionContext,
        to: &str,
    ) -> Result<EncryptedDataKey, EnvelopeError> {
        self.stall().await;
        self.check()?;
        self.inner.re_encrypt(edk, ctx, to).await
    }
}
