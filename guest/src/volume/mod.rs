//! Named volumes and bind mounts. (Being filled in.)

use std::path::{Path, PathBuf};

use crate::engine::ErrorKind;

/// Errors of the volume store.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
}

impl VolumeError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchVolume(_) => ErrorKind::NotFound,
        }
    }
}

/// The volume store under `<root>/volumes`.
#[derive(Debug)]
pub struct VolumeStore {
    root: PathBuf,
}

impl VolumeStore {
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}
