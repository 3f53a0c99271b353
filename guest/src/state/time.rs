//! Times as Docker writes them.

/// The zero time Docker reports for "never".
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Now, in Docker's RFC 3339 form with nanoseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
