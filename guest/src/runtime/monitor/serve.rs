//! The monitor's event loop: a single-threaded tokio runtime that pumps the
//! container's output, reaps its processes, and answers the engine.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::{spawn_local, JoinHandle, LocalSet};

use super::fdio::AsyncFdIo;
use super::output::{Output, SharedOutput, ATTACH_QUEUE};
use super::protocol::{ExecSpec, ExitInfo, MonitorConfig, Reply, Request, FRAME_EXIT};
use super::stdio::{self, Stdio};
use super::{Created, MonitorError};
use crate::runtime::rootfs;

/// A running exec session, waiting for its process to end.
struct ExecWaiter {
    done: oneshot::Sender<i64>,
}

/// Everything the loop shares between its tasks (one thread, so `Rc`/`RefCell`).
struct Monitor {
    config: MonitorConfig,
    container: RefCell<Option<Container>>,
    init_pid: Cell<i32>,
    exit: RefCell<Option<ExitInfo>>,
    exited: Notify,
    waiters: RefCell<Vec<oneshot::Sender<ExitInfo>>>,
    /// Set once the run was released: later `Wait`s are answered at once.
    released: RefCell<Option<ExitInfo>>,
    output: SharedOutput,
    /// Where stdin goes: the stdin pipe, or the pty master.
    stdin: RefCell<Option<Rc<AsyncFdIo>>>,
    tty_master: Option<Rc<AsyncFdIo>>,
    execs: RefCell<HashMap<i32, ExecWaiter>>,
    exec_ttys: RefCell<HashMap<String, Rc<AsyncFdIo>>>,
    /// Exit statuses reaped before their exec was registered.
    early_exits: RefCell<HashMap<i32, i64>>,
}

fn exit_code(status: WaitStatus) -> Option<(i32, i64)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid.as_raw(), i64::from(code))),
        WaitStatus::Signaled(pid, signal, _) => Some((pid.as_raw(), 128 + signal as i64)),
        _ => None,
    }
}

/// Runs the loop until the init has exited and everybody was told.
pub fn run(created: Created) -> Result<(), MonitorError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(MonitorError::Runtime)?;
    LocalSet::new().block_on(&runtime, main_loop(created))
}

async fn main_loop(created: Created) -> Result<(), MonitorError> {
    let Created {
        config,
        container,
        stdio,
        listener,
    } = created;
    let output = Output::new(Some(&config.log_path)).map_err(|source| MonitorError::Listen {
        path: config.log_path.clone(),
        source,
    })?;
    let mut readers = Vec::new();
    let (stdin, tty_master) = match stdio {
        Stdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            readers.push(pump(stdout, 1, output.clone())?);
            readers.push(pump(stderr, 2, output.clone())?);
            let stdin = stdin
                .map(AsyncFdIo::new)
                .transpose()
                .map_err(MonitorError::Runtime)?;
            (stdin.map(Rc::new), None)
        }
        Stdio::Tty { master } => {
            let master = Rc::new(AsyncFdIo::new(master).map_err(MonitorError::Runtime)?);
            readers.push(pump_shared(master.clone(), 1, output.clone()));
            (Some(master.clone()), Some(master))
        }
    };
    let monitor = Rc::new(Monitor {
        config,
        container: RefCell::new(Some(container)),
        init_pid: Cell::new(0),
        exit: RefCell::new(None),
        exited: Notify::new(),
        waiters: RefCell::new(Vec::new()),
        released: RefCell::new(None),
        output,
        stdin: RefCell::new(stdin),
        tty_master,
        execs: RefCell::new(HashMap::new()),
        exec_ttys: RefCell::new(HashMap::new()),
        early_exits: RefCell::new(HashMap::new()),
    });
    if let Some(pid) = monitor.container.borrow().as_ref().and_then(|c| c.pid()) {
        monitor.init_pid.set(pid.as_raw());
    }

    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(MonitorError::Runtime)?;
    {
        let monitor = monitor.clone();
        spawn_local(async move {
            loop {
                reap(&monitor);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
    }

    listener
        .set_nonblocking(true)
        .map_err(MonitorError::Runtime)?;
    let listener = tokio::net::UnixListener::from_std(listener).map_err(MonitorError::Runtime)?;
    let connections: Rc<RefCell<Vec<JoinHandle<()>>>> = Rc::default();
    {
        let monitor = monitor.clone();
        let connections = connections.clone();
        spawn_local(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let task = spawn_local(handle(monitor.clone(), stream));
                connections.borrow_mut().push(task);
            }
        });
    }

    // Wait for the init to end.
    let notified = monitor.exited.notified();
    if monitor.exit.borrow().is_none() {
        notified.await;
    }
    // The kernel kills the rest of the pid namespace; the pipes close then.
    for reader in readers {
        let _ = tokio::time::timeout(Duration::from_secs(3), reader).await;
    }
    monitor.output.borrow_mut().finish();
    let mut exit = monitor.exit.borrow().clone().unwrap_or_default();
    exit.oom_killed = super::oom_killed(&monitor.config.cgroups_path);
    super::release(&monitor.config, monitor.container.borrow_mut().take());
    super::write_exit(&monitor.config, &exit);
    tracing::info!(id = %monitor.config.id, code = exit.exit_code, "container exited");
    *monitor.released.borrow_mut() = Some(exit.clone());
    for waiter in monitor.waiters.borrow_mut().drain(..) {
        let _ = waiter.send(exit.clone());
    }
    monitor.output.borrow_mut().detach_all();
    // Let every connection say its last word.
    let tasks: Vec<_> = connections.borrow_mut().drain(..).collect();
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    Ok(())
}

