//! A health check's outcome, as HAProxy names and numbers it.
//!
//! HAProxy shows the short code (`L7OK`) in `show stat` and its logs, the
//! number in `show servers state` (`srv_check_status`), and the description
//! in the stats page's tooltips and its health-check log lines. The numbers
//! are the positions in HAProxy's `enum healthcheck_status`, including the
//! ones pglb never produces, so they match what HAProxy's tools expect.

/// The status of the last check of a server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CheckStatus {
    /// Checks enabled, no result yet (HAProxy's `INI`).
    #[default]
    Ini,
    /// Health analysis (passive health) found enough consecutive errors.
    Hana,
    /// pglb could not open the check's socket (out of descriptors): the
    /// server's state is left as it was.
    SockErr,
    L4Ok,
    L4Tout,
    L4Con,
    L7Tout,
    /// An answer in the wrong protocol, or a content mismatch.
    L7Rsp,
    L7Ok,
    /// An answer that says "not fit": a PostgreSQL error, an HTTP error
    /// status, a server in the wrong role or too far behind.
    L7Sts,
    /// pglb's own: the server's name does not resolve, so it cannot be
    /// checked (HAProxy puts such a server in maintenance instead).
    Unresolvable,
}

impl CheckStatus {
    /// HAProxy's short code, as in `show stat`'s `check_status`.
    pub fn code(self) -> &'static str {
        match self {
            CheckStatus::Ini => "INI",
            CheckStatus::Hana => "HANA",
            CheckStatus::SockErr => "SOCKERR",
            CheckStatus::L4Ok => "L4OK",
            CheckStatus::L4Tout => "L4TOUT",
            CheckStatus::L4Con => "L4CON",
            CheckStatus::L7Tout => "L7TOUT",
            CheckStatus::L7Rsp => "L7RSP",
            CheckStatus::L7Ok => "L7OK",
            CheckStatus::L7Sts => "L7STS",
            CheckStatus::Unresolvable => "unresolvable",
        }
    }

    /// HAProxy's number (`srv_check_status` in `show servers state`).
    pub fn number(self) -> u8 {
        match self {
            CheckStatus::Ini => 1,
            CheckStatus::Hana => 4,
            CheckStatus::SockErr => 5,
            CheckStatus::L4Ok => 6,
            CheckStatus::L4Tout => 7,
            CheckStatus::L4Con => 8,
            CheckStatus::L7Tout => 12,
            CheckStatus::L7Rsp => 13,
            CheckStatus::L7Ok => 15,
            CheckStatus::L7Sts => 17,
            // Not HAProxy's; the nearest of its numbers is L4CON's.
            CheckStatus::Unresolvable => 8,
        }
    }

    /// HAProxy's fixed description (the `reason:` of a health-check line).
    pub fn description(self) -> &'static str {
        match self {
            CheckStatus::Ini => "Initializing",
            CheckStatus::Hana => "Health analyze",
            CheckStatus::SockErr => "Socket error",
            CheckStatus::L4Ok => "Layer4 check passed",
            CheckStatus::L4Tout => "Layer4 timeout",
            CheckStatus::L4Con => "Layer4 connection problem",
            CheckStatus::L7Tout => "Layer7 timeout",
            CheckStatus::L7Rsp => "Layer7 invalid response",
            CheckStatus::L7Ok => "Layer7 check passed",
            CheckStatus::L7Sts => "Layer7 wrong status",
            CheckStatus::Unresolvable => "Name does not resolve",
        }
    }

    /// A check has run and produced this.
    pub fn has_result(self) -> bool {
        self != CheckStatus::Ini
    }

    /// The check passed.
    pub fn passed(self) -> bool {
        matches!(self, CheckStatus::L4Ok | CheckStatus::L7Ok)
    }

    /// HAProxy's check result (`srv_check_result`, CHK_RES_*): 0 unknown,
    /// 2 failed, 3 passed.
    pub fn result_number(self) -> u8 {
        match self {
            CheckStatus::Ini => 0,
            s if s.passed() => 3,
            _ => 2,
        }
    }
}

impl std::fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::CheckStatus::*;

    #[test]
    fn numbers_are_haproxys() {
        // HAProxy 2.6 include/haproxy/check-t.h, enum healthcheck_status.
        let table = [(Ini, 1), (Hana, 4), (SockErr, 5), (L4Ok, 6), (L4Tout, 7), (L4Con, 8), (L7Tout, 12), (L7Rsp, 13), (L7Ok, 15), (L7Sts, 17)];
        for (status, n) in table {
            assert_eq!(status.number(), n, "{status}");
        }
        assert!(L7Ok.passed() && L4Ok.passed() && !L7Sts.passed() && !Ini.passed());
        assert_eq!((Ini.result_number(), L7Ok.result_number(), L4Con.result_number()), (0, 3, 2));
    }
}
