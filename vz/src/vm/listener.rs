//! The guest's connections to host vsock ports: one
//! `VZVirtioSocketListener` for every port the VMM serves, whose delegate
//! ([`ListenerDelegate`]) the framework calls on the VM's queue.
//!
//! Each accepted connection leaves the queue as an [`Incoming`] for the
//! runtime (`vmm.rs`): spliced to `<socket>_<port>`, or, on the secret's
//! port, handed the secret. The secret's port takes ONE connection: the
//! delegate refuses any later one and removes the port's listener, so the
//! guest can never ask twice.

use std::cell::Cell;
use std::sync::Arc;

use objc2::rc::Retained;
use objc2::runtime::NSObject;
use objc2::{define_class, msg_send, AnyThread, DefinedClass};
use objc2_foundation::NSObjectProtocol;
use objc2_virtualization::{
    VZVirtioSocketConnection, VZVirtioSocketDevice, VZVirtioSocketListener,
    VZVirtioSocketListenerDelegate,
};
use tokio::sync::mpsc::UnboundedSender;
use vmctl_proto::auth::SECRET_PORT;

use super::connection::{Accepted, VzStream};
use super::queue::VmQueue;
use crate::protocol::GuestConn;
use crate::vmm::Incoming;

pub struct Ivars {
    incoming: UnboundedSender<Incoming>,
    queue: Arc<VmQueue>,
    /// Whether the secret's port took its one connection.
    secret_taken: Cell<bool>,
}

define_class!(
    // SAFETY:
    // - NSObject has no subclassing requirements.
    // - ListenerDelegate does not implement Drop.
    #[unsafe(super(NSObject))]
    #[name = "VmctlVsockListenerDelegate"]
    #[ivars = Ivars]
    pub struct ListenerDelegate;

    unsafe impl NSObjectProtocol for ListenerDelegate {}

    unsafe impl VZVirtioSocketListenerDelegate for ListenerDelegate {
        #[unsafe(method(listener:shouldAcceptNewConnection:fromSocketDevice:))]
        fn should_accept(
            &self,
            _listener: &VZVirtioSocketListener,
            connection: &VZVirtioSocketConnection,
            device: &VZVirtioSocketDevice,
        ) -> bool {
            self.accept(connection, device)
        }
    }
);

impl ListenerDelegate {
    pub fn new(incoming: UnboundedSender<Incoming>, queue: Arc<VmQueue>) -> Retained<Self> {
        let this = Self::alloc().set_ivars(Ivars {
            incoming,
            queue,
            secret_taken: Cell::new(false),
        });
        // SAFETY: NSObject's designated initializer on a freshly allocated object.
        unsafe { msg_send![super(this), init] }
    }

    /// Called by the framework on the VM's queue.
    fn accept(&self, connection: &VZVirtioSocketConnection, device: &VZVirtioSocketDevice) -> bool {
        let ivars = self.ivars();
        // SAFETY: the framework calls the delegate on the VM's queue with a live connection.
        let port = unsafe { connection.destinationPort() };
        if port == SECRET_PORT {
            if ivars.secret_taken.replace(true) {
                tracing::warn!(port, "refused a second connection to the secret's port");
                return false;
            }
            // SAFETY: on the VM's queue, on the device that called us.
            unsafe { device.removeSocketListenerForPort(SECRET_PORT) };
        }
        // SAFETY: on the VM's queue (see above).
        let accepted = match unsafe { Accepted::take(connection, ivars.queue.clone()) } {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(port, error = %e, "cannot take the guest's connection");
                return false;
            }
        };
        let open = Box::new(move || VzStream::open(accepted).map(|s| Box::new(s) as GuestConn));
        ivars.incoming.send(Incoming { port, open }).is_ok()
    }
}