/// Reaps every exited child: the init ends the run, an exec ends its session.
fn reap(monitor: &Monitor) {
    loop {
        let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(status) => status,
        };
        let Some((pid, code)) = exit_code(status) else {
            continue;
        };
        if pid == monitor.init_pid.get() && monitor.exit.borrow().is_none() {
            *monitor.exit.borrow_mut() = Some(ExitInfo {
                exit_code: code,
                oom_killed: false,
                finished_at: crate::state::time::now_rfc3339(),
                error: String::new(),
            });
            monitor.exited.notify_waiters();
        } else if let Some(waiter) = monitor.execs.borrow_mut().remove(&pid) {
            let _ = waiter.done.send(code);
        } else {
            monitor.early_exits.borrow_mut().insert(pid, code);
        }
    }
}

/// Copies a pipe into `output` as `stream` until end of file.
fn pump(fd: OwnedFd, stream: u8, output: SharedOutput) -> Result<JoinHandle<()>, MonitorError> {
    let io = Rc::new(AsyncFdIo::new(fd).map_err(MonitorError::Runtime)?);
    Ok(pump_shared(io, stream, output))
}

fn pump_shared(io: Rc<AsyncFdIo>, stream: u8, output: SharedOutput) -> JoinHandle<()> {
    spawn_local(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => output.borrow_mut().push(stream, &buf[..n]),
            }
        }
    })
}

/// Pumps an exec's output as frames into its client's bounded queue. A client
/// that stops reading holds the pump, so the pipe fills and the exec's process
/// waits in `write`, as under Docker: the monitor never buffers more than
/// [`ATTACH_QUEUE`] frames for it. A client that is gone no longer holds
/// anything: the rest is read and dropped.
fn pump_frames(io: Rc<AsyncFdIo>, stream: u8, frames: mpsc::Sender<Vec<u8>>) -> JoinHandle<()> {
    spawn_local(async move {
        let mut buf = vec![0u8; 32 * 1024];
        let mut client = Some(frames);
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(frames) = &client {
                        let frame = super::protocol::frame(stream, &buf[..n]);
                        if frames.send(frame).await.is_err() {
                            client = None;
                        }
                    }
                }
            }
        }
    })
}

async fn reply(writer: &mut OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(reply).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await
}

