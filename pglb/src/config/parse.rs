//! Walks the tokenized lines section by section and builds the validated
//! model. Errors are collected (not returned at the first) so one
//! `pglb check` run reports every problem.

use super::error::{ConfigError, Warning};
use super::keywords::{self, SECTION_NO_EFFECT, SECTION_REJECTED};
use super::lexer::Line;
use super::model::*;
use super::proxy::{ProxyDraft, SectionKind};
use super::{global, lint, resolvers};
use std::path::Path;

/// Error and warning sink shared by the section parsers.
pub(super) struct Ctx<'a> {
    pub file: &'a Path,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
    /// `global`'s `ca-base`, `crt-base` and `ssl-server-verify`, for the
    /// lines after them (HAProxy reads them in order too).
    pub tls_defaults: TlsDefaults,
}

/// Where relative `ca-file` and `crt` paths are, and servers' `verify` default.
#[derive(Debug, Default, Clone)]
pub(super) struct TlsDefaults {
    pub ca_base: Option<std::path::PathBuf>,
    pub crt_base: Option<std::path::PathBuf>,
    pub server_verify: Option<crate::tls::Verify>,
}

impl TlsDefaults {
    pub fn ca(&self, file: &str) -> std::path::PathBuf {
        Self::under(self.ca_base.as_deref(), file)
    }

    pub fn crt(&self, file: &str) -> std::path::PathBuf {
        Self::under(self.crt_base.as_deref(), file)
    }

    fn under(base: Option<&Path>, file: &str) -> std::path::PathBuf {
        match base {
            Some(b) if Path::new(file).is_relative() => b.join(file),
            _ => std::path::PathBuf::from(file),
        }
    }
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path) -> Self {
        Ctx { file, errors: Vec::new(), warnings: Vec::new(), tls_defaults: TlsDefaults::default() }
    }

    pub fn error(&mut self, line: usize, message: impl Into<String>) {
        self.errors.push(ConfigError::at(self.file, line, message));
    }

    /// pglb's advice (see [`Warning::advice`]).
    pub fn warn(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning { file: self.file.to_path_buf(), line, message: message.into(), advice: true });
    }

    /// A warning HAProxy gives too (counted by `-dW`).
    pub fn warn_as_haproxy(&mut self, line: usize, message: impl Into<String>) {
        self.warnings.push(Warning { file: self.file.to_path_buf(), line, message: message.into(), advice: false });
    }

    /// The `i`th argument of `line`, or an error naming what is missing.
    pub fn arg<'l>(&mut self, line: &'l Line, i: usize, what: &str) -> Option<&'l str> {
        match line.args().get(i) {
            Some(a) => Some(a.as_str()),
            None => {
                self.error(line.number, format!("'{}' needs {what}", line.words[..=i.min(line.words.len() - 1)].join(" ")));
                None
            }
        }
    }

    /// Reports extra words after a keyword that takes `n` arguments.
    pub fn no_more_args(&mut self, line: &Line, n: usize) {
        if line.args().len() > n {
            let extra = line.args()[n..].join(" ");
            self.error(line.number, format!("'{}' takes {n} argument(s); remove '{extra}'", line.keyword()));
        }
    }

    /// Parses a number argument, reporting a clear error.
    pub fn number<T: std::str::FromStr>(&mut self, line: usize, keyword: &str, text: &str) -> Option<T> {
        match text.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(line, format!("'{keyword}' expects a whole number, not '{text}'"));
                None
            }
        }
    }
}

/// The result of parsing: the model plus the warnings worth showing.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<Warning>,
}

/// Everything one read of a configuration found: the model when there is
/// no error, plus every error and warning (a check shows them all).
#[derive(Debug, Clone)]
pub struct Report {
    pub config: Option<Config>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<Warning>,
}

impl Report {
    pub fn into_result(mut self) -> Result<Loaded, ConfigError> {
        match (self.config, self.errors.len()) {
            (Some(config), 0) => Ok(Loaded { config, warnings: self.warnings }),
            (_, 1) => Err(self.errors.remove(0)),
            _ => Err(ConfigError::Many(self.errors)),
        }
    }
}

