//! Property tests over the inputs an attacker controls: the configuration
//! text, the client's first packet, the server's startup answer, and
//! runtime API lines. Seeded, so a failure reproduces; each runs thousands
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
                assert!(s.weight.load(std::sync::atomic::Ordering::Relaxed) <= 256);
            }
        }
    }
}
