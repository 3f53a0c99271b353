//! The VM itself, on Apple's Virtualization.framework (macOS only).
//!
//! [`run`] builds the `VZVirtualMachineConfiguration` ([`configure`]),
//! creates the `VZVirtualMachine` on a serial dispatch queue of its own
//! ([`queue`]), installs one socket listener for the host ports the guest
//! may reach ([`listener`]), starts the VM, and serves the VMM socket
//! (`vmm.rs`) with [`VzVm`] as the device until the VM stops. Every call
//! into the framework runs on that queue; the tokio runtime's threads wait
//! on it with [`queue::VmQueue::sync`] and hear back through channels.
//!
//! Connections to guest ports use `connectToPort:completionHandler:`; each
//! becomes a stream that keeps its connection object alive
//! ([`connection`]).

mod configure;
mod connection;
mod listener;
mod queue;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use block2::RcBlock;
use objc2::rc::Retained;
use objc2::runtime::ProtocolObject;
use objc2::AnyThread;
use objc2_foundation::NSError;
use objc2_virtualization::{
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketListener, VZVirtualMachine,
    VZVirtualMachineState,
};
use tokio::sync::{mpsc, oneshot};
use vmctl_proto::auth::SECRET_PORT;

use self::connection::{Accepted, VzStream};
use self::listener::ListenerDelegate;
use self::queue::{OnQueue, VmQueue};
use crate::config::VzConfig;
use crate::protocol::{ConnectFuture, GuestConn, GuestPorts, VmControl, VmState};
use crate::secret::OneShot;
use crate::vmm::{self, Incoming};
use crate::VmmError;

/// How long `connectToPort` may take before the client is told no.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// How long the VM may take to start.
const START_LIMIT: Duration = Duration::from_secs(30);

/// What the framework said, from its `NSError`.
#[derive(Debug, thiserror::Error)]
#[error("{description} ({domain} {code})")]
pub struct FrameworkError {
    domain: String,
    code: i64,
    description: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("this Mac cannot run virtual machines")]
    NotSupported,
    #[error("cannot use {what} {path}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: FrameworkError,
    },
    #[error("{0} is not a MAC address")]
    Mac(String),
    #[error("Virtualization.framework refused the VM's configuration")]
    Invalid(#[source] FrameworkError),
    #[error("the VM has no virtio socket device")]
    NoSocketDevice,
    #[error("the VM did not start")]
    Start(#[source] FrameworkError),
    #[error("the VM did not start within {} s", START_LIMIT.as_secs())]
    StartTimeout,
}

/// The running VM, as the VMM socket's device.
pub struct VzVm {
    queue: Arc<VmQueue>,
    vm: OnQueue<Retained<VZVirtualMachine>>,
    sockets: OnQueue<Retained<VZVirtioSocketDevice>>,
    // Kept alive for the VM's life: the listener's delegate is a weak reference.
    _listener: OnQueue<Retained<VZVirtioSocketListener>>,
    _delegate: OnQueue<Retained<ListenerDelegate>>,
}

/// `VZVirtualMachine.isSupported`: whether this Mac can run VMs at all.
pub fn is_supported() -> bool {
    // SAFETY: a class property without arguments; it reads the host's
    // capabilities and touches no VM (no queue needed).
    unsafe { VZVirtualMachine::isSupported() }
}

/// The VMM process's main on macOS: see [`crate::run_vmm`].
pub fn run(config: VzConfig) -> Result<(), VmmError> {
    let queue = Arc::new(VmQueue::new(&format!("vmctl.vz.{}", config.name)));
    config.check_limits(&queue.sync(configure::host_limits))?;
    let secret = Arc::new(OneShot::new(crate::secret::load(&config.secret)?));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(VmmError::Runtime)?;
    let (sender, incoming) = mpsc::unbounded_channel();
    let vm = Arc::new(VzVm::create(&config, queue, sender)?);
    runtime.block_on(async {
        // Up before the VM starts: the daemon asks STATE while it boots.
        let listener = vmm::bind(&config.socket)?;
        vm.start().await?;
        tracing::info!(vm = %config.name, cpus = config.cpus, memory = config.memory_bytes, "VM started");
        let last =
            vmm::serve_until_stopped(
                listener,
                config.socket.clone(),
                vm.clone(),
                incoming,
                secret,
                vmm::termination(),
                vmm::STOP_GRACE,
            )
            .await;
        tracing::info!(vm = %config.name, state = %last.to_line(), "VM ended");
        match last {
            VmState::Error(why) => Err(VmmError::Failed(why)),
            _ => Ok(()),
        }
    })
}

impl VzVm {
    /// Builds the VM on `queue`, with a listener for each host port.
    fn create(
        config: &VzConfig,
        queue: Arc<VmQueue>,
        incoming: mpsc::UnboundedSender<Incoming>,
    ) -> Result<Self, VmError> {
        let mut ports = config.host_ports.clone();
        ports.push(SECRET_PORT);
        let delegate = ListenerDelegate::new(incoming, queue.clone());
        let delegate = OnQueue::new(delegate);
        let on = queue.clone();
        queue.sync(move || {
            // SAFETY: on the VM's queue: every framework call below runs
            // there, on objects created or retained here.
            unsafe {
                if !VZVirtualMachine::isSupported() {
                    return Err(VmError::NotSupported);
                }
                let vz = configure::configuration(config)?;
                let vm = VZVirtualMachine::initWithConfiguration_queue(
                    VZVirtualMachine::alloc(),
                    &vz,
                    on.dispatch(),
                );
                let sockets = vm
                    .socketDevices()
                    .firstObject()
                    .and_then(|device| device.downcast::<VZVirtioSocketDevice>().ok())
                    .ok_or(VmError::NoSocketDevice)?;
                let listener = VZVirtioSocketListener::new();
                listener.setDelegate(Some(ProtocolObject::from_ref(&**delegate.get())));
                for port in ports {
                    sockets.setSocketListener_forPort(&listener, port);
                }
                Ok(Self {
                    queue: on.clone(),
                    vm: OnQueue::new(vm),
                    sockets: OnQueue::new(sockets),
                    _listener: OnQueue::new(listener),
                    _delegate: delegate,
                })
            }
        })
    }

    async fn start(&self) -> Result<(), VmError> {
        let (sender, started) = oneshot::channel();
        let sender = Mutex::new(Some(sender));
        self.queue.sync(|| {
            let done = RcBlock::new(move |error: *mut NSError| {
                // SAFETY: the framework passes nil or a valid NSError for this call.
                let result = match unsafe { error.as_ref() } {
                    None => Ok(()),
                    Some(error) => Err(VmError::Start(FrameworkError::from(error))),
                };
                if let Some(sender) = sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    let _ = sender.send(result);
                }
            });
            // SAFETY: on the VM's queue; the block is copied by the framework.
            unsafe { self.vm.get().startWithCompletionHandler(&done) };
        });
        match tokio::time::timeout(START_LIMIT, started).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) | Err(_) => Err(VmError::StartTimeout),
        }
    }
}

