//! HAProxy's HTML stats page, in the look operators already know: the
//! process header with the colour legend, then one table per proxy holding
//! its FRONTEND, server and BACKEND rows, with pglb's PostgreSQL columns
//! (role, lag, streaming) appended as one more column group.
//!
//! The page is self-contained (inline CSS, no script, nothing fetched) so it
//! works from an air-gapped bastion, and [`render`] reads no clock: every
//! value comes from the [`Row`]s and the [`Page`], so the same snapshot
//! always renders the same bytes and tests can compare text.

use super::{Kind, Row};
use std::fmt::Write;

/// Page-level facts shown in the header.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Seconds between automatic refreshes; `None` for `;norefresh`.
    pub refresh: Option<u64>,
    /// The stats URI, for the links to `;csv`, `;json`, `;norefresh`.
    pub uri: String,
    /// `None` when `stats hide-version` is set.
    pub version: Option<String>,
    pub pid: u32,
    pub uptime_secs: u64,
    pub node: String,
    /// Sessions open now, across frontends, and the configured global maxconn.
    pub current_sessions: u64,
    pub maxconn: Option<u32>,
    /// True while pglb is draining (SIGTERM received).
    pub stopping: bool,
}

/// HAProxy's stylesheet: its class names and colours, so the page reads the
/// same at a glance (the two transition shades are made more distinct:
/// going down is yellow-green, going up orange), plus pglb's split-brain,
/// stopping and digit-grouping styles.
const CSS: &str = "\
body { font-family: arial, helvetica, sans-serif; font-size: 12px; font-weight: normal; color: black; background: white; }
th, td { font-size: 10px; }
h1 { font-size: x-large; margin-bottom: 0.5em; color: #3030a0; }
h2 { font-family: helvetica, arial; font-size: x-large; font-weight: bold; font-style: italic; color: #6020a0; margin: 0; }
h3 { font-family: helvetica, arial; font-size: 16px; font-weight: bold; color: #b00040; background: #e8e8d0; margin: 0; }
a { color: #3030a0; }
ul { margin-top: 0.25em; padding-left: 1.5em; }
.hr { margin-top: 0.25em; border-color: black; border-bottom-style: solid; }
.titre { background: #20d0d0; color: #000000; font-weight: bold; text-align: center; }
.frontend, .backend { background: #e8e8d0; }
.frontend td:first-child, .backend td:first-child { font-weight: bold; }
.active_down { background: #ff9090; }
.active_going_up { background: #ffb040; }
.active_going_down { background: #e4f78c; }
.active_up { background: #c0ffc0; }
.active_draining { background: #20a0ff; }
.active_no_check { background: #e0e0e0; }
.backup_up { background: #b0d0ff; }
.backup_going_up { background: #ff80ff; }
.backup_going_down { background: #c060ff; }
.backup_draining { background: #cc9900; }
.maintain { background: #c07820; }
.g { margin-right: 0.25em; }
.bad { color: #c00000; font-weight: bold; }
.splitbrain { background: #e00000; color: white; font-weight: bold; letter-spacing: 0.05em; padding: 1px 6px; }
.paused { background: #ffd060; color: #503000; font-weight: bold; padding: 1px 6px; }
.stopping { background: #ff9090; border: 2px solid #b00040; color: #600020; font-size: 14px; font-weight: bold; padding: 4px 8px; margin: 0.5em 0; }
table.tbl { border-collapse: collapse; border-style: none; }
table.tbl td { text-align: right; border: 1px solid gray; padding: 2px 3px; white-space: nowrap; }
table.tbl td.ac { text-align: center; }
table.tbl td.al { text-align: left; }
table.tbl td.splitbrain { text-align: center; }
table.tbl th { border: 1px solid gray; padding: 1px 3px; white-space: nowrap; }
table.tbl th.pxname { background: #b00040; color: #ffff40; font-weight: bold; border-style: solid solid none solid; padding: 2px 3px; text-align: left; }
table.tbl th.empty { border-style: none; background: white; text-align: left; }
table.lgd { border-collapse: collapse; border-style: none none none solid; border-width: 1px; border-color: black; }
table.lgd td { border: 1px solid gray; padding: 2px; width: 1.5em; }
table.lgd td.noborder { border-style: none; padding: 2px 6px 2px 2px; white-space: nowrap; width: auto; }
table.info td { vertical-align: top; padding: 0 1.5em 0 0; }
";

/// The column groups after the name column, with their sub-headers, as on
/// HAProxy's page (minus the HTTP-only "Session rate" and "Denied").
const GROUPS: &[(&str, &[&str])] = &[
    ("Queue", &["Cur", "Max", "Limit"]),
    ("Sessions", &["Cur", "Max", "Limit", "Total", "LbTot", "Last"]),
    ("Bytes", &["In", "Out"]),
    ("Errors", &["Req", "Conn", "Resp"]),
    ("Warnings", &["Retr", "Redis"]),
    ("Server", &["Status", "LastChk", "Wght", "Act", "Bck", "Chk", "Dwn", "Dwntme"]),
    ("PostgreSQL", &["Role", "Lag", "Lag bytes", "Streaming"]),
];

/// Renders the whole page.
pub fn render(rows: &[Row], page: &Page) -> String {
    let mut out = String::with_capacity(8192 + 1536 * rows.len());
    head(&mut out, page);
    header(&mut out, rows, page);
    // Rows arrive in HAProxy order, grouped per proxy; one table each.
    for proxy in rows.chunk_by(|a, b| a.iid == b.iid && a.pxname == b.pxname) {
        table(&mut out, proxy);
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn head(out: &mut String, page: &Page) {
    out.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n");
    let _ = writeln!(out, "<title>Statistics Report for pglb on {}</title>", esc(&page.node));
    if let Some(n) = page.refresh {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{n}\">");
    }
    let _ = write!(out, "<style>\n{CSS}</style>\n</head>\n<body>\n");
}

/// The process block: identity on the left, the legend in the middle and the
/// links on the right, as HAProxy lays it out.
fn header(out: &mut String, rows: &[Row], page: &Page) {
    match &page.version {
        Some(v) => {
            let _ = writeln!(out, "<h1>pglb version {}</h1>", esc(v));
        }
        None => out.push_str("<h1>pglb</h1>\n"),
    }
    let _ = writeln!(out, "<h2>Statistics Report for pid {} on {}</h2>", page.pid, esc(&page.node));
    if page.stopping {
        out.push_str(
            "<div class=\"stopping\">STOPPING: pglb received a stop signal; no new sessions are accepted, open sessions are draining.</div>\n",
        );
    }
    out.push_str("<hr class=\"hr\">\n<h3>&gt; General process information</h3>\n<table class=\"info\"><tr>\n<td nowrap>\n");
    let _ =
        write!(out, "<p><b>pid = </b>{}<br>\n<b>uptime = </b>{}<br>\n<b>node = </b>{}<br>\n", page.pid, uptime(page.uptime_secs), esc(&page.node));
    let maxconn = page.maxconn.map_or_else(|| "unlimited".to_string(), |m| m.to_string());
    let _ = writeln!(out, "<b>current conns = </b>{}; <b>maxconn = </b>{maxconn}<br>", page.current_sessions);
    let servers: Vec<&Row> = rows.iter().filter(|r| kind(r) == Kind::Server).collect();
    let up = servers.iter().filter(|r| r.status.starts_with("UP") || r.status == "no check").count();
    let proxies = rows.chunk_by(|a, b| a.iid == b.iid && a.pxname == b.pxname).count();
    let _ = writeln!(out, "<b>proxies = </b>{proxies}; <b>servers = </b>{up} up / {} configured</p>\n</td>", servers.len());
    out.push_str("<td nowrap>");
    legend(out);
    out.push_str("</td>\n<td nowrap>\n<b>Display option:</b>\n<ul>\n");
    let uri = esc(&page.uri);
    match page.refresh {
        Some(_) => {
            let _ = write!(out, "<li><a href=\"{uri};norefresh\">Disable refresh</a></li>\n<li><a href=\"{uri}\">Refresh now</a></li>\n");
        }
        None => {
            let _ = write!(out, "<li><a href=\"{uri}\">Enable refresh</a></li>\n<li><a href=\"{uri};norefresh\">Refresh now</a></li>\n");
        }
    }
    let _ =
        write!(out, "</ul>\n<b>Exports:</b>\n<ul>\n<li><a href=\"{uri};csv\">CSV export</a></li>\n<li><a href=\"{uri};json\">JSON export</a></li>\n");
    out.push_str("<li><a href=\"/metrics\">Prometheus metrics</a></li>\n</ul>\n</td>\n</tr></table>\n<hr class=\"hr\">\n");
}

/// HAProxy's two-column legend, plus pglb's split-brain marker.
fn legend(out: &mut String) {
    const PAIRS: &[(&str, &str, &str, &str)] = &[
        ("active_up", "active UP", "backup_up", "backup UP"),
        ("active_going_down", "active UP, going down", "backup_going_down", "backup UP, going down"),
        ("active_going_up", "active DOWN, going up", "backup_going_up", "backup DOWN, going up"),
        ("active_down", "active or backup DOWN", "active_no_check", "not checked"),
    ];
    out.push_str("<table class=\"lgd\">\n");
    for (c1, t1, c2, t2) in PAIRS {
        let _ = writeln!(
            out,
            "<tr><td class=\"{c1}\"></td><td class=\"noborder\">{t1}</td><td class=\"{c2}\"></td><td class=\"noborder\">{t2}</td></tr>"
        );
    }
    out.push_str("<tr><td class=\"maintain\"></td><td class=\"noborder\" colspan=\"3\">active or backup DOWN for maintenance (MAINT)</td></tr>\n");
    out.push_str("<tr><td class=\"active_draining\"></td><td class=\"noborder\" colspan=\"3\">active or backup SOFT STOPPED for maintenance (DRAIN)</td></tr>\n");
    out.push_str("<tr><td class=\"splitbrain\"></td><td class=\"noborder\" colspan=\"3\">SPLIT BRAIN: two servers of a backend claim to be primary</td></tr>\n");
    out.push_str("</table>\n");
}

/// One proxy: its name bar, the two header lines, then its rows.
fn table(out: &mut String, rows: &[Row]) {
    let px = esc(&rows[0].pxname);
    let split = rows.iter().any(|r| kind(r) == Kind::Backend && r.split_brain == Some(true));
    let paused = rows.iter().any(|r| kind(r) == Kind::Backend && r.paused == Some(true));
    let badge = match (split, paused) {
        (true, _) => " <span class=\"splitbrain\">SPLIT BRAIN</span>",
        (false, true) => " <span class=\"paused\">PAUSED: new clients wait (resume backend)</span>",
        _ => "",
    };
    let _ = write!(out, "<table class=\"tbl\" width=\"100%\" id=\"{px}\">\n<tr class=\"titre\"><th class=\"pxname\" width=\"10%\">{px}</th>");
    let _ = writeln!(out, "<th class=\"empty\" width=\"90%\">{badge}</th></tr>\n</table>");
    out.push_str("<table class=\"tbl\" width=\"100%\">\n<tr class=\"titre\"><th rowspan=\"2\"></th>");
    for (group, subs) in GROUPS {
        let _ = write!(out, "<th colspan=\"{}\">{group}</th>", subs.len());
    }
    out.push_str("</tr>\n<tr class=\"titre\">");
    for sub in GROUPS.iter().flat_map(|(_, subs)| subs.iter()) {
        let _ = write!(out, "<th>{sub}</th>");
    }
    out.push_str("</tr>\n");
    for r in rows {
        row(out, r);
    }
    out.push_str("</table>\n<p></p>\n");
}

/// The row's type; rows built without one are recognised by their name.
fn kind(r: &Row) -> Kind {
    r.kind.unwrap_or(match r.svname.as_str() {
        "FRONTEND" => Kind::Frontend,
        "BACKEND" => Kind::Backend,
        _ => Kind::Server,
    })
}

/// Appends `<td{attrs}>{html}</td>`; `html` must already be escaped.
fn td(out: &mut String, attrs: &str, html: &str) {
    let _ = write!(out, "<td{attrs}>{html}</td>");
}

/// A ` title="…"` attribute, escaped.
fn title(text: &str) -> String {
    format!(" title=\"{}\"", esc(text))
}

fn row(out: &mut String, r: &Row) {
    let k = kind(r);
    let server = k == Kind::Server;
    let class = match k {
        Kind::Frontend => "frontend",
        Kind::Backend => "backend",
        Kind::Server => server_class(&r.status, r.bck == Some(1)),
    };
    let _ = write!(out, "<tr class=\"{class}\">");
    let name = match k {
        Kind::Frontend => "Frontend".to_string(),
        Kind::Backend => "Backend".to_string(),
        Kind::Server => esc(&r.svname),
    };
    let mut about = vec![format!("mode {}", r.mode)];
    about.extend(r.addr.as_ref().map(|a| format!("address {a}")));
    about.extend(r.algo.map(|a| format!("balance {a}")));
    td(out, &format!(" class=\"ac\"{}", title(&about.join(", "))), &name);

    // Queue. A server without maxqueue shows "-" (no limit), as in HAProxy.
    td(out, "", &opt(r.qcur));
    td(out, "", &opt(r.qmax));
    td(out, "", &if server { r.qlimit.map_or("-".into(), num) } else { opt(r.qlimit) });

    // Sessions, with the average timings behind the total.
    td(out, "", &num(r.scur));
    td(out, "", &num(r.smax));
    td(out, "", &if server { r.slim.map_or("-".into(), num) } else { opt(r.slim) });
    let timings = match (r.qtime, r.ctime, r.ttime) {
        (Some(q), Some(c), Some(t)) => title(&format!("average times: queue {q} ms, connect {c} ms, session {t} ms")),
        _ => String::new(),
    };
    td(out, &timings, &num(r.stot));
    td(out, "", &opt(r.lbtot));
    let last = match r.lastsess {
        Some(s) if s < 0 => "never".to_string(),
        Some(s) => human_time(s as u64),
        None => String::new(),
    };
    td(out, "", &last);

    // Bytes: exact count on the page, readable size on hover.
    td(out, &title(&human_bytes(r.bin)), &num(r.bin));
    td(out, &title(&human_bytes(r.bout)), &num(r.bout));

    // Errors; sessions pglb refused itself with a FATAL are told on hover.
    let fatal = r.errors_sent.map(|n| title(&format!("{n} sessions answered with a PostgreSQL FATAL by pglb"))).unwrap_or_default();
    td(out, if k == Kind::Frontend { &fatal } else { "" }, &opt(r.ereq));
    td(out, if k == Kind::Backend { &fatal } else { "" }, &opt(r.econ));
    td(out, "", if k == Kind::Frontend { "" } else { "0" });

    // Warnings.
    td(out, "", &opt(r.wretr));
    td(out, "", &opt(r.wredis));

    server_cells(out, r, k);
    pg_cells(out, r, k);
    out.push_str("</tr>\n");
}

/// The "Server" group: status with time since the last change, last check,
/// weights and health-check counters.
fn server_cells(out: &mut String, r: &Row, k: Kind) {
    let since = r.lastchg.map(|t| format!("{} ", human_time(t))).unwrap_or_default();
    let status = match k {
        Kind::Frontend => esc(&r.status),
        _ if r.status == "no check" => format!("{since}<i>no check</i>"),
        _ => format!("{since}{}", esc(&r.status)),
    };
    let mut attrs = " class=\"ac\"".to_string();
    if k != Kind::Server && (r.status.starts_with("DOWN") || r.status == "STOP") {
        attrs = " class=\"ac active_down\"".into();
    }
    if let (Some(h), Some(rise), Some(fall)) = (r.check_health, r.check_rise, r.check_fall) {
        attrs.push_str(&title(&format!("check health {h}, rise {rise}, fall {fall}")));
    }
    td(out, &attrs, &status);

    let lastchk = match (&r.check_status, r.check_duration, &r.check_desc) {
        (Some(s), d, desc) => {
            let mut text = s.clone();
            if let Some(ms) = d {
                let _ = write!(text, " in {ms}ms");
            }
            if let Some(desc) = desc {
                let _ = write!(text, ": {desc}");
            }
            esc(&text)
        }
        (None, _, Some(desc)) => esc(desc),
        _ => String::new(),
    };
    td(out, " class=\"al\"", &lastchk);

    td(out, " class=\"ac\"", &opt(r.weight));
    // Servers say Y/- like HAProxy; the backend counts its usable servers.
    let flag = |v: Option<u64>| match (k, v) {
        (Kind::Server, Some(0)) => "-".to_string(),
        (Kind::Server, Some(_)) => "Y".to_string(),
        (_, v) => opt(v),
    };
    td(out, " class=\"ac\"", &flag(r.act));
    td(out, " class=\"ac\"", &flag(r.bck));
    td(out, "", &opt(r.chkfail));
    td(out, "", &opt(r.chkdown));
    td(out, "", &r.downtime.map(human_time).unwrap_or_default());
}

/// pglb's PostgreSQL group: what the SQL check saw on each server; on the
/// BACKEND row, the split-brain alarm.
fn pg_cells(out: &mut String, r: &Row, k: Kind) {
    if k == Kind::Backend && r.split_brain == Some(true) {
        td(out, " class=\"splitbrain\" colspan=\"4\"", "SPLIT BRAIN: two servers claim primary");
        return;
    }
    let role = match r.pg_role {
        Some("primary") => "<b>primary</b>".to_string(),
        Some(role) => esc(role),
        None => String::new(),
    };
    td(out, " class=\"ac\"", &role);
    td(out, "", &r.lag_seconds.map(|s| format!("{s:.1}s")).unwrap_or_default());
    match r.lag_bytes {
        Some(b) => td(out, &title(&format!("{b} bytes")), &human_bytes(b)),
        None => td(out, "", ""),
    }
    let streaming = match r.streaming {
        Some(true) => "yes",
        Some(false) => "<span class=\"bad\">no</span>",
        None => "",
    };
    td(out, " class=\"ac\"", streaming);
}

/// The row colour for a server status, with HAProxy's class names; backup
/// servers get the backup shades where HAProxy has them.
fn server_class(status: &str, backup: bool) -> &'static str {
    let pick = |active, bk| if backup { bk } else { active };
    let going_up = status.strip_prefix("DOWN ").is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    if status.starts_with("MAINT") {
        "maintain"
    } else if status.starts_with("DRAIN") || status.starts_with("NOLB") {
        pick("active_draining", "backup_draining")
    } else if status.starts_with("UP ") {
        pick("active_going_down", "backup_going_down")
    } else if status == "UP" {
        pick("active_up", "backup_up")
    } else if going_up {
        pick("active_going_up", "backup_going_up")
    } else if status.starts_with("DOWN") {
        "active_down"
    } else {
        "active_no_check"
    }
}

/// HAProxy's `human_time()`: at most two units, largest first, zero units
/// skipped ("5s", "1m", "1h2m", "3d4h", "1h1s"); "0s" for zero.
fn human_time(t: u64) -> String {
    const UNITS: [(u64, u64, char); 4] = [(86_400, u64::MAX, 'd'), (3_600, 24, 'h'), (60, 60, 'm'), (1, 60, 's')];
    let mut out = String::new();
    let mut shown = 0;
    for (size, modulo, unit) in UNITS {
        let v = t / size % modulo;
        if shown < 2 && v > 0 {
            let _ = write!(out, "{v}{unit}");
            shown += 1;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}

/// HAProxy's header uptime: "1d 2h03m04s".
fn uptime(t: u64) -> String {
    format!("{}d {}h{:02}m{:02}s", t / 86_400, t % 86_400 / 3_600, t % 3_600 / 60, t % 60)
}

/// A size in binary units ("512 B", "1.5 MiB") for tooltips and lag bytes.
fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.1} {}", UNITS[i])
}

/// A count with its thousands set apart by spacing, not by a separator
/// character, so copying the cell still yields a plain number.
fn num(n: u64) -> String {
    let digits = n.to_string();
    let first = match digits.len() % 3 {
        0 => 3,
        r => r,
    };
    let mut out = String::with_capacity(digits.len() + 24 * (digits.len() / 3));
    let (head, rest) = digits.split_at(first);
    if rest.is_empty() {
        return digits;
    }
    let _ = write!(out, "<span class=\"g\">{head}</span>");
    for (i, group) in rest.as_bytes().chunks(3).enumerate() {
        let group = std::str::from_utf8(group).unwrap_or_default();
        if (i + 1) * 3 < rest.len() {
            let _ = write!(out, "<span class=\"g\">{group}</span>");
        } else {
            out.push_str(group);
        }
    }
    out
}

fn opt(v: Option<u64>) -> String {
    v.map(num).unwrap_or_default()
}

/// Escapes text for HTML content and double- or single-quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(px: &str, sv: &str, status: &str, check: (&str, &str)) -> Row {
        Row {
            pxname: px.into(),
            svname: sv.into(),
            kind: Some(Kind::Server),
            iid: 2,
            sid: 1,
            qcur: Some(0),
            qmax: Some(0),
            status: status.into(),
            weight: Some(1),
            act: Some(1),
            bck: Some(0),
            chkfail: Some(0),
            chkdown: Some(0),
            lastchg: Some(125),
            downtime: Some(0),
            lbtot: Some(0),
            check_status: Some(check.0.into()),
            check_duration: Some(3),
            check_desc: Some(check.1.into()),
            check_rise: Some(2),
            check_fall: Some(3),
            check_health: Some(4),
            lastsess: Some(-1),
            qtime: Some(0),
            ctime: Some(1),
            ttime: Some(0),
            addr: Some("10.0.0.1:5432".into()),
            mode: "tcp",
            ..Default::default()
        }
    }

    fn frontend(px: &str, iid: usize) -> Row {
        Row {
            pxname: px.into(),
            svname: "FRONTEND".into(),
            kind: Some(Kind::Frontend),
            iid,
            status: "OPEN".into(),
            slim: Some(1000),
            ereq: Some(0),
            mode: "tcp",
            errors_sent: Some(0),
            ..Default::default()
        }
    }

    fn backend(px: &str, iid: usize, status: &str, act: u64) -> Row {
        Row {
            pxname: px.into(),
            svname: "BACKEND".into(),
            kind: Some(Kind::Backend),
            iid,
            qcur: Some(0),
            qmax: Some(0),
            econ: Some(0),
            wretr: Some(0),
            wredis: Some(0),
            status: status.into(),
            weight: Some(act),
            act: Some(act),
            bck: Some(0),
            chkdown: Some(2),
            lastchg: Some(3_720),
            lbtot: Some(0),
            lastsess: Some(-1),
            qtime: Some(0),
            ctime: Some(0),
            ttime: Some(0),
            mode: "tcp",
            algo: Some("roundrobin"),
            split_brain: Some(false),
            errors_sent: Some(0),
            ..Default::default()
        }
    }

    fn replica(mut r: Row, lag: f64, bytes: u64, streaming: bool) -> Row {
        r.pg_role = Some("replica");
        r.lag_seconds = Some(lag);
        r.lag_bytes = Some(bytes);
        r.streaming = Some(streaming);
        r
    }

    #[test]
    fn escapes_names_and_descriptions() {
        let mut s = server("px&'q", "<script>", "UP", ("L7OK", "a \"quoted\" <b>"));
        s.iid = 2;
        let html = render(&[s], &Page::default());
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("px&amp;&#39;q"));
        assert!(html.contains("a &quot;quoted&quot; &lt;b&gt;"));
        assert_eq!(esc(r#"&<>"'"#), "&amp;&lt;&gt;&quot;&#39;");
    }

    #[test]
    fn refresh_meta_only_when_refreshing() {
        let page = Page { refresh: Some(5), uri: "/stats".into(), ..Default::default() };
        let html = render(&[], &page);
        assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
        assert!(html.contains(r#"href="/stats;norefresh">Disable refresh"#));
        for link in [r#"href="/stats;csv""#, r#"href="/stats;json""#, r#"href="/metrics""#] {
            assert!(html.contains(link), "{link}");
        }
        let html = render(&[], &Page { refresh: None, ..page });
        assert!(!html.contains("http-equiv"));
        assert!(html.contains(r#"href="/stats">Enable refresh"#));
    }

    #[test]
    fn server_states_have_their_colours() {
        let down = server("rw", "pg2", "DOWN", ("L7STS", "role replica, primary required"));
        let html = render(&[down], &Page::default());
        assert!(html.contains(r#"<tr class="active_down"><td class="ac" title="mode tcp, address 10.0.0.1:5432">pg2</td>"#));
        assert_eq!(server_class("UP", false), "active_up");
        assert_eq!(server_class("UP", true), "backup_up");
        assert_eq!(server_class("UP 1/3", false), "active_going_down");
        assert_eq!(server_class("DOWN 1/2", false), "active_going_up");
        assert_eq!(server_class("DOWN (unresolved)", false), "active_down");
        assert_eq!(server_class("MAINT", false), "maintain");
        assert_eq!(server_class("DRAIN", false), "active_draining");
        assert_eq!(server_class("no check", false), "active_no_check");
    }

    #[test]
    fn split_brain_is_marked() {
        let mut be = backend("rw", 2, "DOWN", 0);
        assert!(!render(std::slice::from_ref(&be), &Page::default()).contains("two servers claim primary"));
        be.split_brain = Some(true);
        let html = render(&[be], &Page::default());
        assert!(html.contains(r#"<td class="splitbrain" colspan="4">SPLIT BRAIN: two servers claim primary</td>"#));
        assert!(html.contains(r#"<span class="splitbrain">SPLIT BRAIN</span>"#));
    }

    #[test]
    fn every_proxy_gets_a_table() {
        let rows = [frontend("alpha", 2), backend("alpha", 2, "UP", 1), frontend("beta", 3), frontend("gamma", 4)];
        let html = render(&rows, &Page::default());
        for px in ["alpha", "beta", "gamma"] {
            assert!(html.contains(&format!(r#"<th class="pxname" width="10%">{px}</th>"#)), "{px}");
        }
        assert_eq!(html.matches(r#"<th class="pxname""#).count(), 3);
    }

    #[test]
    fn header_shows_process_facts() {
        let page = Page { version: Some("1.2.3".into()), pid: 42, uptime_secs: 93_784, node: "lb1".into(), stopping: true, ..Default::default() };
        let html = render(&[], &page);
        assert!(html.contains("pglb version 1.2.3"));
        assert!(html.contains("1d 2h03m04s"));
        assert!(html.contains("STOPPING"));
        let html = render(&[], &Page { version: None, stopping: false, ..page });
        assert!(!html.contains("version") && !html.contains("STOPPING"));
    }

    #[test]
    fn durations_and_sizes_read_like_haproxy() {
        assert_eq!(human_time(0), "0s");
        assert_eq!(human_time(5), "5s");
        assert_eq!(human_time(59), "59s");
        assert_eq!(human_time(60), "1m");
        assert_eq!(human_time(61), "1m1s");
        assert_eq!(human_time(3_720), "1h2m");
        assert_eq!(human_time(3_601), "1h1s");
        assert_eq!(human_time(3 * 86_400 + 4 * 3_600 + 5 * 60), "3d4h");
        assert_eq!(human_time(86_400), "1d");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536 * 1024), "1.5 MiB");
        assert_eq!(num(999), "999");
        assert_eq!(num(1_234_567), r#"<span class="g">1</span><span class="g">234</span>567"#);
        assert_eq!(num(123_456), r#"<span class="g">123</span>456"#);
    }

    /// Writes a realistic page to `target/stats-sample.html` for a visual check.
    #[test]
    fn writes_sample_page() {
        let check = "role replica, lag 0.0s, 0 bytes, streaming, primary required";
        let mut primary = server("pg_rw", "pg1", "UP", ("L7OK", "role primary"));
        primary.pg_role = Some("primary");
        (primary.scur, primary.smax, primary.stot, primary.lbtot) = (12, 40, 18_233, Some(18_233));
        (primary.bin, primary.bout, primary.lastsess, primary.lastchg) = (48_213_777, 1_907_331_092, Some(0), Some(273_600));
        let mut rw = vec![frontend("pg_rw", 2), primary];
        for (i, sv) in ["pg2", "pg3"].into_iter().enumerate() {
            let mut s = replica(server("pg_rw", sv, "DOWN", ("L7STS", check)), 0.0, 0, true);
            (s.sid, s.chkfail, s.chkdown, s.downtime, s.lastchg) = (i + 2, Some(1), Some(1), Some(273_600), Some(273_600));
            rw.push(s);
        }
        (rw[0].scur, rw[0].smax, rw[0].stot, rw[0].bin, rw[0].bout) = (12, 40, 18_233, 48_213_777, 1_907_331_092);
        rw.push(backend("pg_rw", 2, "UP", 1));

        let mut ro = vec![frontend("pg_ro", 3)];
        (ro[0].scur, ro[0].smax, ro[0].stot, ro[0].bin, ro[0].bout) = (7, 9, 18_001, 4_000_000, 1_400_000_000);
        let ok = ["role replica, lag 0.3s, 4096 bytes, streaming", "role replica, lag 1.2s, 1048576 bytes, streaming"];
        for (i, (sv, desc)) in ["pg2", "pg3"].into_iter().zip(ok).enumerate() {
            let mut s = replica(server("pg_ro", sv, "UP", ("L7OK", desc)), 0.3 + i as f64 * 0.9, 4096 << (i * 8), true);
            (s.iid, s.scur, s.stot, s.bin, s.bout) = (3, 3 + i as u64, 9_000 + i as u64, 2_000_000, 700_000_000);
            ro.push(s);
        }
        let mut lagging = replica(server("pg_ro", "pg4", "DOWN", ("L7STS", "role replica, lag 12.4s > 10s")), 12.4, 96 << 20, false);
        (lagging.iid, lagging.chkfail, lagging.chkdown, lagging.downtime, lagging.lastchg) = (3, Some(4), Some(2), Some(754), Some(34));
        ro.push(lagging);
        let mut be = backend("pg_ro", 3, "UP", 2);
        be.iid = 3;
        ro.push(be);

        let mut stats = frontend("stats", 4);
        stats.mode = "http";
        let rows: Vec<Row> = rw.into_iter().chain(ro).chain([stats]).collect();
        let page = Page {
            refresh: Some(10),
            uri: "/stats".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
            pid: 4242,
            uptime_secs: 273_845,
            node: "db-lb-1".into(),
            current_sessions: 17,
            maxconn: Some(2000),
            stopping: false,
        };
        let html = render(&rows, &page);
        for px in ["pg_rw", "pg_ro", "stats"] {
            assert!(html.contains(px));
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stats-sample.html"), html).unwrap();
    }
}
