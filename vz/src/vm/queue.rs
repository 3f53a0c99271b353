//! The VM's serial dispatch queue, and the one way Virtualization.framework
//! objects cross threads here.
//!
//! A `VZVirtualMachine` created with a queue must be driven from that queue
//! alone: every property read, method call and delegate callback. The
//! framework's objects are not `Send`; [`OnQueue`] wraps one so it can be
//! carried to the queue, and is opened only by code running there (the
//! closures given to [`VmQueue::sync`] and [`VmQueue::later`], and the
//! framework's callbacks, which it runs on the queue itself).

use dispatch2::{DispatchQueue, DispatchRetained};

/// The VM's serial queue.
pub struct VmQueue(DispatchRetained<DispatchQueue>);

impl VmQueue {
    pub fn new(label: &str) -> Self {
        Self(DispatchQueue::new(label, None))
    }

    pub fn dispatch(&self) -> &DispatchQueue {
        &self.0
    }

    /// Runs `work` on the queue and waits for its result. Never call it
    /// from the queue itself (a serial queue waiting on itself deadlocks):
    /// only the runtime's threads and `run` do.
    pub fn sync<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        let mut out = None;
        let slot = &mut out;
        self.0.exec_sync(move || *slot = Some(work()));
        out.expect("dispatch_sync runs the work before it returns")
    }

    /// Runs `work` on the queue later.
    pub fn later(&self, work: impl FnOnce() + Send + 'static) {
        self.0.exec_async(work);
    }
}

/// A framework object that lives on the VM's queue.
pub struct OnQueue<T>(T);

// SAFETY: the wrapped value is only reached through `OnQueue::get`, whose
// contract is that the caller runs on the VM's serial queue; the queue
// runs one block at a time, so the value is never used from two threads at
// once, and moving the wrapper between threads without touching the value
// is sound (Objective-C reference counting itself is thread-safe).
unsafe impl<T> Send for OnQueue<T> {}
// SAFETY: as above: shared references reach the value only on the queue.
unsafe impl<T> Sync for OnQueue<T> {}

impl<T> OnQueue<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The value.
    ///
    /// # Safety
    /// Call only on the VM's queue.
    pub unsafe fn get(&self) -> &T {
        &self.0
    }
}
