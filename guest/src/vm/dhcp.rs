//! The VM NIC's address: busybox `udhcpc` in the background (boot does not
//! wait for a lease), with our event script setting the address, the
//! default route and `/etc/resolv.conf`.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

const SCRIPT: &str = include_str!("udhcpc.sh");
const SCRIPT_PATH: &str = "/run/vmctl/udhcpc.sh";

/// Starts udhcpc on `interface`; the child is reaped by PID 1's loop.
pub fn start(interface: &str) -> std::io::Result<u32> {
    std::fs::create_dir_all("/run/vmctl")?;
    std::fs::write(SCRIPT_PATH, SCRIPT)?;
    std::fs::set_permissions(SCRIPT_PATH, std::fs::Permissions::from_mode(0o755))?;
    let child = Command::new("/bin/busybox")
        .args([
            "udhcpc",
            "-i",
            interface,
            "-f",
            "-S",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            SCRIPT_PATH,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()?;
    Ok(child.id())
}

/// The IPv4 address with prefix of `interface`, read from `ip` (busybox).
pub fn address(interface: &str) -> Option<String> {
    let out = Command::new("/bin/busybox")
        .args(["ip", "-4", "-o", "addr", "show", "dev", interface])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next().map(str::to_owned)
}

/// The subnet of `interface`'s IPv4 address (`10.0.2.15/24` → `10.0.2.0/24`).
pub fn subnet(interface: &str) -> Option<ipnet::Ipv4Net> {
    address(interface)?
        .parse::<ipnet::Ipv4Net>()
        .ok()
        .map(|net| net.trunc())
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_parses() {
        if !std::path::Path::new("/bin/busybox").exists() {
            eprintln!("SKIPPED: /bin/busybox is missing");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("udhcpc.sh");
        std::fs::write(&path, super::SCRIPT).unwrap();
        let status = std::process::Command::new("/bin/busybox")
            .args(["sh", "-n"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}
