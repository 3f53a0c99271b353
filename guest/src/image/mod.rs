//! Images: a content-addressed store, safe layer unpacking, load and save of
//! image tarballs.
//!
//! - [`store`]: the store under `<root>/image` (blobs, unpacked layers, image
//!   records, tags) and its verbs: resolve, list, inspect, history, tag, remove.
//! - [`load`] / [`save`]: `docker load` / `docker save` on top of the store.
//! - [`archive`]: reading docker-archive and OCI layout tarballs.
//! - [`unpack`]: turning one layer tar into a directory, safely.
//! - [`reference`]: Docker's reference normalisation (`busybox` →
//!   `docker.io/library/busybox:latest`).
//! - [`digest`]: sha256 of streams.
//!
//! - [`pull`] / [`push`] / [`registry`]: `docker pull` and `docker push`
//!   (mirrors, insecure registries, credentials).

pub mod archive;
pub mod changes;
pub mod commit;
pub mod digest;
pub mod distribution;
pub mod error;
pub mod load;
pub mod prune;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod save;
pub mod store;
pub mod unpack;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::EmptyObject;
use vmctl_oci::image::{History, RootFs};

pub use error::ImageError;
pub use store::ImageStore;

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
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stop_signal: String,
    /// Fields the engine does not act on (`Healthcheck`, `Shell`, `OnBuild`…),
    /// kept for `inspect`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// An image config blob (the OCI image config, with Docker's extra fields).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct ConfigFile {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub created: Option<String>,
    pub author: String,
    pub comment: String,
    pub docker_version: String,
    pub container: String,
    pub container_config: Option<Value>,
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
    pub history: Vec<History>,
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

/// What `list` and `inspect` know about an image.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub id: String,
    /// Familiar names (`hello:latest`).
    pub repo_tags: Vec<String>,
    /// `name@sha256:…` of manifests the image was loaded with.
    pub repo_digests: Vec<String>,
    pub config: ConfigFile,
    /// Unpacked size of all layers, in bytes.
    pub size: u64,
    /// Unpacked size of each layer, lowest first.
    pub layer_sizes: Vec<u64>,
    /// Unpacked layer directories, lowest first.
    pub layer_dirs: Vec<PathBuf>,
    /// When the image was loaded (RFC 3339).
    pub loaded: String,
    pub last_tag_time: Option<String>,
    /// The image it was committed or built on.
    pub parent: Option<String>,
    /// How many images were committed or built on it: an untagged image
    /// with children is a build's intermediate image, not a dangling one.
    pub children: usize,
}

/// One line of `docker history`, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The image id for the top entry, `<missing>` below it.
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub created_by: String,
    pub tags: Vec<String>,
    pub size: u64,
    pub comment: String,
}

/// One step of `remove`, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removed {
    Untagged(String),
    Deleted(String),
}

/// An image `load` added or updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    pub id: String,
    /// Familiar names the archive gave it.
    pub tags: Vec<String>,
}
