/// Emits one CloudWatch Embedded Metric Format line (namespace `tokenkeep`,
/// no dimensions, which is what the template's alarms match). Printed to
/// stdout directly, not through tracing, so CloudWatch parses it as EMF.
pub fn emit_metric(name: &str, value: f64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let line = serde_json::json!({
        "_aws": {
            "Timestamp": now as u64,
            "CloudWatchMetrics": [{ "Namespace": "tokenkeep", "Dimensions": [[]], "Metrics": [{ "Name": name, "Unit": "Count" }] }]
        },
        name: value,
    });
    println!("{line}");
}

/// The store's counts as EMF lines: what [`crate::App::build`] wires into
/// every store, so the template's `DecryptFailed` and `RefreshFailed` alarms
/// see request-path failures from every function.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmfStoreMetrics;

impl tokenkeep_installations::StoreMetrics for EmfStoreMetrics {
    fn count(&self, metric: tokenkeep_installations::StoreMetric) {
        emit_metric(metric.name(), 1.0);
    }
}
