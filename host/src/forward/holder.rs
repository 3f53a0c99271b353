//! Who holds a desktop port, for the "port is already in use" message.
//! Linux reads `/proc/net/{tcp,udp}{,6}` for the socket's inode and finds
//! the process with that socket open; elsewhere the answer is "unknown".

use vmctl_proto::ports::Protocol;

/// A process holding a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub name: String,
}

/// The process bound to `port` (listening, for TCP), when knowable.
#[cfg(target_os = "linux")]
pub fn find(protocol: Protocol, port: u16) -> Option<Holder> {
    let tables: &[&str] = match protocol {
        Protocol::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    let inodes: Vec<u64> = tables
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .flat_map(|text| socket_inodes(&text, protocol, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let link = link.to_string_lossy();
            let inode = link
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default();
                return Some(Holder { pid, name });
            }
        }
    }
    None
}

#[cfg(not(target_os = "linux"))]
pub fn find(_protocol: Protocol, _port: u16) -> Option<Holder> {
    None
}

/// Inodes of the sockets in one `/proc/net` table bound to `port` (TCP: in
/// state LISTEN, `0A`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn socket_inodes(table: &str, protocol: Protocol, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode = fields.get(9)?.parse::<u64>().ok()?;
            let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            let listening = protocol == Protocol::Udp || *state == "0A";
            (local_port == port && listening && inode != 0).then_some(inode)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_read() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0\n";
        assert_eq!(socket_inodes(table, Protocol::Tcp, 8080), vec![4242]);
        assert!(socket_inodes(table, Protocol::Tcp, 8081).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holder = find(Protocol::Tcp, port).expect("found");
        assert_eq!(holder.pid, std::process::id());
    }
}