/// Serves one connection from the engine.
async fn handle(monitor: Rc<Monitor>, stream: UnixStream) {
    let (read, mut writer) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(request) => request,
        Err(e) => {
            let _ = reply(&mut writer, &Reply::error(format!("bad request: {e}"))).await;
            return;
        }
    };
    let result = match request {
        Request::Start => reply(&mut writer, &start(&monitor)).await,
        Request::Wait => wait(&monitor, &mut writer).await,
        Request::Attach {
            stdin,
            stdout,
            stderr,
            detach_keys,
        } => attach(&monitor, stdin, stdout, stderr, detach_keys, reader, writer).await,
        Request::Kill { signal } => reply(&mut writer, &kill(&monitor, signal)).await,
        Request::KillExec { pid, signal } => {
            reply(&mut writer, &kill_exec(&monitor, pid, signal)).await
        }
        Request::Resize {
            exec_id,
            height,
            width,
        } => reply(&mut writer, &resize(&monitor, exec_id, height, width)).await,
        Request::Pause => reply(&mut writer, &pause(&monitor, true)).await,
        Request::Resume => reply(&mut writer, &pause(&monitor, false)).await,
        Request::Exec { exec_id, spec } => exec(&monitor, exec_id, spec, reader, writer).await,
        Request::Status => {
            let mut answer = Reply::ok();
            answer.pid = monitor.init_pid.get();
            answer.paused = monitor
                .container
                .borrow()
                .as_ref()
                .is_some_and(|c| c.can_resume());
            reply(&mut writer, &answer).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(id = %monitor.config.id, error = %e, "connection ended");
    }
}

fn start(monitor: &Monitor) -> Reply {
    let mut container = monitor.container.borrow_mut();
    let Some(container) = container.as_mut() else {
        return Reply::error("the container has already exited");
    };
    match container.start() {
        Ok(()) => {
            tracing::debug!(id = %monitor.config.id, "container started");
            let mut answer = Reply::ok();
            answer.pid = container.pid().map_or(0, |p| p.as_raw());
            monitor.init_pid.set(answer.pid);
            answer
        }
        Err(e) => Reply::error(format!("cannot start container: {e}")),
    }
}

async fn wait(monitor: &Monitor, writer: &mut OwnedWriteHalf) -> std::io::Result<()> {
    reply(writer, &Reply::ok()).await?;
    // Answered once the run is over and released (after the init's exit);
    // a Wait that arrives after that (a very short run) is answered at once.
    let released = monitor.released.borrow().clone();
    let exit = match released {
        Some(exit) => exit,
        None => {
            let (tx, rx) = oneshot::channel();
            monitor.waiters.borrow_mut().push(tx);
            match rx.await {
                Ok(exit) => exit,
                Err(_) => return Ok(()),
            }
        }
    };
    let mut line = serde_json::to_vec(&exit).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await
}

/// Feeds stdin from the connection until it is half-closed.
/// How a client's stdin ended.
#[derive(Debug, PartialEq)]
enum Fed {
    /// End of file from the client.
    Eof,
    /// The client typed its detach keys: it goes, stdin stays open.
    Detached,
}

/// Copies a client's stdin into `target` until EOF, or until the client
/// types `keys` (Docker's escape proxy: bytes that may begin the sequence
/// are held back, and written after all if the sequence breaks off).
async fn feed_stdin(
    mut reader: BufReader<OwnedReadHalf>,
    target: Rc<AsyncFdIo>,
    keys: &[u8],
) -> std::io::Result<Fed> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut escape = Escape::new(keys);
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            target.write_all(&escape.held).await?;
            return Ok(Fed::Eof);
        }
        let (out, detached) = escape.feed(&buf[..n]);
        target.write_all(&out).await?;
        if detached {
            return Ok(Fed::Detached);
        }
    }
}

/// The detach-key matcher over a byte stream.
struct Escape<'a> {
    keys: &'a [u8],
    held: Vec<u8>,
}

impl<'a> Escape<'a> {
    fn new(keys: &'a [u8]) -> Self {
        Self {
            keys,
            held: Vec::new(),
        }
    }

    /// What to pass on from `input`, and whether the keys were typed (what
    /// came after them is dropped with the client).
    fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        if self.keys.is_empty() {
            return (input.to_vec(), false);
        }
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if byte == self.keys[self.held.len()] {
                self.held.push(byte);
                if self.held.len() == self.keys.len() {
                    return (out, true);
                }
                continue;
            }
            out.append(&mut self.held);
            if byte == self.keys[0] {
                self.held.push(byte);
                if self.keys.len() == 1 {
                    return (out, true);
                }
            } else {
                out.push(byte);
            }
        }
        (out, false)
    }
}

