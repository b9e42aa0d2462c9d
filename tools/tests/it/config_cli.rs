//! Malformed configurations: each names its line and the fix. And the
//! `pglb check` / `pglb -c` command line.

use crate::common::*;
use std::path::Path;

/// (configuration, expected line, expected words in the message)
const BAD: &[(&str, usize, &str)] = &[
    ("frontend f\n    bind *:5432\n    default_backend nope\n", 1, "uses backend 'nope', which is not defined"),
    ("backend b\n    balance weighted\n", 2, "unknown balance algorithm 'weighted'"),
    ("backend b\n    timeout connect 5x\n", 2, "unknown time unit 'x'"),
    ("backend b\n    server s 10.0.0.1\n", 2, "has no port: write 10.0.0.1:PORT"),
    ("backend b\n    server s 10.0.0.1:5432 inter\n", 2, "server option 'inter' needs a time"),
    ("backend b\n    server s 10.0.0.1:5432 weight 300\n", 2, "weight 300 is out of range"),
    ("backend b\n    server s 10.0.0.1:5432 rise 0\n", 2, "'rise 0' is not allowed"),
    ("backend b\n    server s 10.0.0.1:5432 ssl\n", 2, "verify is enabled by default but no CA file specified"),
    ("backend b\n    server s 10.0.0.1:5432 ssl verify none sni host.example\n", 2, "written str(NAME)"),
    ("backend b\n    server s 10.0.0.1:5432 ssl verify none crt /nonexistent/client.pem\n", 2, "cannot read '/nonexistent/client.pem'"),
    ("frontend f\n    bind *:5432 ssl\n    default_backend b\nbackend b\n", 2, "'ssl' needs 'crt FILE'"),
    ("frontend f\n    bind *:5432 ssl crt /x.pem verify required\n    default_backend b\nbackend b\n", 2, "verify required needs 'ca-file FILE'"),
    ("backend b\n    server s 10.0.0.1:5432 send-proxy\n", 2, "PROXY protocol"),
    ("backend b\n    server s 10.0.0.1:5432\n    server s 10.0.0.2:5432\n", 3, "server 's' is already defined at line 2"),
    ("frontend f\n    bind *:5432 ssl crt /x.pem\n    default_backend b\nbackend b\n", 2, "cannot read '/x.pem'"),
    ("frontend f\n    bind *:5432 ssl crt /etc/hostname\n    default_backend b\nbackend b\n", 2, "no PEM certificate in it"),
    ("frontend f\n    bind *:5432 ssl crt /a.pem crt /b.pem\n    default_backend b\nbackend b\n", 2, "one 'crt' per bind line"),
    ("frontend f\n    bind localhost:5432\n    default_backend b\nbackend b\n", 2, "bind needs an IP address"),
    ("frontend f\n    default_backend b\nbackend b\n", 1, "has no bind line"),
    ("listen l\n    bind :5432\n    mode http\n", 3, "mode http"),
    ("backend b\n    option mysql-check user x\n", 2, "use option pgsql-check user NAME"),
    ("backend b\n    option pgsql-check\n", 2, "option pgsql-check needs a user"),
    ("backend b\n    option pgsql-check user u password secret\n", 2, "use password-env VAR or password-file PATH"),
    ("backend b\n    tcp-check send-binary 0001z\n", 2, "odd number of hex digits"),
    ("backend b\n    use_backend other\n", 2, "it belongs in frontend, listen"),
    ("frontend f\n    bind :1\n    default_backend b\n    acl x hdr(host) example.com\nbackend b\n", 4, "fetch 'hdr(host)' is not supported"),
    ("global\n    nbproc 2\n", 2, "use nbthread"),
    ("global\n    frobnicate\n", 2, "unknown keyword 'frobnicate' in global section"),
    ("    mode tcp\n", 1, "outside any section"),
    ("backend b\n    stats \"unterminated\n", 2, "unterminated double quote"),
    ("backend b\n    srvtimeout 5s\n", 2, "write timeout server"),
    ("backend b\n    option redispatch 0\n", 2, "write 'no option redispatch'"),
    ("frontend f\n    bind :1\n    default_backend b\n    server s 1.2.3.4:5\nbackend b\n", 4, "it belongs in listen, backend"),
    ("backend b\n    server s 1.2.3.4:5 track b/t\n", 2, "replace track with check"),
    ("resolvers dns\n    hold valid 10s\n", 1, "has no nameserver"),
    ("backend b\n    server s db:5432 resolvers nope\n", 2, "uses resolvers 'nope', which is not defined"),
    (
        "backend b\n    option tcp-check\n    tcp-check connect\n    tcp-check send-binary 00000020000000030000757365720000706f737467726573000000\n",
        4,
        "write: tcp-check send-binary 00000017000300007573657200706f7374677265730000",
    ),
];

