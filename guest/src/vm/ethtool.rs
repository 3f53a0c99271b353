//! Switching one offload feature of a NIC by its name, as `ethtool -K`
//! does, through the `SIOCETHTOOL` ioctl: the kernel names its features in
//! the `ETH_SS_FEATURES` string set, and a feature's index there is its bit
//! in `ETHTOOL_SFEATURES`. The VM has no `ethtool`; PID 1 needs one switch
//! (`rx-udp-gro-forwarding` on the forward link, see `init::link`). libc
//! has the ioctl's number; the ethtool commands below are from
//! `linux/ethtool.h`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GFEATURES: u32 = 0x3a;
const ETHTOOL_SFEATURES: u32 = 0x3b;
const ETH_SS_FEATURES: u32 = 4;
const ETH_GSTRING_LEN: usize = 32;

/// Asks for `feature` of `interface` on or off; answers whether it is now
/// active as asked (the kernel may refuse one it cannot change).
pub fn set_feature(interface: &str, feature: &str, on: bool) -> io::Result<bool> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let index = feature_index(&socket, interface, feature)?;
    let (block, bit) = (index / 32, 1u32 << (index % 32));

    // ethtool_sfeatures: cmd, size, then {valid, requested} per 32 features.
    let blocks = block + 1;
    let mut set = vec![0u32; 2 + 2 * blocks];
    set[0] = ETHTOOL_SFEATURES;
    set[1] = blocks as u32;
    set[2 + 2 * block] = bit;
    set[3 + 2 * block] = if on { bit } else { 0 };
    ioctl(&socket, interface, set.as_mut_ptr().cast())?;

    // ethtool_gfeatures: cmd, size, then {available, requested, active,
    // never_changed} per 32 features.
    let mut get = vec![0u32; 2 + 4 * blocks];
    get[0] = ETHTOOL_GFEATURES;
    get[1] = blocks as u32;
    ioctl(&socket, interface, get.as_mut_ptr().cast())?;
    let active = get[2 + 4 * block + 2] & bit != 0;
    Ok(active == on)
}

/// The index of `feature` in the interface's `ETH_SS_FEATURES` strings.
fn feature_index(socket: &OwnedFd, interface: &str, feature: &str) -> io::Result<usize> {
    // ethtool_sset_info: cmd, reserved, sset_mask (u64), then one u32 per
    // set in the mask: the number of strings.
    let mut info = [0u32; 5];
    info[0] = ETHTOOL_GSSET_INFO;
    let mask = 1u64 << ETH_SS_FEATURES;
    info[2] = mask as u32;
    info[3] = (mask >> 32) as u32;
    ioctl(socket, interface, info.as_mut_ptr().cast())?;
    let count = info[4] as usize;
    if count == 0 || count > 4096 {
        return Err(io::Error::other(format!(
            "{interface} names {count} features"
        )));
    }
    // ethtool_gstrings: cmd, string_set, len, then len × 32 bytes.
    let mut strings = vec![0u8; 12 + count * ETH_GSTRING_LEN];
    strings[0..4].copy_from_slice(&ETHTOOL_GSTRINGS.to_ne_bytes());
    strings[4..8].copy_from_slice(&ETH_SS_FEATURES.to_ne_bytes());
    strings[8..12].copy_from_slice(&(count as u32).to_ne_bytes());
    ioctl(socket, interface, strings.as_mut_ptr().cast())?;
    strings[12..]
        .chunks(ETH_GSTRING_LEN)
        .position(|name| name.split(|b| *b == 0).next() == Some(feature.as_bytes()))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{interface} has no feature {feature}"),
            )
        })
}

/// `SIOCETHTOOL` on `interface` with `data` as the request.
fn ioctl(socket: &OwnedFd, interface: &str, data: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: ifreq is plain data (a name and a union of integers and
    // pointers), for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = interface.as_bytes();
    if name.is_empty() || name.len() >= request.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {interface:?}"),
        ));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(name) {
        *to = libc::c_char::from_ne_bytes([*from]);
    }
    request.ifr_ifru.ifru_data = data.cast();
    // SAFETY: `request` names the interface and points at a buffer laid out
    // as the command in its first word asks, alive for the call.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCETHTOOL as _, &mut request) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback in a network namespace of the test's own: a feature it has
    /// goes on and off by name; an unknown name and a missing interface are
    /// errors.
    #[test]
    fn switches_a_feature_of_loopback_in_a_private_namespace() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root for a network namespace");
            return;
        }
        let outcome = std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            let feature = "rx-udp-gro-forwarding";
            let on = set_feature("lo", feature, true);
            if on
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
            {
                return None; // a kernel before 5.12
            }
            let off = set_feature("lo", feature, false);
            let unknown = set_feature("lo", "no-such-feature", true);
            let missing = set_feature("nosuch0", feature, true);
            Some((on.ok(), off.ok(), unknown.is_err(), missing.is_err()))
        })
        .join()
        .expect("thread");
        let Some(outcome) = outcome else {
            eprintln!("skipped: this kernel has no rx-udp-gro-forwarding");
            return;
        };
        assert_eq!(outcome, (Some(true), Some(true), true, true));
    }
}
