//! `vmctl`: the desktop CLI. A thin `main` over the library's verbs.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vmctl",
    version,
    about = "Containers on your desktop, in a small Linux VM"
)]
struct Cli {
    /// Engine for the container verbs (unix:///path, npipe:////./pipe/NAME
    /// on Windows); default: the machine's.
    #[arg(long, short = 'H', global = true, env = "VMCTL_HOST")]
    host: Option<String>,
    /// Machine for the container verbs.
    #[arg(long, global = true, env = "VMCTL_MACHINE", default_value = "default")]
    machine: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the version of vmctl and of the engine it talks to.
    Version,
    /// Manage the VM that runs the engine.
    #[command(subcommand)]
    Machine(vmctl::cli::machine::MachineCommand),
    /// Forward desktop ports to the VM (live) and list every forward.
    #[command(subcommand)]
    Port(vmctl::cli::port::PortCommand),
    #[command(flatten)]
    Container(vmctl::cli::container::ContainerCommand),
    /// The VZ VMM process of one machine (its daemon starts it).
    #[command(hide = true, name = "__vmm-vz")]
    VmmVz { config: std::path::PathBuf },
    /// A share's virtiofsd under its guard (its daemon starts it).
    #[command(hide = true, name = "__share-guard")]
    ShareGuard {
        root: std::path::PathBuf,
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// A machine's forward link: its network namespace and tap (its daemon
    /// starts it).
    #[command(hide = true, name = "__forward-link")]
    ForwardLink { socket: std::path::PathBuf },
}

fn init_logging(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("VMCTL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(!daemon && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() {
    // `vmctl ps | head -1`: end quietly on a closed pipe, as other CLIs do.
    // (Windows has no SIGPIPE: a write to a closed pipe fails.)
    #[cfg(unix)]
    // SAFETY: setting a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let daemon = matches!(
        cli.command,
        Command::Machine(
            vmctl::cli::machine::MachineCommand::Daemon(_)
                | vmctl::cli::machine::MachineCommand::Supervise(_)
        ) | Command::VmmVz { .. }
            | Command::ShareGuard { .. }
            | Command::ForwardLink { .. }
    );
    init_logging(daemon);
    let result = match cli.command {
        Command::Version => vmctl::cli::version::run(cli.host.as_deref())
            .map(|()| 0)
            .map_err(|e| vmctl::error_chain(&e)),
        Command::Machine(command) => block_on(async {
            vmctl::cli::machine::dispatch(command)
                .await
                .map_err(|e| vmctl::error_chain(&e))
        }),
        Command::Port(command) => block_on(async {
            vmctl::cli::port::dispatch(cli.host.as_deref(), &cli.machine, command)
                .await
                .map_err(|e| vmctl::error_chain(&e))
        }),
        Command::VmmVz { config } => vmctl_vz::run_vmm(&config)
            .map(|()| 0)
            .map_err(|e| vmctl::error_chain(&e)),
        Command::ShareGuard { root, command } => share_guard(&root, &command),
        Command::ForwardLink { socket } => forward_link(&socket),
        Command::Container(command) => block_on(async {
            let docker = vmctl::cli::engine::connect(cli.host.as_deref(), &cli.machine)
                .await
                .map_err(|e| vmctl::error_chain(&e))?;
            vmctl::cli::container::dispatch(&docker, command)
                .await
                .map_err(|e| vmctl::error_chain(&e))
        }),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(message) => {
            eprintln!("vmctl: {message}");
            std::process::exit(1);
        }
    }
}

#[cfg(target_os = "linux")]
fn share_guard(root: &std::path::Path, command: &[std::ffi::OsString]) -> Result<i32, String> {
    vmctl::shares::guard::run(root, command).map_err(|e| format!("share guard: {e}"))
}

#[cfg(target_os = "linux")]
fn forward_link(socket: &std::path::Path) -> Result<i32, String> {
    vmctl::link::helper::run(socket).map_err(|e| format!("forward link: {e}"))
}

#[cfg(not(target_os = "linux"))]
fn forward_link(_: &std::path::Path) -> Result<i32, String> {
    Err("the forward link runs on Linux only".into())
}

#[cfg(not(target_os = "linux"))]
fn share_guard(_: &std::path::Path, _: &[std::ffi::OsString]) -> Result<i32, String> {
    Err("the share guard runs on Linux only".into())
}

/// Runs `future`, then leaves without waiting for blocked readers of stdin
/// (tokio reads stdin on a blocking thread that only a keypress would end).
fn block_on<T>(future: impl std::future::Future<Output = T>) -> T {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vmctl: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let out = runtime.block_on(future);
    runtime.shutdown_background();
    out
}
