//! PID 1 of the VM. Single-threaded, no async runtime: it mounts the basics,
//! sets the clock, loads the modules, reads the host's per-boot vsock secret
//! from fw_cfg (without it, it powers off: [`super::secret`]), starts DHCP in
//! the background, prepares the data disk, then runs the engine (`/init
//! vm-engine`) and the port forwarder (`/init vm-forward`) as its children,
//! each handed the secret by pipe, and reaps every orphan. The engine
//! exiting 0 means "power off" (the host
//! asked); a crash restarts it (at most 5 times a minute). SIGTERM, SIGINT
//! and SIGPWR to PID 1 stop the engine and power off.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use vmctl_proto::control::{CMDLINE_DATA_DISK, CMDLINE_LOG, CMDLINE_TIME, DATA_MOUNT};
use vmctl_proto::forward::CMDLINE_BIND;

use vmctl_proto::auth::Secret;

use super::{clock, cmdline, dhcp, disk, modules, mounts, power, secret, shares};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Runs PID 1; never returns.
pub fn main() -> ! {
    console();
    std::env::set_var("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    std::env::set_var("HOME", "/root");
    std::env::set_var("VMCTL_VM", "1");
    let left_rootfs = mounts::leave_rootfs();
    mounts::mount_all();
    let line = cmdline::read();
    logging(cmdline::value(&line, CMDLINE_LOG));
    if let Some(address) = cmdline::value(&line, CMDLINE_BIND) {
        std::env::set_var(super::engine::BIND_ENV, address);
    }
    step("mounts", || ());
    if let Err(e) = left_rootfs {
        tracing::error!(error = %e, "cannot leave the initramfs root: containers will not start");
    }
    if let Some((secs, nanos)) = cmdline::value(&line, CMDLINE_TIME).and_then(clock::parse) {
        if let Err(e) = clock::set(secs, nanos) {
            tracing::warn!(error = %e, "cannot set the clock");
        }
    }
    hostname();
    let (loaded, failed) = step("modules", || {
        modules::load_all(std::path::Path::new(modules::LIST))
    });
    tracing::info!(loaded, failed, "kernel modules");
    // VZ's console (hvc0) exists only once virtio_console, a module, is
    // loaded: until now PID 1 may have had no console at all.
    console();
    // Before any container can exist: no secret, nothing served.
    let boot_secret = step("secret", || secret::from_host(&line)).unwrap_or_else(|e| refuse(&e));
    step("network", network);
    step("sysctls", tune);
    match cmdline::value(&line, CMDLINE_DATA_DISK) {
        Some(device) => {
            let outcome = step("data disk", || {
                disk::prepare(
                    std::path::Path::new(device),
                    std::path::Path::new(DATA_MOUNT),
                )
            });
            match outcome {
                disk::DiskOutcome::Memory(reason) => {
                    tracing::error!(%reason, "the engine's state lives in memory this boot")
                }
                other => tracing::info!(device, ?other, "data disk"),
            }
        }
        None => tracing::warn!("no data disk: the engine's state lives in memory"),
    }
    step("shares", || shares::mount_all(&line));
    install_signal_handlers();
    supervise(&boot_secret);
    power::power_off(DATA_MOUNT)
}

/// Without the host's secret the vsock services would answer anyone who
/// reaches them: say why on the console and power off.
fn refuse(error: &secret::SecretError) -> ! {
    let mut cause = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(e) = next {
        if !cause.is_empty() {
            cause.push_str(": ");
        }
        cause.push_str(&e.to_string());
        next = e.source();
    }
    tracing::error!(error = %cause, "no per-boot secret from the host");
    eprintln!(
        "vmctl-guest: refusing to serve: the host gave this VM no vsock secret \
         (fw_cfg {}; {cause}). Start the VM with the vmctl that built this image.",
        vmctl_proto::auth::FW_CFG_NAME
    );
    power::power_off(DATA_MOUNT)
}

/// fds 0, 1, 2 on the console.
fn console() {
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds; the console file stays open until then.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

fn logging(filter: Option<&str>) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter.unwrap_or("info,hickory_server=warn"))
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    std::env::set_var("VMCTL_LOG", filter.to_string());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one boot step, logging its duration.
fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    tracing::info!(
        step = name,
        ms = started.elapsed().as_millis() as u64,
        since_boot_ms = super::control::uptime_ms(),
        "boot step"
    );
    out
}

