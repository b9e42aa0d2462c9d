//! Property tests over the inputs an attacker controls: the configuration
//! text, the client's first packet, the server's startup answer, runtime
//! API lines and requests to the stats HTTP listener. Seeded, so a failure reproduces; each runs thousands
//! of cases in well under a second. (cargo-fuzz needs a nightly compiler,
//! which this project's machines do not have.)

#[cfg(test)]
mod tests {
    use crate::config::{Level, parse_str};
    use crate::pg::startup::{packet_len, parse_first};
    use crate::proxy::sniff::Sniffer;
    use std::path::Path;

    const CASES: usize = 20_000;

    fn bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
        let n = rng.usize(0..=max);
        (0..n).map(|_| rng.u8(..)).collect()
    }

    /// Words that make the parser go deep: keywords, numbers, units, quotes.
    const WORDS: &[&str] = &[
        "global",
        "defaults",
        "frontend",
        "backend",
        "listen",
        "resolvers",
        "bind",
        "server",
        "default-server",
        "mode",
        "tcp",
        "http",
        "balance",
        "roundrobin",
        "random(3)",
        "timeout",
        "connect",
        "client",
        "tunnel",
        "5s",
        "0",
        "99999999999999999999d",
        "option",
        "pgsql-check",
        "user",
        "role",
        "primary",
        "max-lag",
        "tcp-check",
        "send-binary",
        "expect",
        "rstring",
        "(",
        "[",
        "\"",
        "'",
        "\\",
        "#",
        "${X}",
        "$",
        "check",
        "inter",
        "rise",
        "fall",
        "weight",
        "maxconn",
        "*:5432",
        "[::1]:5",
        "127.0.0.1:0",
        "a:b:c",
        "stats",
        "socket",
        "auth",
        "u:p",
        "nameserver",
        "hold",
        "valid",
        "no",
        "from",
        "disabled",
        "ssl",
        "00000017000300007573657200706f7374677265730000",
        "-1",
        "\t",
        "é",
    ];

    #[test]
    fn configuration_parser_never_panics() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_c0f1);
        for _ in 0..CASES / 4 {
            let lines = rng.usize(0..20);
            let mut text = String::new();
            for _ in 0..lines {
                let words = rng.usize(0..8);
                for _ in 0..words {
                    text.push_str(WORDS[rng.usize(..WORDS.len())]);
                    text.push(if rng.bool() { ' ' } else { '\t' });
                }
                text.push('\n');
            }
            let _ = parse_str(Path::new("fuzz.cfg"), &text);
            // Arbitrary bytes too (lossily decoded, as a file read would be).
            let _ = parse_str(Path::new("fuzz.cfg"), &String::from_utf8_lossy(&bytes(&mut rng, 200)));
        }
    }

    #[test]
    fn first_packet_parser_never_panics_and_bounds_lengths() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0001);
        for _ in 0..CASES {
            let mut p = bytes(&mut rng, 64);
            if p.len() >= 8 && rng.bool() {
                // Plausible headers: a consistent length and a known code or protocol.
                let len = (p.len() as u32).to_be_bytes();
                p[..4].copy_from_slice(&len);
                let code: u32 = [80877103, 80877104, 80877102, 3 << 16, rng.u32(..)][rng.usize(..5)];
                p[4..8].copy_from_slice(&code.to_be_bytes());
            }
            if p.len() >= 4 {
                match packet_len([p[0], p[1], p[2], p[3]]) {
                    Ok(n) => assert!((8..=crate::pg::MAX_STARTUP_LEN).contains(&n)),
                    Err(_) => continue,
                }
            }
            if p.len() >= 8 {
                let _ = parse_first(&p);
            }
        }
    }

    #[test]
    fn startup_sniffer_never_panics_and_stops() {
        let mut rng = fastrand::Rng::with_seed(0x5eed_0002);
        for _ in 0..CASES / 4 {
            let mut s = Sniffer::default();
            for _ in 0..rng.usize(1..20) {
                let chunk = bytes(&mut rng, 300);
                s.feed(&chunk, |_| {});
                if s.done {
                    break;
                }
            }
        }
        // A stream that never reaches ReadyForQuery is abandoned after 1 MiB.
        let mut s = Sniffer::default();
        let notice = [b'N', 0, 0, 0, 8, 1, 2, 3, 4];
        for _ in 0..(2 << 20) / notice.len() {
            s.feed(&notice, |_| {});
        }
        assert!(s.done);
    }

    #[test]
    fn runtime_api_never_panics() {
        let text = "listen pg\n    bind 127.0.0.1:0\n    server a 127.0.0.1:1 check\n    server b 127.0.0.1:2\n";
        let cfg = parse_str(Path::new("fuzz.cfg"), text).unwrap().config;
        let rt = crate::state::Runtime::new(std::sync::Arc::new(cfg));
        let words = [
            "show", "stat", "info", "servers", "state", "backend", "set", "server", "pg/a", "pg/", "/a", "pg/b", "addr", "1.2.3.4", "::1", "port",
            "0", "65536", "weight", "50%", "999", "-1", "disable", "enable", "health", "shutdown", "sessions", "ready", "drain", "maint", "typed",
            "json", "clear", "counters", "help", "x", "",
        ];
        let mut rng = fastrand::Rng::with_seed(0x5eed_0003);
        for _ in 0..CASES / 4 {
            let line: Vec<&str> = (0..rng.usize(0..7)).map(|_| words[rng.usize(..words.len())]).collect();
            for level in [Level::User, Level::Admin] {
                let _ = crate::admin::execute(&rt, level, &line.join(" "));
            }
        }
        // The runtime stays consistent: weights within range, snapshot buildable.
        for be in &rt.backends {
            be.republish();
            for s in &be.servers {
                assert!(s.weight() <= 256);
            }
        }
    }

    /// A request to the stats listener: random bytes, or an HTTP request
    /// assembled from pieces that reach every branch of the handler.
    fn http_request(rng: &mut fastrand::Rng) -> (Vec<u8>, bool) {
        if rng.u8(..) < 64 {
            return (bytes(rng, 4096), false);
        }
        let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "get", "G ET", ""];
        let paths = [
            "/",
            "/stats",
            "/stats;csv",
            "/stats;json",
            "/stats;csv;norefresh",
            "/stats;up",
            "/metrics",
            "/healthz",
            "/ready",
            "/stats?x=1",
            "/%00",
            "/../../etc/passwd",
            "*",
            "http://h/stats",
            "/stats;csv;json",
            "//",
            "/\u{7f}",
        ];
        let method = methods[rng.usize(..methods.len())];
        let mut path = paths[rng.usize(..paths.len())].to_string();
        if rng.bool() {
            path += &"a".repeat(rng.usize(0..20_000));
        }
        let version = ["HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "HTTP/1.1 extra"][rng.usize(..6)];
        let mut req = format!("{method} {path} {version}\r\nHost: x\r\n");
        for _ in 0..rng.usize(0..8) {
            match rng.u8(..4) {
                0 => req += &format!("Authorization: Basic {}\r\n", String::from_utf8_lossy(&bytes(rng, 40)).replace(['\r', '\n'], "")),
                1 => req += "Authorization: Basic YWRtaW46c2VjcmV0\r\n",
                2 => req += &format!("X-{}: {}\r\n", rng.u32(..), "v".repeat(rng.usize(0..10_000))),
                _ => req += &format!("Content-Length: {}\r\n", ["0", "5", "-1", "99999999999999999999", "x"][rng.usize(..5)]),
            }
        }
        req += "\r\n";
        let valid = ["GET", "HEAD", "POST", "PUT", "DELETE"].contains(&method)
            && matches!(version, "HTTP/1.1" | "HTTP/1.0")
            && path.len() < 8_000
            && !path.contains(['\u{7f}', '\\'])
            && !req.contains("Content-Length: -1")
            && !req.contains("Content-Length: 9999")
            && !req.contains("Content-Length: x")
            && !req.contains("Content-Length: 5")
            && req.len() < 16_000;
        (req.into_bytes(), valid)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stats_http_answers_every_valid_request_and_survives_garbage() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let text = "listen stats\n    bind 127.0.0.1:0\n    mode http\n    stats enable\n    stats uri /stats\n    stats auth admin:secret\n\
                    listen pg\n    bind 127.0.0.1:0\n    server a 127.0.0.1:1 check\n";
        let cfg = parse_str(Path::new("fuzz.cfg"), text).unwrap().config;
        let running = crate::run::start(cfg).await.unwrap();
        let addr = running.addr("stats").unwrap();
        let mut rng = fastrand::Rng::with_seed(0x5eed_0004);
        let mut answered = 0;
        for case in 0..2_000 {
            let (req, valid) = http_request(&mut rng);
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            // The server may close early on garbage: write errors are fine.
            let _ = s.write_all(&req).await;
            let _ = s.shutdown().await;
            let mut out = Vec::new();
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
            assert!(read.is_ok(), "case {case}: no answer and no close within 5 s: {:?}", String::from_utf8_lossy(&req[..req.len().min(200)]));
            if !out.is_empty() {
                assert!(out.starts_with(b"HTTP/1."), "case {case}: not an HTTP answer: {:?}", String::from_utf8_lossy(&out[..out.len().min(200)]));
                answered += 1;
            }
            assert!(
                !valid || !out.is_empty(),
                "case {case}: a valid request got no answer: {:?}",
                String::from_utf8_lossy(&req[..req.len().min(300)])
            );
        }
        assert!(answered > 1_000, "{answered}");
        // Still serving.
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.0 200"), "{out}");
        running.shutdown(std::future::ready(())).await;
    }
}
