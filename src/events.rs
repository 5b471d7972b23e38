//! Events: append-only JSON lines at `<root>/events/YYYY-MM-DD/<node>/events.jsonl`, with the
//! guide's fields (type, severity, source, service, correlation id, data) plus time and node.
//! Events never carry a secret: callers put names and states in `data`, never values.

/// The guide's normalized event types.
pub const TYPES: [&str; 11] = [
    "deployment_started",
    "deployment_completed",
    "deployment_failed",
    "service_unhealthy",
    "service_recovered",
    "node_offline",
    "node_online",
    "healthcheck_failed",
    "remediation_started",
    "remediation_completed",
    "incident",
];

/// One event as a JSON line (with the trailing newline).
pub fn line(
    kind: &str,
    severity: &str,
    source: &str,
    service: &str,
    correlation_id: &str,
    node: &str,
    data: serde_json::Value,
) -> String {
    let v = serde_json::json!({
        "time": crate::command::now_rfc3339(),
        "node": node,
        "type": kind,
        "severity": severity,
        "source": source,
        "service": service,
        "correlation_id": correlation_id,
        "data": data,
    });
    format!("{v}\n")
}
