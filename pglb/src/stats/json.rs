//! `show stat json` and the stats page's `;json`: HAProxy's typed JSON
//! layout (an array of rows, each an array of field objects with position,
//! name, tags and a typed value), with pglb's PostgreSQL fields appended
//! after HAProxy's columns.

use super::csv::{COLUMNS, field};
use super::{Kind, Row};
use serde_json::{Value, json};

fn obj_type(k: Option<Kind>) -> &'static str {
    match k {
        Some(Kind::Frontend) => "Frontend",
        Some(Kind::Backend) => "Backend",
        _ => "Server",
    }
}

/// HAProxy's field types: names and text are `str`, counters `u64`,
/// `lastsess` may be -1 (`s64`).
fn typed(name: &str, text: &str) -> Value {
    if name != "pxname" && name != "svname" {
        if let Ok(v) = text.parse::<u64>() {
            return json!({"type": "u64", "value": v});
        }
        if let Ok(v) = text.parse::<i64>() {
            return json!({"type": "s64", "value": v});
        }
    }
    json!({"type": "str", "value": text})
}

fn entry(row: &Row, pos: usize, name: &str, value: Value) -> Value {
    let nature = match name {
        "pxname" | "svname" => "Name",
        "stot" | "bin" | "bout" | "econ" | "ereq" | "wretr" | "wredis" | "chkfail" | "chkdown" | "lbtot" | "cli_abrt" | "srv_abrt" | "conn_tot" => {
            "Counter"
        }
        "status" | "check_status" | "check_desc" | "last_chk" | "addr" | "mode" | "algo" | "pg_role" => "Output",
        _ => "Gauge",
    };
    json!({
        "objType": obj_type(row.kind),
        "proxyId": row.iid,
        "id": row.sid,
        "field": {"pos": pos, "name": name},
        "processNum": 1,
        "tags": {"origin": if pos < 2 { "Key" } else { "Metric" }, "nature": nature, "scope": "Process"},
        "value": value,
    })
}

pub fn render(rows: &[Row]) -> String {
    let all: Vec<Value> = rows
        .iter()
        .map(|row| {
            let mut fields: Vec<Value> = COLUMNS
                .iter()
                .enumerate()
                .filter(|(_, c)| **c != "-")
                .filter_map(|(pos, c)| {
                    let text = field(row, c);
                    (!text.is_empty()).then(|| entry(row, pos, c, typed(c, &text)))
                })
                .collect();
            let mut pos = COLUMNS.len();
            let mut extra = |name: &str, value: Option<Value>| {
                if let Some(v) = value {
                    fields.push(entry(row, pos, name, v));
                }
                pos += 1;
            };
            extra("pg_role", row.pg_role.map(|r| json!({"type": "str", "value": r})));
            extra("pg_lag_seconds", row.lag_seconds.map(|v| json!({"type": "flt", "value": v})));
            extra("pg_lag_bytes", row.lag_bytes.map(|v| json!({"type": "u64", "value": v})));
            extra("pg_streaming", row.streaming.map(|v| json!({"type": "str", "value": if v { "yes" } else { "no" }})));
            extra("pg_split_brain", row.split_brain.map(|v| json!({"type": "u32", "value": u8::from(v)})));
            extra("pg_paused", row.paused.map(|v| json!({"type": "u32", "value": u8::from(v)})));
            Value::Array(fields)
        })
        .collect();
    let mut s = Value::Array(all).to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_arrays_of_typed_fields() {
        let row = Row {
            pxname: "pg".into(),
            svname: "a".into(),
            kind: Some(Kind::Server),
            scur: 3,
            status: "UP".into(),
            pg_role: Some("replica"),
            ..Default::default()
        };
        let v: Value = serde_json::from_str(&render(&[row])).unwrap();
        let fields = v[0].as_array().unwrap();
        let by = |n: &str| fields.iter().find(|f| f["field"]["name"] == n).unwrap().clone();
        assert_eq!(by("pxname")["value"]["value"], "pg");
        assert_eq!(by("scur")["value"], json!({"type": "u64", "value": 3}));
        assert_eq!(by("status")["value"]["value"], "UP");
        assert_eq!(by("pg_role")["value"]["value"], "replica");
        assert_eq!(by("scur")["objType"], "Server");
    }
}
