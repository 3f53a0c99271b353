//! `vmctl run [OPTIONS] IMAGE [COMMAND…]`, as `docker run` does it: create
//! (pulling a missing image first), attach before start, stream, and exit
//! with the container's code — 125 when the engine refused the container.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder,
    ResizeContainerTTYOptionsBuilder, StartContainerOptions, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::error::CliError;
use super::stream;

/// `docker run`'s code for "the engine refused".
pub const ENGINE_ERROR: i32 = 125;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Run in the background and print the container id.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep stdin open and send it to the container.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Container name.
    #[arg(long)]
    pub name: Option<String>,
    /// Publish a port: [ip:][host_port:]container_port[/proto].
    #[arg(short, long = "publish")]
    pub publish: Vec<String>,
    /// Environment variable KEY=VALUE (or KEY, taken from here).
    #[arg(short, long = "env")]
    pub env: Vec<String>,
    /// Volume or bind mount: SRC:DST[:ro].
    #[arg(short, long = "volume")]
    pub volume: Vec<String>,
    /// Network (bridge, none, host, NAME, container:NAME).
    #[arg(long)]
    pub network: Option<String>,
    /// Working directory in the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Override the image's entrypoint.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// User (name or uid[:gid]).
    #[arg(short, long)]
    pub user: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Print help (`-h` is the host name, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image.
    pub image: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `-p` in Docker's forms → (container port key, binding).
pub fn parse_publish(spec: &str) -> Result<(String, PortBinding), CliError> {
    let bad = || {
        CliError::Usage(format!(
            "invalid publish spec {spec:?}: use [ip:][host_port:]container_port[/tcp|udp]"
        ))
    };
    let (ports, proto) = spec.rsplit_once('/').unwrap_or((spec, "tcp"));
    if proto != "tcp" && proto != "udp" {
        return Err(bad());
    }
    let parts: Vec<&str> = ports.split(':').collect();
    let (ip, host, container) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [ip, h, c] => (*ip, *h, *c),
        _ => return Err(bad()),
    };
    let numeric = |p: &str| !p.is_empty() && p.split('-').all(|n| n.parse::<u16>().is_ok());
    if !numeric(container) || !(host.is_empty() || numeric(host)) {
        return Err(bad());
    }
    let binding = PortBinding {
        host_ip: (!ip.is_empty()).then(|| ip.to_owned()),
        host_port: Some(host.to_owned()),
    };
    Ok((format!("{container}/{proto}"), binding))
}

fn body(args: &Args) -> Result<ContainerCreateBody, CliError> {
    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for spec in &args.publish {
        let (port, binding) = parse_publish(spec)?;
        bindings
            .entry(port)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(binding);
    }
    let exposed: HashMap<String, HashMap<(), ()>> = bindings
        .keys()
        .map(|k| (k.clone(), HashMap::new()))
        .collect();
    let env = args
        .env
        .iter()
        .filter_map(|e| match e.split_once('=') {
            Some(_) => Some(e.clone()),
            None => std::env::var(e).ok().map(|v| format!("{e}={v}")),
        })
        .collect::<Vec<_>>();
    let host_config = HostConfig {
        binds: (!args.volume.is_empty()).then(|| args.volume.clone()),
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: args.network.clone(),
        // Foreground --rm waits and removes itself (so the exit code is never lost).
        auto_remove: Some(args.rm && args.detach),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(args.image.clone()),
        cmd: (!args.command.is_empty()).then(|| args.command.clone()),
        entrypoint: args.entrypoint.as_ref().map(|e| vec![e.clone()]),
        env: (!env.is_empty()).then_some(env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        hostname: args.hostname.clone(),
        tty: Some(args.tty),
        open_stdin: Some(args.interactive),
        stdin_once: Some(args.interactive),
        attach_stdin: Some(args.interactive),
        attach_stdout: Some(!args.detach),
        attach_stderr: Some(!args.detach),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(host_config),
        ..Default::default()
    })
}

async fn create(docker: &Docker, args: &Args) -> Result<String, CliError> {
    let options = || {
        let mut builder = CreateContainerOptionsBuilder::new();
        if let Some(name) = &args.name {
            builder = builder.name(name);
        }
        builder.build()
    };
    match docker.create_container(Some(options()), body(args)?).await {
        Ok(created) => Ok(created.id),
        Err(e) => {
            let e = CliError::from(e);
            if !matches!(&e, CliError::Daemon { message } if message.starts_with("No such image")) {
                return Err(e);
            }
            eprintln!("Unable to find image '{}' locally", args.image);
            super::pull::pull(docker, &args.image).await?;
            Ok(docker
                .create_container(Some(options()), body(args)?)
                .await?
                .id)
        }
    }
}

