//! Errors of the image store, each classified into the kind the API turns
//! into a status code.

use std::path::PathBuf;

use crate::state::ErrorKind;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NoSuchImage(String),
    #[error("invalid reference format")]
    InvalidReference(String),
    #[error("multiple images found with provided prefix: {0}")]
    AmbiguousId(String),
    #[error("cannot read the image archive")]
    ReadArchive(#[source] std::io::Error),
    #[error("invalid image archive: {0}")]
    BadArchive(String),
    #[error("invalid image archive: cannot parse {file}")]
    BadJson {
        file: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid image archive: blob {path} has digest {actual}, expected {expected}")]
    BlobDigest {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("invalid image archive: image {image} has {layers} layers but {diff_ids} diff_ids")]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error(
        "invalid image archive: layer {path} has diff-id {actual}, the config says {expected}"
    )]
    DiffId {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read layer data at entry {entry}")]
    ReadLayer {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refused layer entry {entry}: {reason}")]
    UnsafeEntry { entry: String, reason: &'static str },
    #[error("conflict: unable to remove repository reference \"{reference}\" (must force) - container {container} is using its referenced image {image}")]
    RepositoryInUse {
        reference: String,
        container: String,
        image: String,
    },
    #[error("conflict: unable to delete {image} (must be forced) - image is being used by stopped container {container}")]
    ImageInUse { image: String, container: String },
    #[error("conflict: unable to delete {image} (must be forced) - image is referenced in multiple repositories")]
    MultipleRepositories { image: String },
    #[error("cannot {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the image archive")]
    Save(#[source] vmctl_oci::archive::ArchiveError),
    /// A registry refused or failed a request; `message` is Docker's wording.
    #[error("{message}")]
    Registry { kind: ErrorKind, message: String },
    /// A pulled image or layer that cannot be used, named in `message`.
    #[error("{0}")]
    Unsupported(String),
}

impl ImageError {
    /// The kind of the error, for the API's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchImage(_) => ErrorKind::NotFound,
            Self::InvalidReference(_)
            | Self::AmbiguousId(_)
            | Self::ReadArchive(_)
            | Self::BadArchive(_)
            | Self::BadJson { .. }
            | Self::BlobDigest { .. }
            | Self::LayerCount { .. }
            | Self::DiffId { .. }
            | Self::ReadLayer { .. }
            | Self::UnsafeEntry { .. } => ErrorKind::InvalidParameter,
            Self::RepositoryInUse { .. }
            | Self::ImageInUse { .. }
            | Self::MultipleRepositories { .. } => ErrorKind::Conflict,
            Self::Io { .. } | Self::Encode { .. } | Self::Save(_) => ErrorKind::Internal,
            Self::Registry { kind, .. } => *kind,
            Self::Unsupported(_) => ErrorKind::InvalidParameter,
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

    /// A refused layer entry.
    pub fn unsafe_entry(entry: impl Into<String>, reason: &'static str) -> Self {
        Self::UnsafeEntry {
            entry: entry.into(),
            reason,
        }
    }
}
