//! What every store of the engine stands on (images, volumes, networks,
//! containers, builds): writing and measuring state files ([`files`]),
//! telling time as Docker does ([`time`]), the event stream ([`events`]),
//! compressed input ([`compress`]), Docker's multiplexed stream
//! ([`stream`]), the kinds of errors the API turns into status codes
//! ([`ErrorKind`]) and an error's words with its causes ([`error_chain`]).
//! It depends on nothing of ours, so the stores and mechanisms need not
//! reach into the engine or the API for these.

pub mod compress;
pub mod events;
pub mod files;
pub mod stream;
pub mod time;

/// How an error is reported to an API client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidParameter,
    Conflict,
    Forbidden,
    NotModified,
    Unauthorized,
    Internal,
}

/// Renders an error with its whole chain of causes, the way Docker joins them.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