pub async fn run(docker: &Docker, args: Args) -> Result<i32, CliError> {
    let id = match create(docker, &args).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("vmctl: {}", crate::error_chain(&e));
            return Ok(ENGINE_ERROR);
        }
    };
    if args.detach {
        if let Err(e) = docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            start_failed(&crate::error_chain(&CliError::from(e)));
            return Ok(ENGINE_ERROR);
        }
        println!("{id}");
        return Ok(0);
    }
    let attach = AttachContainerOptionsBuilder::new()
        .stream(true)
        .stdin(args.interactive)
        .stdout(true)
        .stderr(true)
        .build();
    let attached = docker.attach_container(&id, Some(attach)).await?;
    let raw = if args.tty && args.interactive {
        super::terminal::RawMode::enter()
    } else {
        None
    };
    if let Err(e) = docker
        .start_container(&id, None::<StartContainerOptions>)
        .await
    {
        drop(raw);
        start_failed(&crate::error_chain(&CliError::from(e)));
        remove(docker, &id, args.rm).await;
        return Ok(ENGINE_ERROR);
    }
    if args.tty {
        if let Some((rows, cols)) = super::terminal::size() {
            let size = ResizeContainerTTYOptionsBuilder::new()
                .h(rows.into())
                .w(cols.into())
                .build();
            let _ = docker.resize_container_tty(&id, size).await;
        }
    }
    let feeding = args.interactive.then(|| stream::feed_stdin(attached.input));
    let copied = stream::copy_output(attached.output).await;
    drop(raw);
    if let Some(feeding) = feeding {
        feeding.abort();
    }
    copied?;
    let code = exit_code(docker, &id).await;
    remove(docker, &id, args.rm).await;
    code
}

/// Prints why a start failed. When a desktop program holds a published
/// port, the engine says only that (the guest never learns the desktop's
/// processes); the CLI runs on the desktop and names the program itself.
fn start_failed(message: &str) {
    eprintln!("vmctl: {message}");
    if let Some(port) = port_in_use(message) {
        let holder = crate::forward::holder::find(vmctl_proto::ports::Protocol::Tcp, port)
            .or_else(|| crate::forward::holder::find(vmctl_proto::ports::Protocol::Udp, port));
        if let Some(holder) = holder {
            eprintln!(
                "vmctl: port {port} is held on this desktop by {} (pid {})",
                holder.name, holder.pid
            );
        }
    }
}

/// The port of `Bind for ADDRESS failed: port is already in use on the desktop`.
fn port_in_use(message: &str) -> Option<u16> {
    let suffix = format!(" failed: {}", crate::forward::ports::IN_USE);
    let end = message.find(&suffix)?;
    let start = message[..end].rfind("Bind for ")? + "Bind for ".len();
    let address: std::net::SocketAddr = message[start..end].parse().ok()?;
    Some(address.port())
}

/// The exit code of a container that has stopped (or stops soon).
pub async fn exit_code(docker: &Docker, id: &str) -> Result<i32, CliError> {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    match docker.wait_container(id, Some(options)).next().await {
        Some(Ok(answer)) => Ok(answer.status_code as i32),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code as i32),
        Some(Err(e)) => Err(e.into()),
        None => Ok(0),
    }
}

async fn remove(docker: &Docker, id: &str, rm: bool) {
    if rm {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        let _ = docker.remove_container(id, Some(options)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let (port, b) = parse_publish("8080:80").unwrap();
        assert_eq!(
            (port.as_str(), b.host_ip, b.host_port.as_deref()),
            ("80/tcp", None, Some("8080"))
        );
        let (port, b) = parse_publish("127.0.0.1::53/udp").unwrap();
        assert_eq!(
            (port.as_str(), b.host_ip.as_deref(), b.host_port.as_deref()),
            ("53/udp", Some("127.0.0.1"), Some(""))
        );
        assert_eq!(parse_publish("80").unwrap().0, "80/tcp");
        assert!(parse_publish("x:80").is_err());
        assert!(parse_publish("80/sctp").is_err());
    }

    #[test]
    fn the_port_in_use_is_found_in_the_engines_message() {
        let message = "Docker responded with status code 500: driver failed programming external connectivity on endpoint web: Bind for 127.0.0.1:8080 failed: port is already in use on the desktop";
        assert_eq!(port_in_use(message), Some(8080));
        let v6 = "Bind for [::1]:53 failed: port is already in use on the desktop";
        assert_eq!(port_in_use(v6), Some(53));
        assert_eq!(
            port_in_use("Bind for 127.0.0.1:8080 failed: port is already allocated"),
            None
        );
    }
}
