//! Counts of the guarantees the store enforces, through one seam the
//! functions pass in ([`InstallationStore::with_metrics`]; in Lambda each
//! count is a CloudWatch EMF line, see `tokenkeep_runtime::EmfStoreMetrics`).
//! The template's alarms watch these names. No dimensions: per-tenant ones
//! would make a metric per workspace, and the tenant is in the log line that
//! goes with every count.
//!
//! [`InstallationStore::with_metrics`]: crate::InstallationStore::with_metrics

/// What the store counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMetric {
    /// A sealed field or its data key did not open (edited ciphertext, a
    /// record moved to another key or version, the wrong KMS key): tampering
    /// as the store sees it. The read failed closed.
    DecryptFailed,
    /// A refresh on the request path failed; the read failed. (The rotation
    /// sweep counts its own failures under the same name, per sweep.)
    RefreshFailed,
    /// Slack refused a refresh token; the installation was marked
    /// `needs_reinstall` and serves nothing until the workspace reinstalls.
    NeedsReinstall,
    /// A record of a purged or superseded generation was refused (an old item
    /// written back, a purge stopped half-way).
    StaleRecordRefused,
}

impl StoreMetric {
    /// The CloudWatch metric name.
    pub fn name(self) -> &'static str {
        match self {
            StoreMetric::DecryptFailed => "DecryptFailed",
            StoreMetric::RefreshFailed => "RefreshFailed",
            StoreMetric::NeedsReinstall => "NeedsReinstall",
            StoreMetric::StaleRecordRefused => "StaleRecordRefused",
        }
    }
}

/// Where the store's counts go. Must not fail or block the caller.
pub trait StoreMetrics: Send + Sync + std::fmt::Debug {
    fn count(&self, metric: StoreMetric);
}

/// Counts nowhere: the default of a store built without a sink.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoStoreMetrics;

impl StoreMetrics for NoStoreMetrics {
    fn count(&self, _metric: StoreMetric) {}
}

/// Counts in memory, for tests that assert a metric was emitted.
#[derive(Debug, Default)]
pub struct CountingStoreMetrics(std::sync::Mutex<Vec<StoreMetric>>);

impl CountingStoreMetrics {
    /// How many times `metric` was counted.
    pub fn count_of(&self, metric: StoreMetric) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|m| **m == metric)
            .count()
    }
}

impl StoreMetrics for CountingStoreMetrics {
    fn count(&self, metric: StoreMetric) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(metric);
    }
}
