//! Images: a content-addressed store, safe layer unpacking, load and save of
//! image tarballs. (Being filled in; the engine depends on the interface below.)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::engine::ErrorKind;
use crate::model::EmptyObject;
use std::collections::BTreeMap;

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("No such image: {0}")]
    NoSuchImage(String),
}

impl ImageError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoSuchImage(_) => ErrorKind::NotFound,
        }
    }
}

/// The runtime part of an image's config (OCI `config` / Docker `ContainerConfig`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub user: String,
    pub exposed_ports: Option<BTreeMap<String, EmptyObject>>,
    pub env: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub volumes: Option<BTreeMap<String, EmptyObject>>,
    pub working_dir: String,
    pub labels: Option<BTreeMap<String, String>>,
    pub stop_signal: String,
}

/// An image ready to run: its id, config and unpacked layers.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// `sha256:<hex>` of the image config.
    pub id: String,
    pub config: ImageConfig,
    /// Unpacked layer directories, lowest first.
    pub layers: Vec<PathBuf>,
}

/// The image store under `<root>/image`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many images the store holds.
    pub fn count(&self) -> usize {
        0
    }

    /// Finds an image by name, `name:tag`, full or short id.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        Err(ImageError::NoSuchImage(reference.to_owned()))
    }
}
