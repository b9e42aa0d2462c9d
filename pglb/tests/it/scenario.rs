//! The lab scenarios (seed 004's scripts), short variants, on a lab of their
//! own (failover kills a replica). CI fails if one regresses.

use crate::common::*;
use pglb::scenario;
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
