//! Reads and writes kernel parameters under `/proc/sys`, for the network
//! knobs the engine needs (`ip_forward`, `route_localnet`, ...). It only
//! reads and writes; which value a knob should have is the caller's call.
//!
//! Network parameters belong to a network namespace, and `/proc/sys/net`
//! shows the namespace of the thread that opens the file (not the one that
//! mounted `/proc`, not the process's main thread). So a write lands in the
//! calling thread's current namespace: to change a container's, call from a
//! thread that has entered it.
//!
//! A key is dotted (`net.ipv4.ip_forward`). Interface names may contain dots
//! (`eth0.100`), so [`set_path`] and [`get_path`] take the key's parts
//! instead: `["net", "ipv4", "conf", "eth0.100", "forwarding"]`.

use std::io::{self, Write};
use std::path::PathBuf;

/// A failed sysctl step, with its key.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("invalid sysctl key {0}")]
    InvalidKey(String),
    #[error("cannot read sysctl {0}")]
    Read(String, #[source] io::Error),
    #[error("cannot set sysctl {0} to {1}")]
    Write(String, String, #[source] io::Error),
}

/// Sets the dotted `key` to `value` unless it already has that value.
/// Returns whether it wrote.
pub fn set(key: &str, value: &str) -> Result<bool, SysctlError> {
    set_path(&key.split('.').collect::<Vec<_>>(), value)
}

/// The value of the dotted `key`, without the trailing newline.
pub fn get(key: &str) -> Result<String, SysctlError> {
    get_path(&key.split('.').collect::<Vec<_>>())
}

/// Sets the key made of `parts` to `value` unless it already has that
/// value (compared word by word, so `"32768 60999"` matches the kernel's
/// `"32768\t60999"`). Returns whether it wrote.
pub fn set_path(parts: &[&str], value: &str) -> Result<bool, SysctlError> {
    let current = get_path(parts)?;
    if current.split_whitespace().eq(value.split_whitespace()) {
        return Ok(false);
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(path(parts)?)
        .and_then(|mut file| file.write_all(value.as_bytes()));
    written.map_err(|e| SysctlError::Write(parts.join("."), value.to_owned(), e))?;
    Ok(true)
}

/// The value of the key made of `parts`, without the trailing newline.
pub fn get_path(parts: &[&str]) -> Result<String, SysctlError> {
    let value = std::fs::read_to_string(path(parts)?);
    let value = value.map_err(|e| SysctlError::Read(parts.join("."), e))?;
    Ok(value.trim_end_matches('\n').to_owned())
}

/// `/proc/sys/` and the parts, each a plain file name.
fn path(parts: &[&str]) -> Result<PathBuf, SysctlError> {
    let plain = |part: &&str| !matches!(*part, "" | "." | "..") && !part.contains(['/', '\0']);
    if parts.is_empty() || !parts.iter().all(plain) {
        return Err(SysctlError::InvalidKey(parts.join(".")));
    }
    Ok(parts
        .iter()
        .fold(PathBuf::from("/proc/sys"), |path, part| path.join(part)))
}

#[cfg(test)]
mod tests {
    use nix::sched::{unshare, CloneFlags};

    use super::*;
    use crate::network::netlink::Netlink;

    /// Runs `body` on a thread of its own in a fresh network namespace.
    /// Skips, loudly, when not root.
    fn in_fresh_netns<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: network namespace tests need root");
            return None;
        }
        let thread = std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace");
            body()
        });
        Some(
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        )
    }

    #[test]
    fn keys_must_be_plain_names() {
        for parts in [
            &[][..],
            &["net", "", "x"],
            &["net", "..", "x"],
            &["net/ipv4", "x"],
        ] {
            let error = set_path(parts, "1").expect_err("invalid key");
            assert!(matches!(error, SysctlError::InvalidKey(_)), "{error:?}");
        }
        let error = get("net..ipv4").expect_err("empty part");
        assert_eq!(error.to_string(), "invalid sysctl key net..ipv4");
    }

    #[test]
    fn set_writes_only_a_new_value_and_only_in_the_callers_netns() {
        in_fresh_netns(|| {
            assert_eq!(get("net.ipv4.ip_forward").expect("read"), "0");
            assert!(set("net.ipv4.ip_forward", "1").expect("write"));
            assert!(!set("net.ipv4.ip_forward", "1").expect("no write"));
            assert_eq!(get("net.ipv4.ip_forward").expect("read"), "1");
            // Another namespace keeps its own value.
            let elsewhere = in_fresh_netns(|| get("net.ipv4.ip_forward").expect("read"));
            assert_eq!(elsewhere.as_deref(), Some("0"));
        });
    }

    #[test]
    fn values_compare_word_by_word() {
        in_fresh_netns(|| {
            let range = get("net.ipv4.ip_local_port_range").expect("read");
            assert!(range.contains('\t'), "{range:?}");
            let spaced = range.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(!set("net.ipv4.ip_local_port_range", &spaced).expect("no write"));
        });
    }

    #[test]
    fn set_path_reaches_interfaces_with_dots_in_their_names() {
        in_fresh_netns(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            runtime.expect("runtime").block_on(async {
                let netlink = Netlink::new().expect("netlink");
                let bridge = crate::network::netlink::BridgeSpec {
                    name: "br.0".to_owned(),
                    address: "10.88.0.1/24".parse().expect("address"),
                    mtu: None,
                    mac: None,
                };
                netlink.ensure_bridge(&bridge).await.expect("bridge");
            });
            let key = ["net", "ipv4", "conf", "br.0", "route_localnet"];
            assert!(set_path(&key, "1").expect("write"));
            assert_eq!(get_path(&key).expect("read"), "1");
            let dotted = get("net.ipv4.conf.br.0.route_localnet").expect_err("no such key");
            assert!(matches!(dotted, SysctlError::Read(..)), "{dotted:?}");
        });
    }
}
