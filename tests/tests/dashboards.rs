//! The shipped Grafana dashboard and Prometheus alert rules query only what the code records:
//! the metric names of `idem_runtime::METRIC_NAMES`, and only their bounded labels. (`.ci/run`
//! also checks the rules, and the dashboard's queries, with `promtool`.)

use idem_runtime::{METRIC_NAMES, WRITE_DURATION_MS};

const DASHBOARD: &str = include_str!("../../observability/grafana/idem-dashboard.json");
const ALERTS: &str = include_str!("../../observability/prometheus/idem-alerts.yml");

/// The labels the protocol puts on its metrics (and `le`, which the histogram adds). Never a
/// tenant, key or user.
const LABELS: [&str; 6] = ["operation", "class", "outcome", "reason", "le", "table"];

/// Every `idempotent_…` metric a text names, with a histogram's series suffix removed.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("idempotent_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| *base == WRITE_DURATION_MS)
            })
            .unwrap_or(name);
        names.push(base.to_owned());
        rest = &tail[end..];
    }
    names
}

/// The label names in every `by (…)` and `{…}` of a PromQL expression.
fn label_names(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for (open, close) in [("by (", ')'), ("{", '}')] {
        for part in expr.split(open).skip(1) {
            let inside = part.split(close).next().unwrap_or_default();
            for item in inside.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && !name.starts_with('$') {
                    labels.push(name);
                }
            }
        }
    }
    labels
}

fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let panels = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels");
    panels
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| {
            target["expr"]
                .as_str()
                .expect("a target has an expr")
                .to_owned()
        })
        .collect()
}

#[test]
fn the_dashboard_queries_only_metrics_the_code_records() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 8, "{queries:?}");
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{query} queries no idem metric");
        for name in names {
            assert!(
                METRIC_NAMES.contains(&name.as_str()),
                "{query}: `{name}` is not recorded"
            );
        }
        for label in label_names(query) {
            assert!(
                LABELS.contains(&label.as_str()),
                "{query}: label `{label}` is not recorded"
            );
        }
    }
    let all = queries.join("\n");
    for name in METRIC_NAMES {
        assert!(
            all.contains(name),
            "the dashboard shows no panel of `{name}`"
        );
    }
}

#[test]
fn the_alert_rules_query_only_metrics_the_code_records() {
    let names = metric_names(ALERTS);
    assert!(!names.is_empty());
    for name in names {
        assert!(
            METRIC_NAMES.contains(&name.as_str()),
            "alert rules: `{name}` is not recorded"
        );
    }
    for alert in [
        "IdempotentWriteFailureRateHigh",
        "IdempotentReplayStorm",
        "IdempotencyKeyMismatchSpike",
        "IdempotentWriteLatencyP95High",
        "IdempotentAuditRowsLost",
        "IdempotentOutboxStalled",
        "IdempotentOutboxEventsParked",
        "IdempotentMaintenanceFailing",
    ] {
        assert!(
            ALERTS.contains(&format!("alert: {alert}")),
            "{alert} is missing"
        );
    }
}

#[test]
fn the_metric_scanner_sees_names_and_labels() {
    assert_eq!(
        metric_names(
            "rate(idempotent_write_duration_ms_bucket{a=\"b\"}[5m]) / idempotent_writes_total"
        ),
        ["idempotent_write_duration_ms", "idempotent_writes_total"]
    );
    assert_eq!(
        label_names("sum by (operation, le) (x{outcome=\"new\", class=~\"$class\"})"),
        ["operation", "le", "outcome", "class"]
    );
}
