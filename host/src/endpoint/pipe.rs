//! Windows named-pipe endpoints (`\\.\pipe\NAME`, tokio's named pipes).
//!
//! A pipe server is one instance per client: the listener keeps the next
//! instance ready, and hands a connected one out on each accept. Access:
//! - the first instance is created with `FILE_FLAG_FIRST_PIPE_INSTANCE`, so
//!   a pipe someone else made first under our name is never joined;
//! - remote clients (SMB) are rejected (`PIPE_REJECT_REMOTE_CLIENTS`);
//! - the security descriptor `D:P(A;;GA;;;OW)(A;;GA;;;SY)` grants access to
//!   the pipe's owner (this desktop user; an elevated user's owner is the
//!   Administrators group) and to SYSTEM only, with no inherited entries:
//!   the default descriptor would let Everyone connect for reading.
//!
//! Clients retry while every instance is busy (`ERROR_PIPE_BUSY`), as the
//! listener re-creates its next instance.

use std::time::Duration;

use tokio::net::windows::named_pipe::{
    ClientOptions, NamedPipeClient, NamedPipeServer, ServerOptions,
};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_PIPE_BUSY};
use windows_sys::Win32::Security::Authorization::{
    ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES};

use super::{AcceptFuture, LocalListener, LocalStream};

/// Owner and SYSTEM: full access; nobody else; no inherited entries.
const OWNER_ONLY_SDDL: &str = "D:P(A;;GA;;;OW)(A;;GA;;;SY)";

/// How long a client waits for a free instance in all.
const BUSY_WAIT: Duration = Duration::from_secs(5);

/// Connections to one named pipe.
pub struct PipeListener {
    path: String,
    next: NamedPipeServer,
}

impl PipeListener {
    /// Creates the pipe `\\.\pipe\NAME`; fails if it exists already.
    pub fn bind(name: &str) -> std::io::Result<Self> {
        let path = super::pipe_path(name);
        let next = create(&path, true)?;
        Ok(Self { path, next })
    }
}

impl LocalListener for PipeListener {
    fn accept(&mut self) -> AcceptFuture<'_> {
        Box::pin(async move {
            if let Err(e) = self.next.connect().await {
                // A client gone before it was served breaks the instance:
                // the next accept waits on a fresh one.
                self.next = create(&self.path, false)?;
                return Err(e);
            }
            let fresh = create(&self.path, false)?;
            let connected = std::mem::replace(&mut self.next, fresh);
            Ok(Box::new(connected) as LocalStream)
        })
    }
}

/// One server instance of the pipe at `path`, owner-only.
fn create(path: &str, first: bool) -> std::io::Result<NamedPipeServer> {
    let descriptor = OwnerOnly::new()?;
    let mut attributes = SECURITY_ATTRIBUTES {
        nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
        lpSecurityDescriptor: descriptor.0,
        bInheritHandle: 0,
    };
    let mut options = ServerOptions::new();
    options
        .first_pipe_instance(first)
        .reject_remote_clients(true)
        .access_inbound(true)
        .access_outbound(true);
    // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES whose descriptor
    // (`descriptor`) outlives the call; CreateNamedPipeW copies what it needs.
    unsafe {
        options.create_with_security_attributes_raw(
            path,
            (&mut attributes as *mut SECURITY_ATTRIBUTES).cast(),
        )
    }
}

/// A security descriptor from [`OWNER_ONLY_SDDL`], freed on drop.
struct OwnerOnly(PSECURITY_DESCRIPTOR);

impl OwnerOnly {
    fn new() -> std::io::Result<Self> {
        let sddl: Vec<u16> = OWNER_ONLY_SDDL.encode_utf16().chain([0]).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: `sddl` is NUL-terminated UTF-16; on success the function
        // stores a LocalAlloc'd descriptor in `descriptor`, freed in Drop.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                std::ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(descriptor))
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: the descriptor came from LocalAlloc (above) and is freed once.
        unsafe { LocalFree(self.0) };
    }
}

fn busy(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(ERROR_PIPE_BUSY as i32)
}

/// Connects to `\\.\pipe\NAME`, waiting while every instance is busy.
pub async fn connect(name: &str) -> std::io::Result<NamedPipeClient> {
    let path = super::pipe_path(name);
    let deadline = tokio::time::Instant::now() + BUSY_WAIT;
    loop {
        match ClientOptions::new().open(&path) {
            Err(e) if busy(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

/// Connects to `\\.\pipe\NAME` with blocking I/O (a pipe opens as a file).
pub fn connect_blocking(name: &str) -> std::io::Result<std::fs::File> {
    let path = super::pipe_path(name);
    let deadline = std::time::Instant::now() + BUSY_WAIT;
    loop {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        {
            Err(e) if busy(&e) && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}