pub(super) fn parse_lines(file: &Path, lines: Vec<Line>) -> Report {
    let mut ctx = Ctx::new(file);
    let mut config =
        Config { file: file.to_path_buf(), global: Global::default(), frontends: Vec::new(), backends: Vec::new(), resolvers: Vec::new() };
    config.global.stats_timeout = std::time::Duration::from_secs(10);

    let mut sections = split_sections(&mut ctx, lines);
    let mut defaults = ProxyDraft::default();
    let mut named_defaults: Vec<(String, ProxyDraft)> = Vec::new();
    let mut seen_names: Vec<(String, bool, bool, usize)> = Vec::new(); // name, is_frontend, is_backend, line

    for section in sections.drain(..) {
        match section.kind {
            RawKind::Global => global::parse(&mut ctx, &section.body, &mut config.global),
            RawKind::Resolvers => {
                if let Some(r) = resolvers::parse(&mut ctx, &section) {
                    config.resolvers.push(r);
                }
            }
            RawKind::Skip => {}
            RawKind::Proxy(kind) => {
                let name = section.name.clone();
                let mut draft = if kind == SectionKind::Defaults {
                    // A defaults section starts from scratch, or from another named defaults.
                    match &section.from {
                        Some(from) => match named_defaults.iter().find(|(n, _)| n == from) {
                            Some((_, d)) => d.clone(),
                            None => {
                                ctx.error(section.line, format!("defaults section '{from}' is not defined before this line"));
                                ProxyDraft::default()
                            }
                        },
                        None => ProxyDraft::default(),
                    }
                } else {
                    match &section.from {
                        Some(from) => match named_defaults.iter().find(|(n, _)| n == from) {
                            Some((_, d)) => d.clone(),
                            None => {
                                ctx.error(section.line, format!("defaults section '{from}' is not defined before this line"));
                                defaults.clone()
                            }
                        },
                        None => defaults.clone(),
                    }
                };
                draft.begin_section();
                for line in &section.body {
                    draft.apply(&mut ctx, kind, line);
                }
                match kind {
                    SectionKind::Defaults => {
                        if let Some(n) = &name {
                            named_defaults.push((n.clone(), draft.clone()));
                        }
                        defaults = draft;
                    }
                    _ => {
                        let Some(name) = name else { continue };
                        let is_fe = matches!(kind, SectionKind::Frontend | SectionKind::Listen);
                        let is_be = matches!(kind, SectionKind::Backend | SectionKind::Listen);
                        if let Some((_, fe, be, line)) = seen_names.iter().find(|(n, ..)| *n == name)
                            && ((is_fe && *fe) || (is_be && *be))
                        {
                            ctx.error(section.line, format!("proxy name '{name}' is already used at line {line}: give this section another name"));
                            continue;
                        }
                        seen_names.push((name.clone(), is_fe, is_be, section.line));
                        if draft.disabled {
                            ctx.warn(section.line, format!("proxy '{name}' is disabled and will not be started"));
                            continue;
                        }
                        draft.finish(&mut ctx, kind, &name, section.line, &mut config);
                    }
                }
            }
        }
    }

    resolve_references(&mut ctx, &mut config);
    resolve_logs(&mut config);
    overlapping_binds(&mut ctx, &config);
    lint::check(&mut ctx, &config);

    let config = ctx.errors.is_empty().then_some(config);
    Report { config, errors: ctx.errors, warnings: ctx.warnings }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RawKind {
    Global,
    Resolvers,
    Proxy(SectionKind),
    /// A section pglb does not use (warned about when it was opened).
    Skip,
}

/// A section header and the lines under it.
pub(super) struct RawSection {
    pub kind: RawKind,
    pub name: Option<String>,
    /// `defaults NAME from OTHER` / `backend NAME from DEFAULTS`.
    pub from: Option<String>,
    pub line: usize,
    pub body: Vec<Line>,
}

fn split_sections(ctx: &mut Ctx, lines: Vec<Line>) -> Vec<RawSection> {
    let mut sections: Vec<RawSection> = Vec::new();
    for line in lines {
        // configuration.txt 2.4's messages, wherever they stand.
        match line.keyword() {
            ".warning" => {
                ctx.warn_as_haproxy(line.number, line.args().join(" "));
                continue;
            }
            ".alert" => {
                ctx.error(line.number, line.args().join(" "));
                continue;
            }
            // pglb has no notice or diagnostic level for configuration findings.
            ".notice" | ".diag" => continue,
            _ => {}
        }
        if let Some(kind) = section_kind(ctx, &line) {
            let (name, from) = section_name(ctx, kind, &line);
            sections.push(RawSection { kind, name, from, line: line.number, body: Vec::new() });
            continue;
        }
        match sections.last_mut() {
            Some(s) => s.body.push(line),
            None => ctx.error(
                line.number,
                format!("'{}' is outside any section: start with 'global', 'defaults', 'frontend', 'backend' or 'listen'", line.keyword()),
            ),
        }
    }
    sections
}

/// Whether `keyword` starts a section (one pglb reads, ignores or rejects).
pub(super) fn is_section(keyword: &str) -> bool {
    matches!(keyword, "global" | "defaults" | "frontend" | "backend" | "listen" | "resolvers")
        || keywords::lookup(SECTION_NO_EFFECT, keyword).is_some()
        || keywords::lookup(SECTION_REJECTED, keyword).is_some()
}

fn section_kind(ctx: &mut Ctx, line: &Line) -> Option<RawKind> {
    let kw = line.keyword();
    let kind = match kw {
        "global" => RawKind::Global,
        "defaults" => RawKind::Proxy(SectionKind::Defaults),
        "frontend" => RawKind::Proxy(SectionKind::Frontend),
        "backend" => RawKind::Proxy(SectionKind::Backend),
        "listen" => RawKind::Proxy(SectionKind::Listen),
        "resolvers" => RawKind::Resolvers,
        _ => {
            if let Some(why) = keywords::lookup(SECTION_NO_EFFECT, kw) {
                ctx.warn(line.number, format!("section '{kw}' is ignored: {why}"));
                RawKind::Skip
            } else if let Some(why) = keywords::lookup(SECTION_REJECTED, kw) {
                ctx.error(line.number, format!("section '{kw}' is not supported: {why}"));
                RawKind::Skip
            } else {
                return None;
            }
        }
    };
    Some(kind)
}

fn section_name(ctx: &mut Ctx, kind: RawKind, line: &Line) -> (Option<String>, Option<String>) {
    let args = line.args();
    let needs_name = matches!(kind, RawKind::Resolvers | RawKind::Proxy(SectionKind::Frontend | SectionKind::Backend | SectionKind::Listen));
    let mut name = args.first().cloned();
    let mut from = None;
    if let Some(pos) = args.iter().position(|a| a == "from") {
        from = args.get(pos + 1).cloned();
        if from.is_none() {
            ctx.error(line.number, "'from' needs the name of a defaults section");
        }
        if pos == 0 {
            name = None;
        }
    }
    if needs_name && name.is_none() {
        ctx.error(line.number, format!("'{}' needs a name, e.g. '{} postgres'", line.keyword(), line.keyword()));
    }
    if let Some(n) = &name
        && !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        ctx.error(line.number, format!("'{n}' is not a valid name: use letters, digits, '-', '_', '.' and ':'"));
    }
    if kind == RawKind::Proxy(SectionKind::Listen) && args.len() >= 2 && args[1] != "from" {
        // `listen NAME ADDR:PORT` is HAProxy's old inline bind.
        ctx.error(line.number, format!("the address after the listen name is an old syntax: write 'bind {}' on its own line", args[1]));
    }
    (name, from)
}

