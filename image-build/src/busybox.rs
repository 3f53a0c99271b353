//! Busybox's applet list read from the binary itself, for a busybox of
//! another architecture that cannot be run here (`busybox --list`).
//!
//! A busybox binary carries its applet names as one sorted block of
//! NUL-terminated strings (`applet_names[]` in the generated
//! `applet_tables.h`): `[`, `[[`, `acpid`, … ending with an empty string.
//! `[` and `[[` are the first two applets of every busybox with `test`
//! enabled, so the block is found by that start. The install directories
//! (`--list-full`) are packed in a bit array this reader does not decode:
//! a foreign busybox's applets all go in `/bin`, which is on every `PATH`.

/// Where the block starts: the applets `[` and `[[`.
const START: &[u8] = b"[\0[[\0";

/// The applet names in `busybox` (its bytes), without `busybox` itself;
/// `None` if the block is not found or holds something that is no name.
pub fn applet_names(busybox: &[u8]) -> Option<Vec<String>> {
    let at = busybox.windows(START.len()).position(|w| w == START)?;
    let mut names = Vec::new();
    for name in busybox[at..].split(|&b| b == 0) {
        if name.is_empty() {
            break;
        }
        let name = std::str::from_utf8(name).ok()?;
        let plausible = name.len() < 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"[-_.".contains(&b));
        if !plausible {
            return None;
        }
        if name != "busybox" {
            names.push(name.to_owned());
        }
    }
    (names.len() > 2).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_name_block() {
        let mut bytes = b"\x7fELF junk\0more\0".to_vec();
        bytes.extend_from_slice(b"[\0[[\0acpid\0sh\0zcat\0\0/var/log/wtmp\0");
        assert_eq!(
            applet_names(&bytes).unwrap(),
            ["[", "[[", "acpid", "sh", "zcat"]
        );
        assert_eq!(applet_names(b"no block here"), None);
        assert_eq!(applet_names(b"[\0[[\0bad name\0\0"), None);
    }

    #[test]
    fn agrees_with_a_runnable_busybox() {
        let path = std::path::Path::new("/bin/busybox");
        let Ok(bytes) = std::fs::read(path) else {
            eprintln!("SKIPPED: no /bin/busybox (busybox-static) here");
            return;
        };
        let Ok(out) = std::process::Command::new(path).arg("--list").output() else {
            eprintln!("SKIPPED: /bin/busybox does not run");
            return;
        };
        let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| *l != "busybox")
            .map(str::to_owned)
            .collect();
        listed.sort();
        let mut read = applet_names(&bytes).expect("the name block");
        read.sort();
        assert_eq!(read, listed);
    }
}
