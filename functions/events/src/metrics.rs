//! Counters ingestion emits. In Lambda they become CloudWatch Embedded
//! Metric Format lines through [`tokenkeep_runtime::emit_metric`] (namespace
//! `tokenkeep`, no dimensions: per-tenant dimensions would create one metric
//! per workspace, and the tenant is in the accompanying log line anyway).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// A signed request for a tenant with no installation (never installed,
    /// uninstalled, purged): acknowledged without processing.
    UnknownTenant,
    /// An [`EventHandler`](crate::EventHandler) returned an error or
    /// panicked; the request was still acknowledged.
    HandlerFailed,
    /// A listener answered but its lazy work could not be queued; the answer
    /// was sent, the lazy part will not run.
    LazyNotQueued,
    /// No listener matched; acknowledged without a token read or a call.
    Unhandled,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::UnknownTenant => "UnknownTenant",
            Metric::HandlerFailed => "HandlerFailed",
            Metric::LazyNotQueued => "LazyNotQueued",
            Metric::Unhandled => "Unhandled",
        }
    }
}

/// Where counts go. The router takes one so tests can count without parsing stdout.
pub trait MetricsSink: Send + Sync + std::fmt::Debug {
    /// Counts one occurrence of `metric`. Must not fail the request.
    fn count(&self, metric: Metric);
}

/// One EMF line per count on stdout (the Lambda log stream).
#[derive(Debug, Default, Clone, Copy)]
pub struct EmfStdout;

impl MetricsSink for EmfStdout {
    fn count(&self, metric: Metric) {
        tokenkeep_runtime::emit_metric(metric.name(), 1.0);
    }
}

/// Keeps every count in memory: the fake next to [`EmfStdout`], for tests
/// that check what a request counted.
#[derive(Debug, Default)]
pub struct CountingMetrics(std::sync::Mutex<Vec<Metric>>);

impl CountingMetrics {
    /// How many times `metric` was counted.
    pub fn count_of(&self, metric: Metric) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|m| **m == metric)
            .count()
    }
}

impl MetricsSink for CountingMetrics {
    fn count(&self, metric: Metric) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(metric);
    }
}
