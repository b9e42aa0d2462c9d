//! Medians, spreads and ratios of the samples, as JSON and a markdown table.

use super::{BenchOptions, Sample};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Figures where less is better (times and memory).
fn lower_is_better(workload: &str) -> bool {
    workload.starts_with("connect time") || workload.starts_with("idle")
}

fn unit(workload: &str) -> &'static str {
    if workload.starts_with("connect time") {
        "ms"
    } else if workload.starts_with("idle") {
        "KiB/conn"
    } else if workload.starts_with("large") {
        "MB/s"
    } else {
        "TPS"
    }
}

fn stats(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return Value::Null;
    }
    json!({"median": v[v.len() / 2], "min": v[0], "max": v[v.len() - 1], "n": v.len()})
}

pub fn summarize(samples: &[Sample], opts: &BenchOptions, versions: Vec<Value>) -> Value {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for s in samples {
        if !order.contains(&s.workload) {
            order.push(s.workload.clone());
        }
        let e = by.entry((s.workload.clone(), s.system.clone())).or_default();
        e.0.push(s.value);
        if let Some(c) = s.cpu_per_1k {
            e.1.push(c);
        }
    }
    let workloads: Vec<Value> = order
        .iter()
        .map(|w| {
            let systems: serde_json::Map<String, Value> = by
                .iter()
                .filter(|((ww, _), _)| ww == w)
                .map(|((_, s), (v, c))| (s.clone(), json!({"value": stats(v.clone()), "cpu_s_per_1k_tx": stats(c.clone())})))
                .collect();
            let med = |s: &str| systems.get(s).and_then(|v| v["value"]["median"].as_f64());
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => json!((a / b * 1000.0).round() / 1000.0),
                _ => Value::Null,
            };
            json!({
                "workload": w, "unit": unit(w), "lower_is_better": lower_is_better(w), "systems": systems,
                "pglb_vs_haproxy": ratio(med("pglb"), med("haproxy")), "pglb_vs_direct": ratio(med("pglb"), med("direct")),
                "pglb_vs_before": ratio(med("pglb"), med("pglb-before")),
            })
        })
        .collect();
    json!({
        "rounds": opts.rounds, "duration_s": opts.duration.as_secs(), "scale": opts.scale, "idle_connections": opts.idle,
        "versions": versions, "workloads": workloads,
    })
}

fn cell(v: &Value) -> String {
    match (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64()) {
        (Some(m), Some(lo), Some(hi)) if m >= 100.0 => format!("{m:.0} ({lo:.0}–{hi:.0})"),
        (Some(m), Some(lo), Some(hi)) => format!("{m:.2} ({lo:.2}–{hi:.2})"),
        _ => "—".into(),
    }
}

/// The table for docs/performance.md; with a `--baseline` run, a "pglb
/// before" column and a "pglb / before" ratio.
pub fn render_markdown(report: &Value) -> String {
    let empty = Vec::new();
    let workloads = report["workloads"].as_array().unwrap_or(&empty);
    let before = workloads.iter().any(|w| w["systems"]["pglb-before"].is_object());
    let mut systems = vec![("direct", "direct"), ("pglb", "pglb")];
    if before {
        systems.push(("pglb-before", "pglb before"));
    }
    systems.extend([("haproxy", "HAProxy"), ("pgbouncer", "PgBouncer")]);
    let mut ratios = vec![("pglb_vs_haproxy", "pglb / HAProxy"), ("pglb_vs_direct", "pglb / direct")];
    if before {
        ratios.push(("pglb_vs_before", "pglb / before"));
    }
    let mut out = String::from("| workload | unit |");
    for (_, title) in systems.iter().chain(&ratios) {
        out.push_str(&format!(" {title} |"));
    }
    out.push_str(&format!("\n|{}\n", "---|".repeat(2 + systems.len() + ratios.len())));
    for w in workloads {
        let name = w["workload"].as_str().unwrap_or("");
        let mut row = format!("| `{name}` | {} |", w["unit"].as_str().unwrap_or(""));
        for (s, _) in &systems {
            row.push_str(&format!(" {} |", cell(&w["systems"][s]["value"])));
        }
        for (r, _) in &ratios {
            row.push_str(&format!(" {} |", w[r].as_f64().map(|v| format!("{v:.2}×")).unwrap_or_else(|| "—".into())));
        }
        out.push_str(&row);
        out.push('\n');
    }
    let proxies: Vec<&(&str, &str)> = systems.iter().filter(|(s, _)| *s != "direct").collect();
    out.push_str("\nProxy CPU seconds per 1,000 transactions (median; from /proc/PID/stat):\n\n| workload |");
    for (_, title) in &proxies {
        out.push_str(&format!(" {title} |"));
    }
    out.push_str(&format!("\n|{}\n", "---|".repeat(1 + proxies.len())));
    for w in workloads {
        let c = |s: &str| w["systems"][s]["cpu_s_per_1k_tx"]["median"].as_f64().map(|v| format!("{v:.4}")).unwrap_or_else(|| "—".into());
        if w["systems"]["pglb"]["cpu_s_per_1k_tx"]["median"].is_number() {
            let mut row = format!("| `{}` |", w["workload"].as_str().unwrap_or(""));
            for (s, _) in &proxies {
                row.push_str(&format!(" {} |", c(s)));
            }
            out.push_str(&row);
            out.push('\n');
        }
    }
    out
}