impl GuestPorts for VzVm {
    fn connect(&self, port: u32) -> ConnectFuture<'_> {
        let (sender, connected) = oneshot::channel::<std::io::Result<Accepted>>();
        let sender = Mutex::new(Some(sender));
        let queue = self.queue.clone();
        self.queue.sync(|| {
            let done = RcBlock::new(
                move |connection: *mut VZVirtioSocketConnection, error: *mut NSError| {
                    // SAFETY: the framework calls this on the VM's queue with
                    // nil or valid objects, one of the two set.
                    let result = unsafe {
                        match (connection.as_ref(), error.as_ref()) {
                            (Some(connection), _) => Accepted::take(connection, queue.clone()),
                            (None, Some(error)) => Err(std::io::Error::new(
                                std::io::ErrorKind::ConnectionRefused,
                                FrameworkError::from(error),
                            )),
                            (None, None) => Err(std::io::ErrorKind::ConnectionRefused.into()),
                        }
                    };
                    if let Some(sender) = sender.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = sender.send(result);
                    }
                },
            );
            // SAFETY: on the VM's queue; the block is copied by the framework.
            unsafe {
                self.sockets
                    .get()
                    .connectToPort_completionHandler(port, &done)
            };
        });
        Box::pin(async move {
            let accepted = match tokio::time::timeout(CONNECT_LIMIT, connected).await {
                Ok(Ok(result)) => result?,
                Ok(Err(_)) => return Err(std::io::ErrorKind::ConnectionAborted.into()),
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            };
            Ok(Box::new(VzStream::open(accepted)?) as GuestConn)
        })
    }
}

impl VmControl for VzVm {
    fn state(&self) -> VmState {
        // SAFETY: on the VM's queue.
        let state = self.queue.sync(|| unsafe { self.vm.get().state() });
        match state {
            VZVirtualMachineState::Running => VmState::Running,
            VZVirtualMachineState::Starting => VmState::Starting,
            VZVirtualMachineState::Stopped => VmState::Stopped,
            VZVirtualMachineState::Error => VmState::Error("the framework stopped the VM".into()),
            VZVirtualMachineState::Paused => VmState::Paused("paused".into()),
            VZVirtualMachineState::Pausing => VmState::Paused("pausing".into()),
            VZVirtualMachineState::Resuming => VmState::Paused("resuming".into()),
            VZVirtualMachineState::Stopping => VmState::Paused("stopping".into()),
            VZVirtualMachineState::Saving => VmState::Paused("saving".into()),
            VZVirtualMachineState::Restoring => VmState::Paused("restoring".into()),
            other => VmState::Paused(format!("state {}", other.0)),
        }
    }

    fn request_stop(&self) -> std::io::Result<()> {
        self.queue.sync(|| {
            // SAFETY: on the VM's queue.
            unsafe { self.vm.get().requestStopWithError() }
                .map_err(|e| std::io::Error::other(FrameworkError::from(&*e)))
        })
    }

    fn quit(&self) -> std::io::Result<()> {
        self.queue.sync(|| {
            // SAFETY: on the VM's queue.
            let vm = unsafe { self.vm.get() };
            // SAFETY: on the VM's queue.
            if !unsafe { vm.canStop() } {
                return Err(std::io::Error::other(
                    "the VM cannot be stopped in its state",
                ));
            }
            let done = RcBlock::new(|error: *mut NSError| {
                // SAFETY: nil or a valid NSError, on the VM's queue.
                if let Some(error) = unsafe { error.as_ref() } {
                    tracing::warn!(error = %FrameworkError::from(error), "stopping the VM failed");
                }
            });
            // SAFETY: on the VM's queue; the block is copied by the framework.
            unsafe { vm.stopWithCompletionHandler(&done) };
            Ok(())
        })
    }
}
