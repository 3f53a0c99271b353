//! How the docker CLI shows times, sizes and ports in its tables.

/// `2 minutes ago`, `About an hour ago`, from a Unix time.
pub fn ago(unix: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(unix);
    format!("{} ago", duration(now.saturating_sub(unix).max(0) as u64))
}

/// Docker's human duration (`Less than a second`, `5 seconds`, `About a minute`, `3 hours`).
pub fn duration(secs: u64) -> String {
    match secs {
        0 => "Less than a second".into(),
        1..=59 => format!("{secs} second{}", if secs == 1 { "" } else { "s" }),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", secs / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", secs / 3600),
        172_800..=1_209_599 => format!("{} days", secs / 86_400),
        1_209_600..=5_183_999 => format!("{} weeks", secs / 604_800),
        5_184_000..=63_071_999 => format!("{} months", secs / 2_592_000),
        _ => format!("{} years", secs / 31_536_000),
    }
}

/// Docker's SI sizes: `4.3MB`, `812kB`, `12B`.
pub fn size(bytes: i64) -> String {
    let b = bytes.max(0) as f64;
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut value = b;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        let text = format!("{value:.3}");
        let text = text.trim_end_matches('0').trim_end_matches('.');
        let digits: String = text
            .chars()
            .take(if value >= 100.0 { 3 } else { 4 })
            .collect();
        format!("{}{}", digits.trim_end_matches('.'), units[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        assert_eq!(super::duration(0), "Less than a second");
        assert_eq!(super::duration(90), "About a minute");
        assert_eq!(super::duration(600), "10 minutes");
        assert_eq!(super::size(12), "12B");
        assert_eq!(super::size(4_300_000), "4.3MB");
        assert_eq!(super::size(812_000), "812kB");
    }
}
