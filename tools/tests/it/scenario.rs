//! The lab scenarios (seed 004's scripts), short variants, on a lab of their
//! own (failover kills a replica). CI fails if one regresses.

use crate::common::*;
use pglb_tools::scenario;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_and_reports() {
    init_logs();
    let lab = own_lab(2).await;

    let lb = scenario::lb(&lab, 10).await.unwrap();
    assert_eq!(lb.json["by_node"]["replica1"], 5, "{}", lb.text);
    assert_eq!(lb.json["by_node"]["replica2"], 5, "{}", lb.text);

    let profile = scenario::profile(&lab).await.unwrap();
    assert!(profile.json["node"].as_str().unwrap().starts_with("replica"), "{}", profile.text);
    assert!(profile.json["query_ms"]["pglb"].as_f64().unwrap() > 0.0);
    assert!(profile.text.contains("pglb's share"));

    let lag = scenario::lag(&lab, scenario::LagOptions { max_lag: Duration::from_secs(1), inter: Duration::from_millis(300) }).await.unwrap();
    assert!(lag.json["down_seconds"].is_number(), "{}", lag.text);
    assert!(lag.json["up_seconds"].is_number(), "{}", lag.text);
    assert!(lag.json["reason"].as_str().unwrap().contains("> 1s"), "{}", lag.text);

    let fo = scenario::failover(&lab, scenario::FailoverOptions { inter: Duration::from_millis(300), fall: 2, rise: 2 }).await.unwrap();
    assert!(fo.json["detection_seconds"].is_number(), "{}", fo.text);
    assert!(fo.json["recovery_seconds"].is_number(), "{}", fo.text);
    assert_eq!(fo.json["new_connection_errors"], 0, "new connections must see no error: {}", fo.text);
    assert!(fo.json["queries_ok"].as_u64().unwrap() > 10, "{}", fo.text);
    lab.down().await.unwrap();
}

/// Issue 13's bar, one run each (docs/scenarios.md has five): with seed
/// timings, no client that arrives after the event sees an error, pglb
/// produces none, writes resume within 1.5 s (planned) or 2.5 s (crash,
/// promotion 1 s after the kill), and no acknowledged write is lost or
/// lands on a non-primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_planned_and_crash_show_no_client_error() {
    init_logs();
    for crash in [false, true] {
        let report = scenario::switchover(&lab_dir(), scenario::SwitchoverOptions { crash, runs: 1, proxy: scenario::Proxy::Pglb }).await.unwrap();
        let run = &report.json["runs"][0];
        let bound = if crash { 2.5 } else { 1.5 };
        assert_eq!(run["new_client_errors"], serde_json::json!({}), "{}", report.text);
        assert_eq!(run["errors_by_proxy"], 0, "{}", report.text);
        assert!(run["longest_gap_seconds"].as_f64().unwrap() <= bound, "{}", report.text);
        assert_eq!(run["lost_acknowledged_writes"], 0, "{}", report.text);
        assert_eq!(run["writes_on_non_primary"], 0, "{}", report.text);
        println!("{}", report.text);
    }
}
