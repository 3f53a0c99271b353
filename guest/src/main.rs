//! `vmctl-guest` command line: `serve` runs the engine; `monitor` is the
//! per-container process the engine starts (not for users). As PID 1 (the
//! VM's `/init`) it runs the VM's init instead, which starts `vm-engine`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use vmctl_guest::engine::{Engine, EngineOptions};

#[derive(Parser)]
#[command(name = "vmctl-guest", version, about = "vmctl's container engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Docker Engine API.
    Serve {
        /// State directory (images, containers, volumes).
        #[arg(long, default_value = "/var/lib/vmctl")]
        root: PathBuf,
        /// Directory for sockets and runtime state; defaults to <root>/run.
        #[arg(long)]
        exec_root: Option<PathBuf>,
        /// Where to listen, as unix:///path.
        #[arg(
            long = "host",
            short = 'H',
            default_value = "unix:///run/vmctl/docker.sock"
        )]
        host: String,
        /// Cgroup that containers are put under.
        #[arg(long, default_value = "vmctl")]
        cgroup_parent: String,
        /// Directory of built-in image tarballs, loaded at start when missing.
        #[arg(long)]
        builtin_images: Option<PathBuf>,
        #[command(flatten)]
        network: Box<NetworkFlags>,
        /// A mirror of Docker Hub (`https://mirror.example`); repeat for more.
        #[arg(long = "registry-mirror", value_name = "URL")]
        registry_mirrors: Vec<String>,
        /// A registry spoken to over plain HTTP (`host[:port]` or a CIDR);
        /// loopback registries always are. Repeat for more.
        #[arg(long = "insecure-registry", value_name = "HOST")]
        insecure_registries: Vec<String>,
    },
    /// The engine inside the VM: API on vsock 2375, control on vsock 1025
    /// (started by PID 1; not for users).
    #[command(hide = true)]
    VmEngine,
    /// The VM's published-port forwarder on vsock 1026 (started by PID 1;
    /// not for users).
    #[command(hide = true)]
    VmForward,
    /// Run one container (started by the engine; not for users).
    #[command(hide = true)]
    Monitor {
        /// The monitor.json the engine wrote.
        config: PathBuf,
    },
    /// `docker cp` in a container's view (started by the engine; not for users).
    #[command(hide = true)]
    Cp {
        /// The request, as JSON.
        request: String,
    },
}

/// Docker's daemon flags about the default bridge and the firewall.
#[derive(clap::Args)]
struct NetworkFlags {
    /// The default bridge's interface name; `none` for no default bridge.
    #[arg(long, default_value = "vmctl0")]
    bridge: String,
    /// The default bridge's address and prefix (e.g. 172.17.0.1/16).
    #[arg(long)]
    bip: Option<ipnet::Ipv4Net>,
    /// Where the default bridge's dynamic addresses come from (within --bip).
    #[arg(long)]
    fixed_cidr: Option<ipnet::Ipv4Net>,
    /// MTU of the default bridge's interfaces.
    #[arg(long)]
    mtu: Option<u32>,
    /// Default route of containers on the default bridge.
    #[arg(long)]
    default_gateway: Option<std::net::Ipv4Addr>,
    /// Let containers on the default bridge talk to each other.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    icc: bool,
    /// Turn on net.ipv4.ip_forward.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_forward: bool,
    /// MASQUERADE traffic leaving the bridges.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ip_masq: bool,
    /// The host address of ports published without one (`-p 8080:80`).
    #[arg(long, default_value = "0.0.0.0")]
    ip: std::net::IpAddr,
    /// A subnet no network may overlap (the uplink's own); repeat for more.
    #[arg(long = "reserved-subnet", value_name = "CIDR")]
    reserved_subnets: Vec<ipnet::Ipv4Net>,
}

impl NetworkFlags {
    fn options(self) -> anyhow::Result<vmctl_guest::network::NetworkOptions> {
        if let (Some(bip), Some(fixed)) = (self.bip, self.fixed_cidr) {
            anyhow::ensure!(
                bip.contains(&fixed),
                "--fixed-cidr {fixed} is not within --bip {bip}"
            );
        }
        if let Some(mtu) = self.mtu {
            anyhow::ensure!(
                (68..=65535).contains(&mtu),
                "--mtu {mtu} is out of range (68-65535)"
            );
        }
        Ok(vmctl_guest::network::NetworkOptions {
            bridge: self.bridge,
            bip: self.bip,
            fixed_cidr: self.fixed_cidr,
            mtu: self.mtu,
            default_gateway: self.default_gateway,
            icc: self.icc,
            ip_forward: self.ip_forward,
            ip_masq: self.ip_masq,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            default_bind_ip: self.ip,
            port_authority: Default::default(),
            reserved_subnets: self.reserved_subnets.iter().map(|n| n.trunc()).collect(),
            owns_kernel: false,
        })
    }
}

/// Logs go to a private copy of stderr (close-on-exec): libcontainer logs
/// from the processes it forks before they exec the container's program, and
/// by then fd 2 is the container's stderr, which must not see them.
fn init_logging() {
    use std::io::IsTerminal;
    // Inside the VM stderr is the serial console, read from a log file.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("VMCTL_VM").is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let private = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))
        .ok()
        // SAFETY: F_DUPFD_CLOEXEC just returned this new fd, owned by nobody else.
        .map(|fd| unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match private {
        Some(file) => builder.with_writer(std::sync::Mutex::new(file)).init(),
        None => builder.with_writer(std::io::stderr).init(),
    }
}

fn main() -> anyhow::Result<()> {
    if std::process::id() == 1 {
        vmctl_guest::vm::init::main();
    }
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::VmEngine => vmctl_guest::vm::engine::main(),
        Command::VmForward => vmctl_guest::vm::forward::main(),
        Command::Monitor { config } => {
            std::process::exit(vmctl_guest::runtime::monitor::main(&config));
        }
        Command::Cp { request } => std::process::exit(vmctl_guest::runtime::cp::main(&request)),
        Command::Serve {
            root,
            exec_root,
            host,
            cgroup_parent,
            builtin_images,
            network,
            registry_mirrors,
            insecure_registries,
        } => {
            let socket = vmctl_guest::api::unix_path(&host)?;
            let registry = vmctl_guest::image::registry::RegistryOptions {
                mirrors: registry_mirrors,
                insecure: insecure_registries,
            };
            registry.validate().map_err(anyhow::Error::msg)?;
            let options = EngineOptions {
                exec_root: exec_root.unwrap_or_else(|| root.join("run")),
                root,
                cgroup_parent,
                builtin_images,
                self_exe: std::env::current_exe().context("cannot find own executable")?,
                network: network.options()?,
                registry,
                // Standalone: Docker's plain bind semantics.
                binds: Default::default(),
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start tokio")?;
            runtime.block_on(async move {
                let engine = Engine::open(options).await?;
                vmctl_guest::api::serve(engine, &socket).await?;
                anyhow::Ok(())
            })
        }
    }
}
