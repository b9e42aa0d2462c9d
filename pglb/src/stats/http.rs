//! The stats listener (`listen stats` + `mode http` + `stats enable`):
//! HAProxy's stats URI with its `;csv`, `;json` and `;norefresh` suffixes,
//! plus `/metrics` (Prometheus), `/healthz` (alive) and `/ready` (serving).
//!
//! `stats auth` protects the page and `/metrics` with HTTP Basic; the two
//! probe paths stay open so Kubernetes can call them.

use super::{csv, html, json, prometheus, snapshot};
use crate::config::StatsSettings;
use crate::state::{BindKey, FrontendState, Runtime};
use base64::Engine;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Longest a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the stats listener needs of the instance that runs it: the
/// configuration generation to report on.
pub trait Source: Send + Sync + 'static {
    fn runtime(&self) -> Arc<Runtime>;
}

pub async fn serve<S: Source>(control: Arc<S>, key: BindKey, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.cancelled() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (control, key) = (control.clone(), key.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                // Each request sees the current configuration generation.
                let rt = control.runtime();
                let fe = rt.frontend_for(&key).cloned();
                async move {
                    Ok::<_, Infallible>(match fe {
                        Some(fe) if req.method() == Method::POST => post(&rt, &fe, req).await,
                        Some(fe) => handle(&rt, &fe, &req),
                        None => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                // A client that shuts its write side after the request
                // (`socat`, `nc -N`, scripts) still gets the answer.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = "no-cache".parse() {
        r.headers_mut().insert(CACHE_CONTROL, v);
    }
    r
}

/// True when the request carries one of the configured `stats auth` pairs.
fn authorized(stats: &StatsSettings, req: &Request<Incoming>) -> bool {
    if stats.auth.is_empty() {
        return true;
    }
    let Some(given) = req.headers().get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else { return false };
    stats.auth.iter().any(|(u, p)| {
        let want = format!("{u}:{p}");
        // Compare every byte so the time taken does not reveal a prefix.
        want.len() == decoded.len() && want.bytes().zip(decoded.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    })
}

fn handle(rt: &Runtime, fe: &FrontendState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(stats) = fe.cfg.stats.as_ref() else { return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n") };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET, HEAD and the stats page's POST actions are served\n");
    }
    let target = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = req.uri().path();
    match path {
        "/healthz" => return reply(StatusCode::OK, "text/plain", "OK\n"),
        "/ready" => return ready(rt, req.uri().query().unwrap_or("")),
        _ => {}
    }
    let is_metrics = path == "/metrics";
    let is_stats = target.starts_with(stats.uri.as_str());
    if !is_metrics && !is_stats {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    if !authorized(stats, req) {
        let realm = stats.realm.as_deref().unwrap_or("HAProxy Statistics").replace('"', "'");
        let mut r = reply(StatusCode::UNAUTHORIZED, "text/plain", "401 Unauthorized: this page needs the stats auth credentials\n");
        if let Ok(v) = format!("Basic realm=\"{realm}\"").parse() {
            r.headers_mut().insert(WWW_AUTHENTICATE, v);
        }
        return r;
    }
    let mut rows = snapshot(rt);
    if is_metrics {
        return reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", prometheus::render(rt, &rows));
    }
    let options = &target[stats.uri.len()..];
    if let Some(scope) = scope(options) {
        rows.retain(|r| r.pxname.to_ascii_lowercase().contains(&scope));
    }
    if options.contains(";csv") {
        return reply(StatusCode::OK, "text/plain; charset=utf-8", csv::render(&rows));
    }
    if options.contains(";json") {
        return reply(StatusCode::OK, "application/json", json::render(&rows));
    }
    let page = html::Page {
        refresh: if options.contains(";norefresh") { None } else { stats.refresh.map(|d| d.as_secs().max(1)) },
        uri: stats.uri.clone(),
        version: (!stats.hide_version).then(|| env!("CARGO_PKG_VERSION").to_string()),
        pid: std::process::id(),
        uptime_secs: rt.started.elapsed().map(|d| d.as_secs()).unwrap_or(0),
        node: hostname(),
        current_sessions: rt.sessions.cur.load(std::sync::atomic::Ordering::Relaxed),
        maxconn: rt.config.global.maxconn,
        stopping: rt.stopping.is_cancelled(),
    };
    reply(StatusCode::OK, "text/html; charset=utf-8", html::render(&rows, &page))
}

/// HAProxy's `scope=NAME` (after the stats URI): only the proxies whose
/// name contains NAME, ignoring case (at most 20 characters, as HAProxy).
fn scope(options: &str) -> Option<String> {
    let at = options.find("scope=")? + "scope=".len();
    let value: String = options[at..].chars().take_while(|c| !matches!(c, ';' | '&' | '#')).take(20).collect();
    (!value.is_empty()).then(|| value.to_ascii_lowercase())
}

/// The stats page's actions (HAProxy's form: `b=BACKEND&s=SERVER[&s=...]&action=ACTION`),
/// allowed by `stats admin if TRUE`; answered, as HAProxy does, with a 303
/// to the stats URI and `;st=DONE`, `NONE` (no server given), `ERRP` (an
/// unknown backend, server or action) or `DENY` (not allowed).
async fn post(rt: &Runtime, fe: &FrontendState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    let Some(stats) = fe.cfg.stats.as_ref() else { return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n") };
    if !req.uri().path().starts_with(stats.uri.trim_end_matches(';')) {
        return reply(StatusCode::NOT_FOUND, "text/plain", "not found\n");
    }
    if !authorized(stats, &req) {
        return reply(StatusCode::UNAUTHORIZED, "text/plain", "401 Unauthorized: this page needs the stats auth credentials\n");
    }
    let code = if !stats.admin {
        "DENY"
    } else {
        match http_body_util::Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(body) => apply_action(rt, &body.to_bytes()),
            Err(_) => "ERRP",
        }
    };
    let mut r = reply(StatusCode::SEE_OTHER, "text/plain", Bytes::new());
    if let Ok(v) = format!("{};st={code}", stats.uri).parse() {
        r.headers_mut().insert(hyper::header::LOCATION, v);
    }
    r
}

fn apply_action(rt: &Runtime, body: &[u8]) -> &'static str {
    use crate::state::{Admin, Health};
    let form = String::from_utf8_lossy(body);
    let (mut backend, mut servers, mut action) = (None, Vec::new(), None);
    for pair in form.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "b" => backend = Some(v),
            "s" => servers.push(v),
            "action" => action = Some(v),
            _ => {}
        }
    }
    let Some(b) = backend else { return "ERRP" };
    let be = match b.strip_prefix('#') {
        Some(id) => {
            let ids = super::proxy_ids(rt);
            rt.backends.iter().find(|be| ids.iter().any(|(name, iid)| *name == &*be.cfg.name && id.parse::<usize>().ok() == Some(*iid)))
        }
        None => rt.backend(&b),
    };
    let Some(be) = be else { return "ERRP" };
    if servers.is_empty() {
        return "NONE";
    }
    let Some(action) = action else { return "ERRP" };
    let mut done = 0;
    for name in &servers {
        let Some(s) = be.server(name) else { continue };
        let by = "stats page";
        match action.as_str() {
            "ready" | "enable" => drop(crate::health::maintenance::set_admin(be, s, Admin::Ready, by)),
            "drain" => drop(crate::health::maintenance::set_admin(be, s, Admin::Drain, by)),
            "maint" | "disable" => drop(crate::health::maintenance::set_admin(be, s, Admin::Maint, by)),
            "dhlth" | "ehlth" if s.cfg.check => s.set_checks_enabled(action == "ehlth"),
            "hrunn" | "start" | "hdown" | "stop" => {
                if s.set_health(if matches!(action.as_str(), "hrunn" | "start") { Health::Up } else { Health::Down }) {
                    be.republish();
                }
            }
            "shutdown" => s.kill_sessions(),
            _ => return "ERRP",
        }
        done += 1;
    }
    match done {
        0 => "ERRP",
        n if n < servers.len() => "PART",
        _ => "DONE",
    }
}

/// A form value: `+` is a space, `%XX` a byte.
fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/ready`: 503 while stopping, or when no `mode tcp` frontend has a
/// usable server (this instance can serve nothing). One empty backend does
/// not make the instance unready: with a read-write and a read-only
/// frontend, losing every replica must not take the writes out of a
/// Kubernetes Service too. `?frontend=A,B` asks about those frontends only
/// (each needs a usable server), `?all` about every frontend.
fn ready(rt: &Runtime, query: &str) -> Response<Full<Bytes>> {
    if rt.soft_stop.is_cancelled() || rt.stopping.is_cancelled() {
        return reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "not ready: stopping\n");
    }
    let mut wanted: Option<Vec<&str>> = None;
    let mut all = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("frontend", names)) => wanted.get_or_insert_with(Vec::new).extend(names.split(',').filter(|n| !n.is_empty())),
            None if pair == "all" => all = true,
            _ => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("unknown parameter '{pair}': use frontend=NAME[,NAME] or all\n")),
        }
    }
    let tcp = || rt.frontends.iter().filter(|f| f.cfg.mode == crate::config::Mode::Tcp);
    if let Some(names) = &wanted
        && let Some(unknown) = names.iter().find(|n| !tcp().any(|f| &*f.cfg.name == **n))
    {
        return reply(StatusCode::BAD_REQUEST, "text/plain", format!("no mode tcp frontend named '{unknown}'\n"));
    }
    let asked: Vec<_> = tcp().filter(|f| wanted.as_ref().is_none_or(|w| w.contains(&&*f.cfg.name))).collect();
    let usable = |f: &FrontendState| f.backend.as_ref().is_some_and(|b| !b.usable.load().servers.is_empty());
    let empty: Vec<String> = asked
        .iter()
        .filter(|f| !usable(f))
        .map(|f| match &f.backend {
            Some(b) => format!("frontend {} -> backend {} has no usable server", f.cfg.name, b.cfg.name),
            None => format!("frontend {} has no backend", f.cfg.name),
        })
        .collect();
    let strict = all || wanted.is_some();
    let ok = if strict { empty.is_empty() } else { asked.is_empty() || asked.iter().any(|f| usable(f)) };
    match (ok, empty.is_empty()) {
        (true, true) => reply(StatusCode::OK, "text/plain", "ready\n"),
        (true, false) => reply(StatusCode::OK, "text/plain", format!("ready; {}\n", empty.join("; "))),
        (false, _) => reply(StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", empty.join("; "))),
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into())
}
