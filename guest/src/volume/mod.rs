//! Volumes: the store of named (and anonymous) `local` volumes, the
//! resolution of a container's `Binds`, `Mounts`, `VolumesFrom` and image
//! volumes into mount points, and the seeding of a new volume from the image.
//!
//! - [`store`] owns `<root>/volumes`: one directory per volume holding the
//!   data directory `_data` (what containers mount) and `volume.json`.
//! - [`resolve`] turns a container's `HostConfig` into [`MountPoint`]s,
//!   creating the volumes it names and removing them again on any error.
//! - [`seed`] copies what the image has at a mount path into an empty volume.
//!
//! This module does not mount anything: the runtime bind-mounts each mount
//! point's `Source` at container start. It does not track which container
//! uses which volume either: callers pass the in-use set from the container
//! registry.
//!
//! Error messages follow Docker's, so clients and scripts matching on them
//! keep working.
//!
//! [`MountPoint`]: crate::model::MountPoint

pub mod policy;
pub mod resolve;
pub mod seed;
pub mod store;

pub use resolve::{parse_volumes_from, resolve, Resolved, Seed};
pub use store::{Filters, PruneReport, Volume, VolumeStore};

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::state::events::EventBus;
use crate::state::ErrorKind;

/// The only volume driver there is.
pub const LOCAL_DRIVER: &str = "local";

/// The label Docker puts on anonymous volumes (value `""`).
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// Errors of the volume store, mount resolution and seeding.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error(
        "create {name}: error looking up volume plugin {driver}: plugin \"{driver}\" not found"
    )]
    UnknownDriver { name: String, driver: String },
    #[error("create {name}: invalid option key: \"{key}\"")]
    InvalidOption { name: String, key: String },
    #[error("remove {name}: volume is in use - [{}]", containers.join(", "))]
    InUse {
        name: String,
        containers: Vec<String>,
    },
    /// A `-v` spec that does not parse; the reason, if any, is the source.
    #[error("invalid volume specification: '{spec}'")]
    InvalidSpec {
        spec: String,
        #[source]
        source: Option<Box<VolumeError>>,
    },
    /// A mount (from `--mount` or a parsed `-v`) that does not validate.
    #[error("invalid mount config for type \"{kind}\"")]
    MountConfig {
        kind: String,
        #[source]
        source: Box<VolumeError>,
    },
    #[error("field {0} must not be empty")]
    MissingField(&'static str),
    #[error("field {0} must not be specified")]
    ExtraField(&'static str),
    #[error("invalid mount path: '{0}' mount path must be absolute")]
    NotAbsolute(String),
    #[error("invalid specification: destination can't be '/'")]
    TargetIsRoot,
    #[error("bind source path does not exist: {}", .0.display())]
    BindSourceMissing(PathBuf),
    #[error("must not set ReadOnly mode when using anonymous volumes")]
    AnonymousReadOnly,
    #[error("mount type unknown")]
    UnknownMountType,
    #[error("invalid propagation mode: {0}")]
    InvalidPropagation(String),
    #[error("invalid {field}")]
    InvalidOptions {
        field: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid mode: {0}")]
    InvalidMode(String),
    #[error("Duplicate mount point: {0}")]
    DuplicateMountPoint(String),
    #[error("volumes-from specification cannot be an empty string")]
    EmptyVolumesFrom,
    #[error("error while creating mount source path '{}'", path.display())]
    CreateBindSource {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot {step} {}", path.display())]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot decode volume record {}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode the record of volume {name}")]
    Encode {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot copy {}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("invalid mount config: bind source path {} is not shared with the VM (shares: {shares}; change them with `vmctl machine set --mount`; VM paths that may be bound: {})", path.display(), policy::VM_PATHS.join(", "))]
    NotShared { path: PathBuf, shares: String },
}

impl VolumeError {
    /// The kind of the error, for the API's status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchVolume(_) => ErrorKind::NotFound,
            Self::InUse { .. } => ErrorKind::Conflict,
            Self::InvalidName(_)
            | Self::UnknownDriver { .. }
            | Self::InvalidOption { .. }
            | Self::InvalidSpec { .. }
            | Self::MountConfig { .. }
            | Self::MissingField(_)
            | Self::ExtraField(_)
            | Self::NotAbsolute(_)
            | Self::TargetIsRoot
            | Self::BindSourceMissing(_)
            | Self::NotShared { .. }
            | Self::AnonymousReadOnly
            | Self::UnknownMountType
            | Self::InvalidPropagation(_)
            | Self::InvalidOptions { .. }
            | Self::InvalidMode(_)
            | Self::DuplicateMountPoint(_)
            | Self::EmptyVolumesFrom
            | Self::CreateBindSource { .. } => ErrorKind::InvalidParameter,
            Self::Io { .. }
            | Self::Decode { .. }
            | Self::Encode { .. }
            | Self::NotADirectory(_) => ErrorKind::Internal,
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

/// Publishes a volume event (`create`, `destroy`, `mount`, `unmount`, …)
/// with Docker's attributes plus `extra` (for `mount`: `container`,
/// `destination`, `read/write`, `propagation`).
pub fn publish(events: &EventBus, action: &str, name: &str, extra: &[(&str, String)]) {
    let mut attributes = BTreeMap::from([("driver".to_owned(), LOCAL_DRIVER.to_owned())]);
    for (key, value) in extra {
        attributes.insert((*key).to_owned(), value.clone());
    }
    events.publish("volume", action, name, attributes);
}