/// Forwards frames to the connection until the sender side is dropped.
async fn forward_frames(
    mut frames: mpsc::Receiver<Vec<u8>>,
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    while let Some(frame) = frames.recv().await {
        writer.write_all(&frame).await?;
    }
    Ok(())
}

async fn attach(
    monitor: &Rc<Monitor>,
    want_stdin: bool,
    stdout: bool,
    stderr: bool,
    detach_keys: Vec<u8>,
    reader: BufReader<OwnedReadHalf>,
    mut writer: OwnedWriteHalf,
) -> std::io::Result<()> {
    if monitor.exit.borrow().is_some() {
        return reply(&mut writer, &Reply::error("the container has exited")).await;
    }
    let mut frames = monitor.output.borrow_mut().attach(stdout, stderr);
    reply(&mut writer, &Reply::ok()).await?;
    let target = if want_stdin {
        monitor.stdin.borrow().clone()
    } else {
        None
    };
    let (detached_tx, detached_rx) = oneshot::channel::<()>();
    // Ready once the client detached; pending for ever if it never will (a
    // dropped sender), so the loop below can poll it again and again.
    let detached = async {
        if detached_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(detached);
    if let Some(target) = target {
        let monitor = monitor.clone();
        spawn_local(async move {
            match feed_stdin(reader, target, &detach_keys).await {
                // The client detached: its stream ends, stdin stays open.
                Ok(Fed::Detached) => {
                    let _ = detached_tx.send(());
                }
                // Stdin closed by the client: with StdinOnce the container sees EOF.
                _ => {
                    if monitor.config.stdin_once && monitor.tty_master.is_none() {
                        monitor.stdin.borrow_mut().take();
                    }
                }
            }
        });
    } else {
        drop(detached_tx);
    }
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Some(frame) => writer.write_all(&frame).await?,
                None => break,
            },
            () = &mut detached => break,
        }
    }
    writer.shutdown().await
}

fn kill(monitor: &Monitor, signal: i32) -> Reply {
    if monitor.exit.borrow().is_some() || monitor.init_pid.get() == 0 {
        return Reply::error("container is not running");
    }
    let signal = match Signal::try_from(signal) {
        Ok(signal) => signal,
        Err(_) => return Reply::error(format!("invalid signal: {signal}")),
    };
    match nix::sys::signal::kill(Pid::from_raw(monitor.init_pid.get()), signal) {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::error(format!("cannot kill: {e}")),
    }
}

/// Signals an exec's process. Only a process this monitor started and has
/// not reaped yet: its pid cannot have been reused by then.
fn kill_exec(monitor: &Monitor, pid: i32, signal: i32) -> Reply {
    if !monitor.execs.borrow().contains_key(&pid) {
        return Reply::error("no such exec process");
    }
    let signal = match Signal::try_from(signal) {
        Ok(signal) => signal,
        Err(_) => return Reply::error(format!("invalid signal: {signal}")),
    };
    match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::error(format!("cannot kill: {e}")),
    }
}

fn resize(monitor: &Monitor, exec_id: Option<String>, height: u16, width: u16) -> Reply {
    let master = match exec_id {
        None => monitor.tty_master.clone(),
        Some(id) => monitor.exec_ttys.borrow().get(&id).cloned(),
    };
    let Some(master) = master else {
        return Reply::error("no terminal to resize");
    };
    match stdio::resize(master.raw(), height, width) {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::error(format!("cannot resize: {e}")),
    }
}

fn pause(monitor: &Monitor, pause: bool) -> Reply {
    let mut container = monitor.container.borrow_mut();
    let Some(container) = container.as_mut() else {
        return Reply::error("container is not running");
    };
    let result = if pause {
        container.pause()
    } else {
        container.resume()
    };
    match result {
        Ok(()) => Reply::ok(),
        Err(e) => Reply::error(e.to_string()),
    }
}