fn hostname() {
    let name = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "vmctl".into());
    let _ = nix::unistd::sethostname(name.trim());
}

fn network() {
    for (interface, up) in [("lo", true), (super::engine::INTERFACE, true)] {
        let _ = Command::new("/bin/busybox")
            .args([
                "ip",
                "link",
                "set",
                interface,
                if up { "up" } else { "down" },
            ])
            .status();
    }
    if let Err(e) = dhcp::start(super::engine::INTERFACE) {
        tracing::warn!(error = %e, "cannot start udhcpc");
    }
    link();
}

/// The forward link (`vmctl.link=ADDRESS/PREFIX`, the NIC whose MAC is
/// `LINK_MAC`): the desktop's daemon reaches published container ports
/// through it, its own TCP talking to the containers' (the VM routes), and
/// the VM's own ports of `vmctl port` rules at our link address, which is
/// mapped to our loopback (where those rules lead) for what comes in on
/// the link alone. Up with its large MTU and our address; no route beyond
/// the link, and no container starts anything through it.
fn link() {
    let cmdline = super::cmdline::read();
    let Some(address) = super::cmdline::value(&cmdline, vmctl_proto::forward::CMDLINE_LINK) else {
        return;
    };
    let Some(interface) = interface_with_mac(vmctl_proto::forward::LINK_MAC) else {
        tracing::warn!("the kernel command line names a forward link but no NIC has its MAC");
        return;
    };
    let mtu = vmctl_proto::forward::LINK_MTU.to_string();
    let guest = vmctl_proto::forward::LINK_GUEST.to_string();
    // What comes in on the link to our address goes to our loopback; and
    // nothing forwarded (a container's) may start a flow out of the link:
    // only answers to the desktop's own connections leave through it.
    // One line for `nft`: statements and chains end in `;`.
    let rules = format!(
        "table ip vmctl_link {{ \
         chain prerouting {{ type nat hook prerouting priority -110; \
         iifname \"{interface}\" ip daddr {guest} dnat to 127.0.0.1; }}; \
         chain forward {{ type filter hook forward priority -10; \
         oifname \"{interface}\" ct state new drop; }}; }}"
    );
    let steps: [(&str, &[&str]); 3] = [
        (
            "/bin/busybox",
            &["ip", "link", "set", &interface, "mtu", &mtu, "up"],
        ),
        (
            "/bin/busybox",
            &["ip", "addr", "add", address, "dev", &interface],
        ),
        ("/usr/sbin/nft", &[&rules]),
    ];
    // A link without its rules must not carry anything: it goes down, the
    // host's probe never gets an answer, and forwards stay on vsock.
    let abandon = || {
        let _ = Command::new("/bin/busybox")
            .args(["ip", "link", "set", &interface, "down"])
            .status();
    };
    let route_localnet = format!("/proc/sys/net/ipv4/conf/{interface}/route_localnet");
    if let Err(e) = std::fs::write(&route_localnet, "1") {
        tracing::warn!(error = %e, "cannot set up the forward link");
        abandon();
        return;
    }
    for (program, args) in steps {
        let status = Command::new(program).args(args).status();
        if !status.is_ok_and(|s| s.success()) {
            tracing::warn!(
                program,
                ?args,
                "cannot set up the forward link; it stays down"
            );
            abandon();
            return;
        }
    }
    // UDP datagrams of one flow that arrive together cross the VM's routing,
    // bridge and the container's veth as one GRO packet and are split again
    // at the container's socket: under emulation that per-packet path is
    // what limits a published UDP port.
    match super::ethtool::set_feature(&interface, "rx-udp-gro-forwarding", true) {
        Ok(true) => {}
        Ok(false) => tracing::info!(%interface, "no UDP GRO forwarding on the forward link"),
        Err(e) => {
            tracing::info!(%interface, error = %e, "no UDP GRO forwarding on the forward link")
        }
    }
    tracing::info!(%interface, address, "forward link up");
}

