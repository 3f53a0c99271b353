//! What every store of the engine stands on (images, volumes, networks,
//! containers, builds): writing and measuring state files ([`files`]),
//! telling time as Docker does ([`time`]), and the kinds of errors the API
//! turns into status codes ([`ErrorKind`]). It depends on nothing of ours,
//! so the stores need not reach into the engine for these.

pub mod files;
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