/// Creates an exec process with libcontainer's tenant builder: it joins the
/// init's namespaces and cgroup and, with the vendored patch
/// (vendor/libcontainer/VMCTL-PATCH.md), gets the container's seccomp
/// profile; the rest of its confinement is its OCI process, written by
/// [`write_exec_process`].
fn spawn_exec(monitor: &Monitor, exec_id: &str, spec: &ExecSpec) -> Result<(i32, Stdio), String> {
    let console = monitor
        .config
        .run_dir
        .join(format!("exec-{}.sock", &exec_id[..exec_id.len().min(12)]));
    let child = stdio::prepare(spec.tty, spec.stdin, &console).map_err(|e| e.to_string())?;
    let builder = ContainerBuilder::new(monitor.config.id.clone(), SyscallType::default())
        .with_root_path(&monitor.config.runtime_root)
        .map_err(|e| e.to_string())?;
    let (builder, pending) = child.apply(builder);
    let process_path = monitor
        .config
        .run_dir
        .join(format!("exec-{}.json", &exec_id[..exec_id.len().min(12)]));
    write_exec_process(&monitor.config, spec, &process_path)?;
    let pid = super::with_default_signals(|| {
        builder
            .as_tenant()
            .with_process(Some(&process_path))
            .with_detach(true)
            .build()
    })
    .map_err(|e| format!("exec failed: {e}"))?;
    let stdio = pending.finish().map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&console);
    let _ = std::fs::remove_file(&process_path);
    Ok((pid.as_raw(), stdio))
}

/// Merges `extra` (`KEY=value`) over `base`, later keys winning.
fn merge_env(base: &[String], extra: &[String]) -> Vec<String> {
    let mut merged: Vec<String> = base.to_vec();
    for entry in extra {
        let key = entry.split('=').next().unwrap_or(entry);
        merged.retain(|e| e.split('=').next().unwrap_or(e) != key);
        merged.push(entry.clone());
    }
    merged
}