/// `log global`: global's targets go first in each proxy's list, with
/// global's tag and host name for the headers.
fn resolve_logs(config: &mut Config) {
    let global = &config.global;
    let resolve = |logs: &mut ProxyLogs| {
        if logs.global {
            logs.targets.splice(0..0, global.logs.iter().cloned());
        }
        logs.tag = global.log_tag.clone();
        logs.hostname = global.log_send_hostname.clone();
    };
    for fe in &mut config.frontends {
        resolve(&mut fe.logs);
    }
    for be in &mut config.backends {
        resolve(&mut be.logs);
    }
}

/// Checks cross-references: default_backend names, server resolvers.
/// Two listeners on one address (or a wildcard and an address of the same
/// family, on one port) cannot both bind: say so at check time, not as
/// "Address already in use" at start. Port 0 (a port chosen by the kernel)
/// never collides.
fn overlapping_binds(ctx: &mut Ctx, config: &Config) {
    let mut seen: Vec<(std::net::SocketAddr, usize, &str)> = Vec::new();
    for fe in &config.frontends {
        for b in fe.binds.iter().filter(|b| b.addr.port() != 0) {
            let clash = seen.iter().find(|(other, ..)| {
                other.port() == b.addr.port()
                    && other.is_ipv4() == b.addr.is_ipv4()
                    && (other.ip() == b.addr.ip() || other.ip().is_unspecified() || b.addr.ip().is_unspecified())
            });
            match clash {
                Some((other, line, name)) => ctx.error(
                    b.line,
                    format!("{} overlaps {other}, already bound at line {line} (frontend '{name}'): the second listener would fail with 'Address already in use'; remove one or change its port", b.addr),
                ),
                None => seen.push((b.addr, b.line, &fe.name)),
            }
        }
    }
}

fn resolve_references(ctx: &mut Ctx, config: &mut Config) {
    let backend_names: Vec<String> = config.backends.iter().map(|b| b.name.to_string()).collect();
    for fe in &config.frontends {
        if let Some(be) = &fe.default_backend
            && !backend_names.contains(be)
        {
            ctx.error(fe.line, format!("frontend '{}' uses backend '{be}', which is not defined: add 'backend {be}' or fix the name", fe.name));
        }
        for sw in fe.switching.iter().filter(|sw| !backend_names.contains(&sw.backend)) {
            ctx.error(sw.line, format!("use_backend '{}' is not defined: add 'backend {}' or fix the name", sw.backend, sw.backend));
        }
    }
    let resolver_names: Vec<String> = config.resolvers.iter().map(|r| r.name.clone()).collect();
    for be in &config.backends {
        for s in &be.servers {
            if let Some(r) = &s.resolvers
                && !resolver_names.contains(r)
            {
                ctx.error(s.line, format!("server '{}' uses resolvers '{r}', which is not defined: add a 'resolvers {r}' section", s.name));
            }
        }
    }
}
