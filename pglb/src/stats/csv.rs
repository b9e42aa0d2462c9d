//! HAProxy's CSV statistics format (`;csv` and `show stat`): the header of
//! HAProxy 2.6, column for column, so scripts and exporters that parse it by
//! position keep working. Columns pglb has no value for are left empty, as
//! HAProxy leaves columns that do not apply.

use super::{Kind, Row};
use std::fmt::Write;

/// HAProxy 2.6's `show stat` columns, in order (including the stats
/// modules' columns after `-`).
pub const COLUMNS: &[&str] = &[
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
    "-",
    "ssl_sess",
    "ssl_reused_sess",
    "ssl_failed_handshake",
    "h2_headers_rcvd",
    "h2_data_rcvd",
    "h2_settings_rcvd",
    "h2_rst_stream_rcvd",
    "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors",
    "h2_detected_strm_protocol_errors",
    "h2_rst_stream_resp",
    "h2_goaway_resp",
    "h2_open_connections",
    "h2_backend_open_streams",
    "h2_total_connections",
    "h2_backend_total_streams",
    "h1_open_connections",
    "h1_open_streams",
    "h1_total_connections",
    "h1_total_streams",
    "h1_bytes_in",
    "h1_bytes_out",
    "h1_spliced_bytes_in",
    "h1_spliced_bytes_out",
];

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// CSV fields may not contain commas or newlines (HAProxy replaces them).
fn clean(s: &str) -> String {
    s.replace([',', '\n', '\r'], " ")
}

/// The value of one column for one row.
pub fn field(row: &Row, column: &str) -> String {
    let server = row.kind == Some(Kind::Server);
    match column {
        "pxname" => clean(&row.pxname),
        "svname" => clean(&row.svname),
        "qcur" => opt(&row.qcur),
        "qmax" => opt(&row.qmax),
        "scur" => row.scur.to_string(),
        "smax" => row.smax.to_string(),
        "slim" => opt(&row.slim),
        "stot" => row.stot.to_string(),
        "bin" => row.bin.to_string(),
        "bout" => row.bout.to_string(),
        "dreq" if !server => "0".into(),
        "dresp" => "0".into(),
        "ereq" => opt(&row.ereq),
        "econ" => opt(&row.econ),
        "eresp" if row.kind != Some(Kind::Frontend) => "0".into(),
        "wretr" => opt(&row.wretr),
        "wredis" => opt(&row.wredis),
        "status" => clean(&row.status),
        "weight" => opt(&row.weight),
        "uweight" => opt(&row.uweight),
        "act" => opt(&row.act),
        "bck" => opt(&row.bck),
        "chkfail" => opt(&row.chkfail),
        "chkdown" => opt(&row.chkdown),
        "lastchg" => opt(&row.lastchg),
        "downtime" => opt(&row.downtime),
        "qlimit" => opt(&row.qlimit),
        "pid" => "1".into(),
        "iid" => row.iid.to_string(),
        "sid" => row.sid.to_string(),
        "lbtot" => opt(&row.lbtot),
        "type" => row.kind.map(|k| (k as u8).to_string()).unwrap_or_default(),
        "rate" | "rate_max" => "0".into(),
        "rate_lim" if row.kind == Some(Kind::Frontend) => "0".into(),
        "check_status" => opt(&row.check_status),
        "check_duration" => opt(&row.check_duration),
        // HAProxy fills check_code for layer-7 results (0: pglb's checks have no HTTP code).
        "check_code" if matches!(row.check_status.as_deref(), Some("L7OK" | "L7STS")) => "0".into(),
        "cli_abrt" if row.kind != Some(Kind::Frontend) => opt(&row.cli_abrt),
        "srv_abrt" if row.kind != Some(Kind::Frontend) => opt(&row.srv_abrt),
        "lastsess" => opt(&row.lastsess),
        "last_chk" => opt(&row.check_desc.as_deref().map(clean)),
        "qtime" => opt(&row.qtime),
        "ctime" => opt(&row.ctime),
        "rtime" => opt(&row.qtime.map(|_| 0)),
        "ttime" => opt(&row.ttime),
        "check_desc" => opt(&row.check_reason),
        "check_rise" => opt(&row.check_rise),
        "check_fall" => opt(&row.check_fall),
        "check_health" => opt(&row.check_health),
        "addr" => opt(&row.addr),
        "mode" => row.mode.to_string(),
        "algo" => opt(&row.algo),
        "conn_rate" | "conn_rate_max" if row.kind == Some(Kind::Frontend) => "0".into(),
        "conn_tot" => opt(&row.conn_tot),
        _ => String::new(),
    }
}

/// `show stat` / `;csv`: the `# ` header line, then one line per row.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::with_capacity(256 * (rows.len() + 1));
    out.push_str("# ");
    for c in COLUMNS {
        out.push_str(c);
        out.push(',');
    }
    out.push('\n');
    for row in rows {
        for c in COLUMNS {
            let _ = write!(out, "{},", field(row, c));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_haproxy_26() {
        assert_eq!(COLUMNS.len(), 128);
        assert_eq!(&COLUMNS[..5], &["pxname", "svname", "qcur", "qmax", "scur"]);
        assert_eq!(COLUMNS.iter().position(|c| *c == "check_desc"), Some(65));
        assert_eq!(COLUMNS.iter().position(|c| *c == "addr"), Some(73));
    }

    #[test]
    fn rows_have_every_column() {
        let row = Row { pxname: "a,b".into(), svname: "s".into(), kind: Some(Kind::Server), status: "UP".into(), ..Default::default() };
        let text = render(&[row]);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line.matches(',').count(), COLUMNS.len());
        assert!(line.starts_with("a b,s,"));
    }
}
