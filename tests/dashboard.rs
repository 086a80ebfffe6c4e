//! What the Grafana dashboard (`deploy/grafana/tideway.json`) queries, and whether an exposition of
//! tideway's `/metrics` has it: a dashboard panel on a metric tideway does not export shows nothing.

use std::collections::BTreeSet;

/// Every `tideway_*` metric name the dashboard's queries use.
pub fn dashboard_metrics() -> BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/tideway.json");
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 10, "the dashboard has queries");
    exprs.iter().flat_map(|expr| metric_names(expr)).collect()
}

/// The metric families an exposition declares (its `# TYPE` lines).
pub fn families(exposition: &str) -> BTreeSet<&str> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split_whitespace().next())
        .collect()
}

/// Whether `families` has the metric `name`, a histogram's `_bucket`, `_sum` and `_count` included.
pub fn exports(families: &BTreeSet<&str>, name: &str) -> bool {
    let family = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix).filter(|base| families.contains(base)))
        .unwrap_or(name);
    families.contains(family)
}

fn collect_exprs(value: &serde_json::Value, exprs: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => exprs.push(expr.clone()),
                    _ => collect_exprs(value, exprs),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, exprs)),
        _ => {}
    }
}

/// Identifiers starting with `tideway_` in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut at = 0;
    while let Some(found) = expr[at..].find("tideway_") {
        let start = at + found;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + expr[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len() - start);
        if boundary {
            names.push(expr[start..end].to_owned());
        }
        at = end;
    }
    names
}
