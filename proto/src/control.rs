//! The control service: what the host daemon asks of the guest on vsock
//! port [`crate::VSOCK_PORT_CONTROL`].
//!
//! One request per connection. The host writes one JSON [`ControlRequest`]
//! followed by `\n`; the guest answers one JSON [`ControlResponse`] line.
//! For [`ControlRequest::Shell`] with `ok: true`, the connection then carries
//! the shell's terminal bytes in both directions until the shell exits (the
//! guest closes the stream) or the host closes its side (the guest hangs up
//! the shell).
//!
//! The kernel command line carries what the guest needs before any host
//! connection: [`CMDLINE_TIME`] (the host's clock at launch, so TLS and
//! file times are sane from the first second) and [`CMDLINE_DATA_DISK`].

use serde::{Deserialize, Serialize};

/// Kernel command-line key: the host's wall clock at launch, as
/// `<seconds>.<nanoseconds>` since the Unix epoch.
pub const CMDLINE_TIME: &str = "vmctl.time";

/// Kernel command-line key: the data disk's device (`/dev/vda`). Formatted
/// ext4 on first boot and mounted at [`DATA_MOUNT`].
pub const CMDLINE_DATA_DISK: &str = "vmctl.data";

/// Where the guest mounts its data disk: the engine's state root.
pub const DATA_MOUNT: &str = "/var/lib/vmctl";

/// Kernel command-line key: the guest's log filter (`VMCTL_LOG` syntax).
pub const CMDLINE_LOG: &str = "vmctl.log";

/// Kernel command line key: a Docker Hub mirror URL for the VM's engine;
/// repeated for more.
pub const CMDLINE_REGISTRY_MIRROR: &str = "vmctl.registry_mirror";
/// Kernel command line key: a registry the VM's engine may reach over plain
/// HTTP (`host[:port]` or a CIDR); repeated for more.
pub const CMDLINE_INSECURE_REGISTRY: &str = "vmctl.insecure_registry";
/// Kernel command line key: a virtio-fs share to mount at the same path as
/// on the desktop, `<tag>:<path>[:ro]` with the path percent-encoded
/// ([`crate::share`]); repeated for more.
pub const CMDLINE_SHARE: &str = "vmctl.share";

/// Marker line the guest prints on its console once the engine serves the
/// API; the host's boot watcher and humans reading `vmctl machine logs` see it.
pub const READY_MARKER: &str = "vmctl-guest: ready";

/// A request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Is the guest up and the engine serving? Answered with [`Health`].
    Health,
    /// Set the guest's wall clock (after a host suspend, the guest's clock lags).
    SetTime {
        /// Nanoseconds since the Unix epoch.
        unix_nanos: u64,
    },
    /// Read the guest's wall clock, as often as the host likes: after the
    /// `ok` answer, each line the host sends is answered with one
    /// [`ClockReading`] line, until either side closes the connection. The
    /// host's clock keeper asks every second on one long-lived connection
    /// and steps the clock ([`ControlRequest::SetTime`]) when it is off.
    Clock,
    /// Stop the containers, flush and unmount the data disk, power off. The
    /// answer comes before the power-off; the VM process then exits.
    Shutdown,
    /// Follow the published-port list: after the `ok` answer, the connection
    /// carries [`crate::ports::PortEvent`] JSON lines, a snapshot first, until
    /// either side closes it.
    WatchPorts,
    /// Open a shell in the VM (not in a container): `command` (empty: a login
    /// shell) on a terminal of `rows`×`cols` when `tty`, on pipes otherwise.
    Shell {
        #[serde(default)]
        command: Vec<String>,
        #[serde(default)]
        tty: bool,
        #[serde(default)]
        rows: u16,
        #[serde(default)]
        cols: u16,
        /// `TERM` for the shell.
        #[serde(default)]
        term: Option<String>,
    },
}

/// The guest's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    pub ok: bool,
    /// Why the request failed, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Set for [`ControlRequest::Health`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
}

impl ControlResponse {
    pub fn ok() -> Self {
        Self {
            ok: true,
            error: None,
            health: None,
        }
    }

    pub fn error(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(text.into()),
            health: None,
        }
    }
}

/// One answer on a [`ControlRequest::Clock`] connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockReading {
    /// The guest's wall clock when it answered, in nanoseconds since the
    /// Unix epoch.
    pub unix_nanos: u64,
}

/// The guest's state, as the host shows it in `vmctl machine status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// vmctl-guest's version.
    pub version: String,
    /// The guest kernel's release (`uname -r`).
    pub kernel: String,
    /// Milliseconds since the guest kernel booted (CLOCK_BOOTTIME).
    pub uptime_ms: u64,
    /// Whether the engine serves the API on vsock.
    pub engine_ready: bool,
    /// The VM NIC's IPv4 address with prefix, once DHCP gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_tagged_json() {
        let text = serde_json::to_string(&ControlRequest::SetTime { unix_nanos: 5 }).unwrap();
        assert_eq!(text, r#"{"op":"set_time","unix_nanos":5}"#);
        let shell: ControlRequest = serde_json::from_str(r#"{"op":"shell","tty":true}"#).unwrap();
        assert_eq!(
            shell,
            ControlRequest::Shell {
                command: vec![],
                tty: true,
                rows: 0,
                cols: 0,
                term: None
            }
        );
        let health: ControlRequest = serde_json::from_str(r#"{"op":"health"}"#).unwrap();
        assert_eq!(health, ControlRequest::Health);
        let clock: ControlRequest = serde_json::from_str(r#"{"op":"clock"}"#).unwrap();
        assert_eq!(clock, ControlRequest::Clock);
    }
}