/// Writes the OCI process of an exec: the container's own process (caps,
/// rlimits, no_new_privileges, OOM score, umask, supplementary groups) with
/// the exec's args, env, cwd, user and tty; `--privileged` raises the
/// capabilities only, as Docker does (the seccomp profile and
/// no_new_privileges stay the container's).
fn write_exec_process(
    config: &MonitorConfig,
    spec: &ExecSpec,
    path: &std::path::Path,
) -> Result<(), String> {
    let bundle_spec = oci_spec::runtime::Spec::load(config.bundle.join("config.json"))
        .map_err(|e| format!("cannot read the container's spec: {e}"))?;
    let mut process = bundle_spec
        .process()
        .clone()
        .ok_or_else(|| "the container's spec has no process".to_owned())?;
    let env = merge_env(process.env().as_deref().unwrap_or_default(), &spec.env);
    process.set_args(Some(spec.args.clone()));
    process.set_env(Some(env));
    process.set_terminal(Some(spec.tty));
    process.set_console_size(None);
    if !spec.cwd.is_empty() {
        process.set_cwd(spec.cwd.clone().into());
    }
    let mut user = process.user().clone();
    if let Some(uid) = spec.uid {
        user.set_uid(uid);
    }
    if let Some(gid) = spec.gid {
        user.set_gid(gid);
    }
    process.set_user(user);
    if spec.privileged {
        // Every capability the engine can hand out, as for `run --privileged`:
        // one outside the monitor's own bounding set would fail the capset.
        use crate::runtime::caps;
        let all = caps::within(caps::all(caps::kernel_last_cap()), caps::own_bounding_set());
        let set: oci_spec::runtime::Capabilities = all.into_iter().collect();
        let mut caps = process.capabilities().clone().unwrap_or_default();
        caps.set_bounding(Some(set.clone()));
        caps.set_effective(Some(set.clone()));
        caps.set_permitted(Some(set));
        process.set_capabilities(Some(caps));
    }
    let json =
        serde_json::to_vec(&process).map_err(|e| format!("cannot encode the exec process: {e}"))?;
    crate::state::files::write_atomic(path, &json)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

async fn exec(
    monitor: &Rc<Monitor>,
    exec_id: String,
    spec: ExecSpec,
    reader: BufReader<OwnedReadHalf>,
    mut writer: OwnedWriteHalf,
) -> std::io::Result<()> {
    if monitor.exit.borrow().is_some() || monitor.init_pid.get() == 0 {
        return reply(&mut writer, &Reply::error("container is not running")).await;
    }
    let (pid, stdio) = match spawn_exec(monitor, &exec_id, &spec) {
        Ok(spawned) => spawned,
        Err(e) => {
            // Docker's words for a command that is missing or not executable,
            // checked only once the exec failed: a volume can hold it.
            let binds = super::spec_binds(&monitor.config.bundle);
            let e = rootfs::check_executable(&monitor.config.rootfs, &binds, &spec.args, &spec.env)
                .err()
                .map_or(e, |docker| docker.to_string());
            return reply(&mut writer, &Reply::error(e)).await;
        }
    };
    let (done_tx, done_rx) = oneshot::channel();
    match monitor.early_exits.borrow_mut().remove(&pid) {
        Some(code) => {
            let _ = done_tx.send(code);
        }
        None => {
            monitor
                .execs
                .borrow_mut()
                .insert(pid, ExecWaiter { done: done_tx });
        }
    }
    let (tx, rx) = mpsc::channel(ATTACH_QUEUE);
    let mut readers = Vec::new();
    let stdin_target = match stdio {
        Stdio::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            for (fd, stream) in [(stdout, 1), (stderr, 2)] {
                let io = Rc::new(AsyncFdIo::new(fd)?);
                readers.push(pump_frames(io, stream, tx.clone()));
            }
            stdin.map(AsyncFdIo::new).transpose()?.map(Rc::new)
        }
        Stdio::Tty { master } => {
            let master = Rc::new(AsyncFdIo::new(master)?);
            monitor
                .exec_ttys
                .borrow_mut()
                .insert(exec_id.clone(), master.clone());
            readers.push(pump_frames(master.clone(), 1, tx.clone()));
            Some(master)
        }
    };
    // The queue closes when the pumps end.
    drop(tx);
    let mut answer = Reply::ok();
    answer.pid = pid;
    reply(&mut writer, &answer).await?;
    let forwarder = spawn_local(async move {
        let result = forward_frames(rx, &mut writer).await;
        (writer, result)
    });
    if let Some(target) = stdin_target.filter(|_| spec.stdin) {
        let keys = spec.detach_keys.clone();
        let client = forwarder.abort_handle();
        spawn_local(async move {
            // A client that detaches loses its stream (the connection
            // closes); the process runs on, its output read and dropped.
            if let Ok(Fed::Detached) = feed_stdin(reader, target, &keys).await {
                client.abort();
            }
        });
    }
    let code = done_rx.await.unwrap_or(-1);
    for mut reader in readers {
        // Output still buffered in a pipe after the exit gets two seconds (a
        // background child can hold the pipe open for ever).
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
        reader.abort();
    }
    monitor.exec_ttys.borrow_mut().remove(&exec_id);
    let Ok((mut writer, result)) = forwarder.await else {
        return Ok(());
    };
    result?;
    let exit = ExitInfo {
        exit_code: code,
        oom_killed: false,
        finished_at: crate::state::time::now_rfc3339(),
        error: String::new(),
    };
    let payload = serde_json::to_vec(&exit).map_err(std::io::Error::other)?;
    writer
        .write_all(&super::protocol::frame(FRAME_EXIT, &payload))
        .await?;
    writer.shutdown().await
}

#[cfg(test)]
mod escape_tests {
    use super::Escape;

    #[test]
    fn detach_keys_are_matched_across_reads_and_held_bytes_come_back() {
        let keys = [0x10, 0x11];
        let mut escape = Escape::new(&keys);
        assert_eq!(escape.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // The sequence breaks off: the held byte is written after all.
        assert_eq!(escape.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(escape.feed(b"\x10\x10"), (b"\x10".to_vec(), false));
        assert_eq!(escape.feed(b"\x11rest"), (Vec::new(), true));
        let mut one = Escape::new(&[0x10]);
        assert_eq!(one.feed(b"x\x10y"), (b"x".to_vec(), true));
        let mut none = Escape::new(&[]);
        assert_eq!(none.feed(b"\x10\x11"), (b"\x10\x11".to_vec(), false));
    }
}
