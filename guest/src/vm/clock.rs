//! The guest's wall clock: set from the host's at boot (kernel command line)
//! and on request (after a host suspend the guest's clock lags); read by the
//! host, which keeps it in step (the host's `daemon/clock.rs`).

use nix::time::{clock_settime, ClockId};

/// Parses `<seconds>.<nanoseconds>`.
pub fn parse(text: &str) -> Option<(i64, i64)> {
    let (secs, nanos) = text.split_once('.').unwrap_or((text, "0"));
    let secs = secs.parse().ok()?;
    let digits = &nanos[..nanos.len().min(9)];
    let nanos: i64 = format!("{digits:0<9}").parse().ok()?;
    Some((secs, nanos))
}

/// Sets CLOCK_REALTIME.
pub fn set(secs: i64, nanos: i64) -> nix::Result<()> {
    clock_settime(
        ClockId::CLOCK_REALTIME,
        nix::sys::time::TimeSpec::new(secs, nanos),
    )
}

/// Sets the clock to `unix_nanos` since the epoch.
pub fn set_nanos(unix_nanos: u64) -> nix::Result<()> {
    let secs = (unix_nanos / 1_000_000_000) as i64;
    let nanos = (unix_nanos % 1_000_000_000) as i64;
    set(secs, nanos)
}

/// CLOCK_REALTIME in nanoseconds since the epoch (0 before 1970).
pub fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses() {
        assert_eq!(super::parse("12.5"), Some((12, 500_000_000)));
        assert_eq!(super::parse("12.000000001"), Some((12, 1)));
        assert_eq!(super::parse("12"), Some((12, 0)));
        assert_eq!(super::parse("x"), None);
    }
}