/// The network interface whose MAC address is `mac` (lower case).
fn interface_with_mac(mac: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let address = std::fs::read_to_string(entry.path().join("address")).ok()?;
            (address.trim() == mac).then(|| entry.file_name().to_string_lossy().into_owned())
        })
}

/// Kernel settings a container host needs beyond the defaults of a 1 GiB VM.
/// Connection tracking sizes its table from memory (8192 entries here), and
/// every forwarded connection is tracked until 120 s after its TIME_WAIT:
/// ~70 short connections a second through one published port filled it and
/// the next ones were dropped. Docker Desktop's VM raises it likewise.
const SYSCTLS: [(&str, &str); 2] = [
    ("/sys/module/nf_conntrack/parameters/hashsize", "65536"),
    ("/proc/sys/net/netfilter/nf_conntrack_max", "262144"),
];

fn tune() {
    for (path, value) in SYSCTLS {
        if let Err(e) = std::fs::write(path, value) {
            tracing::warn!(path, value, error = %e, "cannot set a kernel parameter");
        }
    }
}

fn install_signal_handlers() {
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGPWR] {
        // SAFETY: the handler only stores to an atomic.
        unsafe {
            let _ = sigaction(signal, &action);
        }
    }
}

/// Starts `/init <role>` with the secret handed over by pipe.
fn spawn_child(role: &str, secret: &Secret) -> std::io::Result<Pid> {
    let mut command = Command::new("/proc/self/exe");
    command.arg(role);
    let handoff = secret::hand_to(&mut command, secret).map_err(std::io::Error::other)?;
    let child = command.spawn();
    handoff.done();
    Ok(Pid::from_raw(child?.id() as i32))
}

/// The forwarder child: restarted whenever it exits, never a reason to stop.
fn spawn_forwarder(secret: &Secret) -> Option<Pid> {
    match spawn_child("vm-forward", secret) {
        Ok(pid) => Some(pid),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the port forwarder");
            None
        }
    }
}

/// Runs the engine and forwarder children, reaping every orphan, until a
/// power-off is due; then stops the forwarder too.
fn supervise(secret: &Secret) {
    let mut forwarder = spawn_forwarder(secret);
    supervise_engine(&mut forwarder, secret);
    if let Some(pid) = forwarder {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
    }
}

fn supervise_engine(forwarder: &mut Option<Pid>, secret: &Secret) {
    let mut crashes: Vec<Instant> = Vec::new();
    loop {
        let engine = match spawn_child("vm-engine", secret) {
            Ok(pid) => pid,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the engine");
                return;
            }
        };
        let mut stopping = false;
        let status = loop {
            if STOP.load(Ordering::SeqCst) && !stopping {
                stopping = true;
                let _ = nix::sys::signal::kill(engine, Signal::SIGTERM);
            }
            match waitpid(Pid::from_raw(-1), None) {
                Ok(WaitStatus::Exited(pid, code)) if pid == engine => break Some(code),
                Ok(WaitStatus::Signaled(pid, signal, _)) if pid == engine => {
                    tracing::error!(?signal, "the engine was killed");
                    break None;
                }
                Ok(WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))
                    if Some(pid) == *forwarder && !stopping =>
                {
                    tracing::error!("the port forwarder exited; restarting it");
                    std::thread::sleep(Duration::from_millis(100));
                    *forwarder = spawn_forwarder(secret);
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "waitpid");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        if status == Some(0) || stopping {
            return;
        }
        tracing::error!(?status, "the engine exited unexpectedly; restarting it");
        crashes.retain(|t| t.elapsed() < Duration::from_secs(60));
        crashes.push(Instant::now());
        if crashes.len() > 5 {
            tracing::error!("the engine keeps failing; powering off");
            return;
        }
    }
}
