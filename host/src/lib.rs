//! vmctl, the host side: the CLI's verbs (one file each under [`cli`]) and,
//! as it grows, the host daemon, hypervisor backends and vsock transports.

pub mod cli;
pub mod engine_client;

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
