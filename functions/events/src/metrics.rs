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
    /// No listener matched; acknowledged without a token read or a call.
    Unhandled,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::UnknownTenant => "UnknownTenant",
            Metric::HandlerFailed => "HandlerFailed",
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
