//! Go's duration syntax (`time.ParseDuration`), which HEALTHCHECK's
//! `--interval`, `--timeout` and `--start-period` take: a sequence of decimal
//! numbers, each with an optional fraction and a unit (`ns`, `us`/`µs`, `ms`,
//! `s`, `m`, `h`), e.g. `30s`, `1m30s`, `1.5h`; `0` alone needs no unit.

use std::time::Duration;

/// Parses `text` as a Go duration. Negative durations are refused (no
/// HEALTHCHECK option can use one).
pub(super) fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let mut s = text;
    let negative = s.starts_with('-');
    if s.starts_with(['-', '+']) {
        s = &s[1..];
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: u128 = 0;
    while !s.is_empty() {
        let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let int = &s[..int_len];
        s = &s[int_len..];
        let mut frac = "";
        if let Some(after) = s.strip_prefix('.') {
            let frac_len = after
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after.len());
            frac = &after[..frac_len];
            s = &after[frac_len..];
        }
        if int.is_empty() && frac.is_empty() {
            return Err(invalid());
        }
        let unit_len = s
            .find(|c: char| c == '.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let nanos_per: u128 = match unit {
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        let whole: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| invalid())?
        };
        let mut nanos = whole.checked_mul(nanos_per).ok_or_else(invalid)?;
        if !frac.is_empty() {
            // at most 30 fraction digits matter at nanosecond resolution
            let digits = &frac[..frac.len().min(30)];
            let scale = 10u128.pow(digits.len() as u32);
            let f: u128 = digits.parse().map_err(|_| invalid())?;
            nanos += f.checked_mul(nanos_per).ok_or_else(invalid)? / scale;
        }
        total = total.checked_add(nanos).ok_or_else(invalid)?;
    }
    if total > i64::MAX as u128 {
        return Err(invalid());
    }
    if negative && total > 0 {
        return Err(format!("time: negative duration {text:?}"));
    }
    Ok(Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let ok = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("300ms"), Duration::from_millis(300));
        assert_eq!(ok("2h45m"), Duration::from_secs(9900));
        assert_eq!(ok("1us"), Duration::from_micros(1));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
        assert_eq!(ok("-0s"), Duration::ZERO);
    }

    #[test]
    fn bad_durations() {
        assert_eq!(
            parse_go_duration("abc").unwrap_err(),
            "time: invalid duration \"abc\""
        );
        assert_eq!(
            parse_go_duration("10").unwrap_err(),
            "time: missing unit in duration \"10\""
        );
        assert_eq!(
            parse_go_duration("10x").unwrap_err(),
            "time: unknown unit \"x\" in duration \"10x\""
        );
        for bad in ["", "-", "s", ".s", "1..2s", "-5s", "99999999999h"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }
}
