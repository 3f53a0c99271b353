//! vmctl, the host side: the CLI's verbs (one file each under [`cli`]), the
//! host daemon that owns a machine's VM ([`daemon`]), the hypervisor
//! backends ([`hypervisor`]), the vsock transports ([`vsock`]), the local
//! endpoints the daemon serves ([`endpoint`]), the socket forwarders
//! ([`forward`]), the machines' files ([`machine`]) and the desktop
//! directories they share ([`shares`]).

pub mod binaries;
pub mod cli;
pub mod daemon;
pub mod endpoint;
pub mod engine_client;
pub mod file_events;
pub mod forward;
pub mod hypervisor;
pub mod link;
pub mod machine;
pub mod process;
pub mod shares;
pub mod vsock;

/// Renders an error with its causes, `outer: inner: …`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
