//! `docker build`: the classic builder (`POST /build`).
//!
//! The client's context tar is unpacked into a scratch directory
//! ([`context`]), the Dockerfile parsed ([`dockerfile`]), and every stage up
//! to the target built step by step ([`builder`]), the way dockerd's classic
//! builder does:
//!
//! - `RUN` is a real container of the engine ([`run`]): the same runtime,
//!   limits, network and confinement as `docker run`; its change becomes a
//!   layer through the checked path `docker commit` uses.
//! - `COPY`/`ADD`/`WORKDIR` write into an overlay of the parent's layers
//!   ([`copy`]), every path resolved inside its root; the upper directory
//!   becomes the layer.
//! - Metadata steps (`ENV`, `CMD`, `LABEL`…) make an image with a new config
//!   and no layer.
//!
//! Each step's image records its parent and the step's cache key (the
//! instruction after substitution, the build args it used, and for
//! COPY/ADD the content of its sources): a later step with the same parent
//! and key reuses it (`---> Using cache`), across engine restarts and
//! whatever tags the images have. A failing step tags nothing and leaves
//! the images of the steps before it as cache.

pub mod builder;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod dockerignore;
pub mod index;
pub mod run;

use std::collections::BTreeMap;

use crate::image::pull::Progress;
use crate::image::reference::Named;
use oci_client::secrets::RegistryAuth;

/// What `POST /build` asks for, checked.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path in the context (`Dockerfile`).
    pub dockerfile: String,
    pub tags: Vec<Named>,
    /// `--build-arg k=v` (`None`: `--build-arg k` with `k` unset).
    pub build_args: BTreeMap<String, Option<String>>,
    pub target: String,
    pub no_cache: bool,
    pub pull: bool,
    /// Remove a successful step's container (`rm`, default true).
    pub remove: bool,
    /// Remove a step's container even when it failed (`forcerm`).
    pub force_remove: bool,
    pub labels: BTreeMap<String, String>,
    pub network_mode: String,
    pub extra_hosts: Vec<String>,
    pub shm_size: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub memory: i64,
    pub memory_swap: i64,
    /// `q`: only the image id is printed.
    pub quiet: bool,
    /// `cachefrom`: images whose build steps may be reused.
    pub cache_from: Vec<String>,
    /// Registry credentials for `FROM` pulls (`X-Registry-Config`), by
    /// registry host as the client keys them.
    pub auth: BTreeMap<String, RegistryAuth>,
}

/// What a build says as it goes, rendered by the API as Docker's JSON lines.
#[derive(Debug)]
pub enum Message {
    /// `{"stream": …}`: step headers, step output, results.
    Stream(String),
    /// A pull's progress line (`FROM` an image not here yet).
    Pull(Progress),
    /// `{"aux": {"ID": …}}`: the built image.
    Aux(String),
}

/// Why a build failed: Docker's message, and the exit code of a failing
/// `RUN` (`errorDetail.code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub message: String,
    pub code: Option<i64>,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            code: None,
        }
    }
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BuildError {}
