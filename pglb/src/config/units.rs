//! HAProxy's value syntaxes: times (`us ms s m h d`, a bare number is
//! milliseconds) and sizes (`k m g`, powers of 1024).

use super::error::Invalid;
use std::time::Duration;

/// Parses a time such as `500`, `1s`, `2m`, `100us`. A bare number is in
/// milliseconds, as in HAProxy.
pub fn parse_time(text: &str) -> Result<Duration, Invalid> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("'{text}' is not a time: write a number with an optional unit (us, ms, s, m, h, d), e.g. 5s").into());
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is too large a time"))?;
    let micros_per_unit: u64 = match unit {
        "us" => 1,
        "" | "ms" => 1_000,
        "s" => 1_000_000,
        "m" => 60_000_000,
        "h" => 3_600_000_000,
        "d" => 86_400_000_000,
        _ => return Err(format!("'{text}' has an unknown time unit '{unit}': use us, ms, s, m, h or d").into()),
    };
    let micros = n.checked_mul(micros_per_unit).ok_or_else(|| format!("'{text}' is too large a time"))?;
    Ok(Duration::from_micros(micros))
}

/// The longest timeout, as in HAProxy (whose timers count milliseconds in
/// a signed 32-bit number).
pub const MAX_TIMEOUT: Duration = Duration::from_millis(2_147_483_647);

/// Parses a timeout: zero means "no timeout" in HAProxy and is modelled as
/// `None`, never as a huge duration (a 2^30 ms timer once froze a proxy).
/// More than [`MAX_TIMEOUT`] is an error, as in HAProxy.
pub fn parse_timeout(text: &str) -> Result<Option<Duration>, Invalid> {
    let d = parse_time(text)?;
    if d > MAX_TIMEOUT {
        return Err(
            format!("'{text}' is too long a timeout: the maximum is 2147483647ms (about 24.8 days), as in HAProxy; 0 means no timeout").into()
        );
    }
    Ok(if d.is_zero() { None } else { Some(d) })
}

/// Parses a size such as `16384`, `16k`, `16MB`, `1g` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, Invalid> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!("'{text}' is not a size: write a number with an optional unit (k, m, g), e.g. 16MB").into());
    }
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is too large a size"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1 << 10,
        "m" | "mb" => 1 << 20,
        "g" | "gb" => 1 << 30,
        _ => return Err(format!("'{text}' has an unknown size unit '{unit}': use k, m or g (powers of 1024)").into()),
    };
    n.checked_mul(mult).ok_or_else(|| Invalid(format!("'{text}' is too large a size")))
}

/// Formats a duration the way an operator would write it in a config
/// (HAProxy's units: d, h, m, s, ms, us), in the largest unit that is exact.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    let whole = |unit: u128| ms != 0 && ms.is_multiple_of(unit);
    if whole(86_400_000) {
        format!("{}d", ms / 86_400_000)
    } else if whole(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if whole(60_000) {
        format!("{}m", ms / 60_000)
    } else if whole(1000) {
        format!("{}s", ms / 1000)
    } else if ms != 0 {
        format!("{ms}ms")
    } else {
        format!("{}us", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        let f = |ms| fmt_duration(Duration::from_millis(ms));
        assert_eq!([f(1_800_000), f(3_600_000), f(86_400_000), f(90_000), f(1500), f(10_000)], ["30m", "1h", "1d", "90s", "1500ms", "10s"]);
        assert_eq!(fmt_duration(Duration::from_micros(250)), "250us");
    }

    #[test]
    fn times_follow_haproxy_units() {
        assert_eq!(parse_time("500").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_time("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse_time("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_time("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_time("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_time("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_time("5x").unwrap_err().message().contains("unknown time unit"));
        assert!(parse_time("s").is_err());
        assert!(parse_time("99999999999999999999").is_err());
    }

    #[test]
    fn zero_timeout_is_none() {
        assert_eq!(parse_timeout("0").unwrap(), None);
        assert_eq!(parse_timeout("0s").unwrap(), None);
        assert_eq!(parse_timeout("30s").unwrap(), Some(Duration::from_secs(30)));
        assert_eq!(parse_timeout("2147483647").unwrap(), Some(MAX_TIMEOUT));
        assert!(parse_timeout("25d").unwrap_err().message().contains("the maximum is 2147483647ms"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16MB").unwrap(), 16 << 20);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("7").unwrap(), 7);
        assert!(parse_size("1t").is_err());
    }
}