#[test]
fn malformed_configurations_name_line_and_fix() {
    assert!(BAD.len() >= 15);
    for (text, line, words) in BAD {
        let report = pglb::config::report_str(Path::new("bad.cfg"), text);
        let errors: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
        let want_prefix = format!("bad.cfg:{line}: ");
        assert!(
            errors.iter().any(|e| e.starts_with(&want_prefix) && e.contains(words)),
            "config:\n{text}\nexpected an error at line {line} containing {words:?}, got {errors:#?}"
        );
        assert!(report.config.is_none());
    }
}

#[test]
fn valid_haproxy_idioms_are_accepted() {
    let text = "global\n    maxconn 100\n    nbthread 2\n    hard-stop-after 30s\n\
        defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 1h\n    timeout server 1h\n    retries 3\n    option redispatch\n    option dontlognull\n\
        frontend f\n    bind 127.0.0.1:5432,127.0.0.1:5433\n    bind [::1]:5432\n    default_backend b\n\
        backend b\n    balance leastconn\n    default-server inter 1s fastinter 500ms downinter 5s rise 2 fall 3 maxconn 50 maxqueue 10\n\
        \x20   option pgsql-check user postgres\n    server a 10.0.0.1:5432 check weight 10\n    server c db.example:5432 check backup on-marked-down shutdown-sessions\n";
    let loaded = pglb::config::parse_str(Path::new("ok.cfg"), text).unwrap_or_else(|e| panic!("{e}"));
    let c = &loaded.config;
    assert_eq!(c.frontends[0].binds.len(), 3);
    let b = &c.backends[0];
    assert_eq!(b.redispatch, Some(-1));
    assert_eq!(b.servers[0].maxconn, Some(50), "default-server applies");
    assert_eq!(b.servers[0].weight, 10);
    assert_eq!(b.servers[1].host, "db.example");
    assert_eq!(b.timeout_queue, b.timeout_connect, "timeout queue defaults to timeout connect");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn inherited_default_backend_does_not_break_listen_sections() {
    let text = "defaults\n    default_backend b\n    timeout connect 1s\nfrontend f\n    bind :1\nbackend b\n    server a 10.0.0.1:5432\nlisten l\n    bind :2\n    server c 10.0.0.2:5432\n";
    let loaded = pglb::config::parse_str(Path::new("x.cfg"), text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded.config.frontends[0].default_backend.as_deref(), Some("b"), "inherited by the frontend");
    assert_eq!(loaded.config.frontends[1].default_backend.as_deref(), Some("l"), "a listen section stays its own backend");
    // Moving a server to another line keeps its identity for reloads.
    let a = &loaded.config.backends[0].servers[0];
    let moved = pglb::config::Server { line: a.line + 3, ..a.clone() };
    assert!(a.same_settings(&moved));
}

#[test]
fn check_command_exit_codes_and_haproxy_spelling() {
    let (_d, good) = write_config("listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    server a 127.0.0.1:1\n");
    for args in [&["check", "-f"][..], &["-c", "-f"][..]] {
        let out = std::process::Command::new(pglb_bin()).args(args).arg(&good).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Configuration file is valid"));
    }
    let (_d2, bad) = write_config("global\n    daemon\nbackend b\n    balance nope\n    server a 1.2.3.4\n");
    let out = std::process::Command::new(pglb_bin()).args(["check", "-f"]).arg(&bad).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("pglb.cfg:2: warning: 'daemon' has no effect"), "{stderr}");
    assert!(stderr.contains("pglb.cfg:4: unknown balance algorithm 'nope'"), "{stderr}");
    assert!(stderr.contains("pglb.cfg:5: server 'a'"), "{stderr}");
    assert!(stderr.contains("2 error(s)"), "{stderr}");
    // A run with an invalid configuration starts nothing.
    let out = std::process::Command::new(pglb_bin()).args(["run", "-f"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = std::process::Command::new(pglb_bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pglb "));
}
