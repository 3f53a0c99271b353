//! The kernel command line (`/proc/cmdline`): `key=value` words, the keys of
//! `vmctl_proto::control` among them.

/// The value of `key` in `cmdline`, if present.
pub fn value<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline
        .split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// This boot's command line (empty when unreadable).
pub fn read() -> String {
    std::fs::read_to_string("/proc/cmdline").unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_keys() {
        let line = "console=ttyS0 quiet vmctl.time=12.5 vmctl.data=/dev/vda\n";
        assert_eq!(super::value(line, "vmctl.time"), Some("12.5"));
        assert_eq!(super::value(line, "vmctl.data"), Some("/dev/vda"));
        assert_eq!(super::value(line, "vmctl"), None);
        assert_eq!(super::value(line, "quiet"), None);
    }
}
