//! The engine's error type: one variant per failed step, each classified into
//! the kind the API turns into a status code.

use std::path::PathBuf;

pub use crate::state::ErrorKind;

/// Errors of engine verbs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    #[error("No such exec instance: {0}")]
    NoSuchExec(String),
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse { name: String, id: String },
    #[error("{0}")]
    InvalidParameter(String),
    #[error("network {0} not found")]
    NotFoundNetwork(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("Container {0} is not running")]
    NotRunning(String),
    #[error("container already {0}")]
    NotModified(&'static str),
    #[error("cannot {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

impl EngineError {
    /// The kind of the error, for the API's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Image(e) => e.kind(),
            Self::Volume(e) => e.kind(),
            Self::Network(e) => e.kind(),
            Self::NoSuchContainer(_) | Self::NoSuchExec(_) | Self::NotFoundNetwork(_) => {
                ErrorKind::NotFound
            }
            Self::NameInUse { .. } | Self::Conflict(_) | Self::NotRunning(_) => ErrorKind::Conflict,
            Self::InvalidParameter(_) => ErrorKind::InvalidParameter,
            Self::Forbidden(_) => ErrorKind::Forbidden,
            Self::NotModified(_) => ErrorKind::NotModified,
            Self::Io { .. } | Self::Runtime(_) => ErrorKind::Internal,
        }
    }

    /// An io error at `step` on `path`.
    pub fn io(step: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            step,
            path: path.into(),
            source,
        }
    }
}
