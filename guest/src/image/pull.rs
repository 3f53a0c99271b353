//! `docker pull`: fetch an image from a registry into the store.
//!
//! A pull runs in two steps. [`Puller::resolve`] fetches the manifest (picking
//! the platform's entry of an index) and the config, and checks both digests;
//! every error up to here is a plain API error (404 for an unknown tag).
//! [`Puller::run`] then fetches the layers it lacks, in parallel (three at a
//! time, like Docker), and reports progress.
//!
//! Each layer is **streamed**: the bytes that arrive go through the blob's
//! sha256, into the blob file and through the decompressor into the unpacker
//! at once, with no temporary tarball. A layer is unpacked into a `.tmp-`
//! directory and takes its real name (`layers/<diff-id>`) only after its blob
//! digest and its diff-id are both verified and the filesystem is synced; the
//! image record and the tag are written only once every layer is in place.
//! A pull killed at any point thus leaves only `.tmp-` leftovers (removed when
//! the store opens) and whole, verified layers, which the next pull reuses.
//!
//! Layers are fetched by tasks of their own, keyed by diff-id: a second pull
//! needing a layer that is on its way watches the same task instead of
//! fetching it again, and a client going away does not stop a fetch others
//! may be waiting for.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use oci_client::manifest::{
    OciDescriptor, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch, Semaphore};

use super::digest;
use super::load::{dir_size, sync_filesystem, ScratchDir};
use super::reference::Named;
use super::registry::{self, Endpoint, RegistryOptions};
use super::store::{Image, ImageMeta, LayerMeta};
use super::unpack;
use super::{ConfigFile, ImageError, ImageStore};
use crate::state::files::write_atomic;
use crate::state::ErrorKind;

/// Layers fetched at once (dockerd's `max-concurrent-downloads`).
const CONCURRENT_DOWNLOADS: usize = 3;
/// Largest manifest or config accepted.
const MAX_SMALL_BLOB: u64 = 8 << 20;
/// Layer media types a pull accepts (plain, gzip and zstd tars).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Where one layer's fetch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerState {
    /// Just asked for.
    Pending,
    /// Queued behind other downloads.
    Waiting,
    /// Bytes received of the blob's size.
    Downloading {
        current: u64,
        total: u64,
    },
    /// Verified and in the store; `size` is its unpacked size.
    Done {
        size: u64,
    },
    Failed(String),
}

/// One progress line, as Docker's JSON stream carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// A layer's short digest, or the tag for the first line.
    pub id: Option<String>,
    pub status: String,
    /// `(current, total)` bytes.
    pub detail: Option<(u64, u64)>,
    /// A layer line (`progressDetail: {}` even without numbers).
    pub layer: bool,
    /// Extra data for the client (`docker push`'s tag, digest and size).
    pub aux: Option<serde_json::Value>,
}

impl Progress {
    pub(crate) fn message(status: impl Into<String>) -> Self {
        Self {
            id: None,
            status: status.into(),
            detail: None,
            layer: false,
            aux: None,
        }
    }

    pub(crate) fn layer(id: &str, status: &str, detail: Option<(u64, u64)>) -> Self {
        Self {
            id: Some(id.to_owned()),
            status: status.to_owned(),
            detail,
            layer: true,
            aux: None,
        }
    }
}

/// A layer to pull: its blob and the diff-id the config gives it.
#[derive(Debug, Clone)]
struct PlannedLayer {
    descriptor: OciDescriptor,
    diff_id: String,
}

/// An image whose manifest and config are fetched and verified.
pub struct Plan {
    named: Named,
    endpoint: Endpoint,
    manifest_digest: String,
    id: String,
    config_bytes: Vec<u8>,
    config: ConfigFile,
    layers: Vec<PlannedLayer>,
}

impl Plan {
    /// The image id (config digest).
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The part of a manifest a pull uses.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    schema_version: u32,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Vec<OciDescriptor>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    platform: Option<PlatformSpec>,
}

#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
struct PlatformSpec {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Parses `--platform` (`os[/arch[/variant]]`); empty means the engine's own.
fn parse_platform(platform: &str) -> Result<PlatformSpec, ImageError> {
    let own = PlatformSpec {
        os: "linux".to_owned(),
        architecture: vmctl_oci::image::go_arch().to_owned(),
        variant: None,
    };
    if platform.trim().is_empty() {
        return Ok(own);
    }
    let parts: Vec<&str> = platform.trim().split('/').collect();
    let invalid = || ImageError::Registry {
        kind: ErrorKind::InvalidParameter,
        message: format!(
            "\"{platform}\": unknown operating system or architecture: invalid argument"
        ),
    };
    if parts.len() > 3 || parts.iter().any(|p| p.is_empty()) {
        return Err(invalid());
    }
    if parts[0] != "linux" {
        return Err(ImageError::Registry {
            kind: ErrorKind::InvalidParameter,
            message: format!(
                "\"{platform}\": operating system {} is not supported by this engine (linux only)",
                parts[0]
            ),
        });
    }
    let architecture = parts
        .get(1)
        .map_or(own.architecture, |a| normalise_arch(a).to_owned());
    Ok(PlatformSpec {
        os: "linux".to_owned(),
        architecture,
        variant: parts.get(2).map(|v| (*v).to_owned()),
    })
}

fn normalise_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Whether an index entry serves `wanted` (a missing variant matches any).
fn matches(entry: &PlatformSpec, wanted: &PlatformSpec) -> bool {
    entry.os == wanted.os
        && normalise_arch(&entry.architecture) == wanted.architecture
        && match (&wanted.variant, &entry.variant) {
            (None, _) => true,
            (Some(w), Some(e)) => w == e,
            (Some(w), None) => wanted.architecture == "arm64" && w == "v8",
        }
}

/// Pulls images into a store: the registry settings, the layers on their
/// way, and the download slots.
pub struct Puller {
    options: RegistryOptions,
    inflight: Mutex<HashMap<String, watch::Receiver<LayerState>>>,
    downloads: Arc<Semaphore>,
}

impl Puller {
    pub fn new(options: RegistryOptions) -> Self {
        Self {
            options,
            inflight: Mutex::new(HashMap::new()),
            downloads: Arc::new(Semaphore::new(CONCURRENT_DOWNLOADS)),
        }
    }

    pub fn options(&self) -> &RegistryOptions {
        &self.options
    }

    /// Fetches and verifies the manifest and config `named` points at, for
    /// `platform` (`os/arch[/variant]`, empty for the engine's own). Mirrors
    /// are tried first; the last endpoint's error is the one returned.
    pub async fn resolve(
        &self,
        named: &Named,
        platform: &str,
        auth: &RegistryAuth,
    ) -> Result<Plan, ImageError> {
        let wanted = parse_platform(platform)?;
        let explicit = !platform.trim().is_empty();
        let mut endpoints = self.options.endpoints(named);
        let last = endpoints
            .pop()
            .expect("the registry itself is always an endpoint");
        for endpoint in endpoints {
            let host = endpoint.host.clone();
            match resolve_at(named, endpoint, &wanted, explicit, auth).await {
                Ok(plan) => return Ok(plan),
                Err(e) => {
                    tracing::warn!(mirror = %host, error = %e, "mirror failed; trying the next")
                }
            }
        }
        resolve_at(named, last, &wanted, explicit, auth).await
    }

    /// Every tag of `named`'s repository (`docker pull --all-tags`), sorted.
    pub async fn tags(&self, named: &Named, auth: &RegistryAuth) -> Result<Vec<Named>, ImageError> {
        let endpoint = self
            .options
            .endpoints(named)
            .pop()
            .expect("the registry itself is always an endpoint");
        let repo = super::reference::familiar(&named.name);
        let mut tags = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = endpoint
                .client
                .list_tags(&endpoint.reference, auth, Some(1000), last.as_deref())
                .await
                .map_err(|e| registry::translate(e, &repo, &repo, true))?;
            let done = page.tags.len() < 1000;
            last = page.tags.last().cloned();
            tags.extend(page.tags);
            if done || last.is_none() {
                break;
            }
        }
        tags.sort();
        tags.dedup();
        if tags.is_empty() {
            return Err(ImageError::Registry {
                kind: ErrorKind::NotFound,
                message: format!("repository {repo} has no tags"),
            });
        }
        tags.iter()
            .map(|tag| Named::parse(&format!("{}:{tag}", named.name)))
            .collect()
    }

    /// Fetches the layers the store lacks and records the image, sending
    /// progress to `progress` as it goes.
    pub async fn run(
        self: &Arc<Self>,
        store: &Arc<ImageStore>,
        plan: Plan,
        progress: mpsc::Sender<Progress>,
    ) -> Result<(), ImageError> {
        let send = |line: Progress| {
            let progress = progress.clone();
            async move {
                // A client that went away stops reading, not the pull.
                let _ = progress.send(line).await;
            }
        };
        let tag_or_digest = plan
            .named
            .tag
            .clone()
            .or_else(|| plan.named.digest.clone())
            .unwrap_or_default();
        send(Progress {
            id: Some(tag_or_digest),
            ..Progress::message(format!("Pulling from {}", path_of(&plan.named.name)))
        })
        .await;
        // Layers that finish before the image is recorded are kept from prune.
        let _pin = store.pin(
            plan.layers
                .iter()
                .flat_map(|l| [l.diff_id.clone(), l.descriptor.digest.clone()])
                .chain([plan.id.clone()]),
        );
        let mut watched = Vec::new();
        let mut sizes: HashMap<String, u64> = HashMap::new();
        for layer in &plan.layers {
            let short = short_digest(&layer.descriptor.digest);
            if let Some(size) = store.layer_size(&layer.diff_id) {
                sizes.insert(layer.diff_id.clone(), size);
                send(Progress::layer(&short, "Already exists", None)).await;
                continue;
            }
            if watched.iter().any(|w: &Watched| w.diff_id == layer.diff_id) {
                continue;
            }
            send(Progress::layer(&short, "Pulling fs layer", None)).await;
            watched.push(Watched {
                short,
                diff_id: layer.diff_id.clone(),
                total: layer.descriptor.size.max(0) as u64,
                rx: self.layer(store, &plan.endpoint, layer),
                reported: None,
                last_bytes: std::time::Instant::now(),
                finished: false,
            });
        }
        let mut failure = None;
        loop {
            for w in watched.iter_mut().filter(|w| !w.finished) {
                let state = w.rx.borrow_and_update().clone();
                for line in w.lines(&state) {
                    send(line).await;
                }
                match state {
                    LayerState::Done { size } => {
                        w.finished = true;
                        sizes.insert(w.diff_id.clone(), size);
                    }
                    LayerState::Failed(message) => {
                        w.finished = true;
                        failure.get_or_insert(message);
                    }
                    _ => {}
                }
            }
            if failure.is_some() || watched.iter().all(|w| w.finished) {
                break;
            }
            let changes = watched
                .iter_mut()
                .filter(|w| !w.finished)
                .map(|w| Box::pin(w.rx.changed()));
            let (changed, index, _) = futures::future::select_all(changes).await;
            if changed.is_err() {
                // The fetch task ended without a last word: it panicked.
                let w = watched.iter_mut().filter(|w| !w.finished).nth(index);
                if let Some(w) = w {
                    w.finished = true;
                    failure.get_or_insert_with(|| format!("fetching layer {} stopped", w.short));
                }
            }
        }
        if let Some(message) = failure {
            return Err(ImageError::Registry {
                kind: ErrorKind::Internal,
                message,
            });
        }
        let layers: Vec<LayerMeta> = plan
            .layers
            .iter()
            .map(|l| LayerMeta {
                diff_id: l.diff_id.clone(),
                digest: l.descriptor.digest.clone(),
                media_type: l.descriptor.media_type.clone(),
                blob_size: l.descriptor.size.max(0) as u64,
                size: sizes.get(&l.diff_id).copied().unwrap_or(0),
            })
            .collect();
        let familiar = plan.named.familiar();
        let digest = plan.manifest_digest.clone();
        let store = store.clone();
        let up_to_date = tokio::task::spawn_blocking(move || store.record_pulled(&plan, layers))
            .await
            .map_err(|e| ImageError::Registry {
                kind: ErrorKind::Internal,
                message: format!("recording the image failed: {e}"),
            })??;
        send(Progress::message(format!("Digest: {digest}"))).await;
        let status = if up_to_date {
            format!("Status: Image is up to date for {familiar}")
        } else {
            format!("Status: Downloaded newer image for {familiar}")
        };
        send(Progress::message(status)).await;
        Ok(())
    }

    /// The progress of fetching `layer`: a task already on it, or a new one.
    fn layer(
        self: &Arc<Self>,
        store: &Arc<ImageStore>,
        endpoint: &Endpoint,
        layer: &PlannedLayer,
    ) -> watch::Receiver<LayerState> {
        let mut inflight = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = inflight.get(&layer.diff_id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(LayerState::Pending);
        inflight.insert(layer.diff_id.clone(), rx.clone());
        drop(inflight);
        let this = self.clone();
        let store = store.clone();
        let client = endpoint.client.clone();
        let reference = endpoint.reference.clone();
        let layer = layer.clone();
        tokio::spawn(async move {
            let result = fetch_layer(&this, &store, &client, &reference, &layer, &tx).await;
            let last = match result {
                Ok(size) => LayerState::Done { size },
                Err(e) => {
                    tracing::warn!(layer = %layer.descriptor.digest, error = %e, "layer pull failed");
                    LayerState::Failed(e.to_string())
                }
            };
            tx.send_replace(last);
            this.inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&layer.diff_id);
        });
        rx
    }
}

/// A layer a pull is watching, and what it last said about it.
struct Watched {
    short: String,
    diff_id: String,
    total: u64,
    rx: watch::Receiver<LayerState>,
    reported: Option<std::mem::Discriminant<LayerState>>,
    last_bytes: std::time::Instant,
    finished: bool,
}

impl Watched {
    /// The lines to send for `state`: each change of phase once, byte counts
    /// at most ten times a second.
    fn lines(&mut self, state: &LayerState) -> Vec<Progress> {
        let phase = std::mem::discriminant(state);
        let new_phase = self.reported != Some(phase);
        self.reported = Some(phase);
        match state {
            LayerState::Waiting if new_phase => vec![Progress::layer(&self.short, "Waiting", None)],
            LayerState::Downloading { current, total } => {
                let now = std::time::Instant::now();
                if !new_phase && now.duration_since(self.last_bytes).as_millis() < 100 {
                    return Vec::new();
                }
                self.last_bytes = now;
                vec![Progress::layer(
                    &self.short,
                    "Downloading",
                    Some((*current, *total)),
                )]
            }
            LayerState::Done { .. } => vec![
                Progress::layer(&self.short, "Verifying Checksum", None),
                Progress::layer(&self.short, "Download complete", None),
                Progress::layer(&self.short, "Extracting", Some((self.total, self.total))),
                Progress::layer(&self.short, "Pull complete", None),
            ],
            _ => Vec::new(),
        }
    }
}

/// The first 12 hex digits of a digest, Docker's layer id in progress lines.
fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// The repository path without the registry (`library/busybox`).
fn path_of(name: &str) -> &str {
    name.split_once('/').map_or(name, |(_, path)| path)
}

async fn resolve_at(
    named: &Named,
    endpoint: Endpoint,
    wanted: &PlatformSpec,
    explicit: bool,
    auth: &RegistryAuth,
) -> Result<Plan, ImageError> {
    let what = format!(
        "{}:{}",
        named.name,
        named.tag.as_deref().unwrap_or("latest")
    );
    let what = match &named.digest {
        Some(digest) => format!("{}@{digest}", named.name),
        None => what,
    };
    let shown = super::reference::familiar(&what);
    let repo = super::reference::familiar(&named.name);
    let translate = |e, manifest| registry::translate(e, &shown, &repo, manifest);
    let client = &endpoint.client;
    let (bytes, manifest_digest) = top_manifest(named, &endpoint, auth, &shown).await?;
    let mut manifest = parse_manifest(&bytes, &shown)?;
    if let Some(entries) = manifest.manifests.take() {
        let chosen = entries
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| matches(p, wanted)))
            .ok_or_else(|| ImageError::Registry {
                kind: ErrorKind::NotFound,
                message: format!("no matching manifest for {wanted} in the manifest list entries"),
            })?;
        if digest::hex_part(&chosen.digest).is_none() {
            return Err(ImageError::Unsupported(format!(
                "{shown}: unsupported manifest digest {}",
                chosen.digest
            )));
        }
        let child = endpoint.reference.clone_with_digest(chosen.digest.clone());
        let media: Vec<&str> = if chosen.media_type.is_empty() {
            vec![OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE]
        } else {
            vec![chosen.media_type.as_str()]
        };
        let (child_bytes, _) = client
            .pull_manifest_raw(&child, auth, &media)
            .await
            .map_err(|e| translate(e, true))?;
        let actual = digest::of_bytes(&child_bytes);
        if actual != chosen.digest {
            return Err(ImageError::Registry {
                kind: ErrorKind::InvalidParameter,
                message: format!(
                    "manifest verification failed for digest {}: the registry sent {actual}",
                    chosen.digest
                ),
            });
        }
        manifest = parse_manifest(&child_bytes, &shown)?;
        if manifest.manifests.is_some() {
            return Err(ImageError::Unsupported(format!(
                "{shown}: an image index inside an image index is not supported"
            )));
        }
        // Like Docker, the image keeps the index's digest as its repo digest.
    }
    let config_desc = manifest
        .config
        .clone()
        .ok_or_else(|| ImageError::Unsupported(format!("{shown}: the manifest has no config")))?;
    let config_bytes = config_blob(&endpoint, &config_desc, &shown, &repo).await?;
    let id = config_desc.digest.clone();
    let config: ConfigFile =
        serde_json::from_slice(&config_bytes).map_err(|source| ImageError::BadJson {
            file: format!("config {id}"),
            source,
        })?;
    if explicit {
        let actual = PlatformSpec {
            os: config.os.clone(),
            architecture: normalise_arch(&config.architecture).to_owned(),
            variant: config.variant.clone(),
        };
        if !matches(&actual, wanted) {
            return Err(ImageError::Registry {
                kind: ErrorKind::NotFound,
                message: format!("image with reference {shown} was found but its platform ({actual}) does not match the specified platform ({wanted})"),
            });
        }
    }
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::Unsupported(format!(
            "{shown}: the manifest has {} layers but the config {} diff-ids",
            manifest.layers.len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers.iter().zip(diff_ids) {
        if !LAYER_TYPES.contains(&descriptor.media_type.as_str()) {
            return Err(ImageError::Unsupported(format!(
                "{shown}: unsupported layer media type {}",
                descriptor.media_type
            )));
        }
        if digest::hex_part(&descriptor.digest).is_none() || digest::hex_part(diff_id).is_none() {
            return Err(ImageError::Unsupported(format!(
                "{shown}: unsupported layer digest {} / diff-id {diff_id}",
                descriptor.digest
            )));
        }
        layers.push(PlannedLayer {
            descriptor: descriptor.clone(),
            diff_id: diff_id.clone(),
        });
    }
    Ok(Plan {
        named: named.clone(),
        endpoint,
        manifest_digest,
        id,
        config_bytes,
        config,
        layers,
    })
}

/// The manifest (or index) `named` points at, as the registry sent it, and
/// its digest, checked against the one `named` gives.
pub(super) async fn top_manifest(
    named: &Named,
    endpoint: &Endpoint,
    auth: &RegistryAuth,
    shown: &str,
) -> Result<(Bytes, String), ImageError> {
    let repo = super::reference::familiar(&named.name);
    let accepted = [
        OCI_IMAGE_INDEX_MEDIA_TYPE,
        IMAGE_MANIFEST_LIST_MEDIA_TYPE,
        OCI_IMAGE_MEDIA_TYPE,
        IMAGE_MANIFEST_MEDIA_TYPE,
    ];
    let (bytes, _) = endpoint
        .client
        .pull_manifest_raw(&endpoint.reference, auth, &accepted)
        .await
        .map_err(|e| registry::translate(e, shown, &repo, true))?;
    let manifest_digest = digest::of_bytes(&bytes);
    if let Some(wanted_digest) = &named.digest {
        if *wanted_digest != manifest_digest {
            return Err(ImageError::Registry {
                kind: ErrorKind::InvalidParameter,
                message: format!("manifest verification failed for digest {wanted_digest}: the registry sent {manifest_digest}"),
            });
        }
    }
    Ok((bytes, manifest_digest))
}

/// An image config's bytes, bounded and checked against its digest.
pub(super) async fn config_blob(
    endpoint: &Endpoint,
    config: &OciDescriptor,
    shown: &str,
    repo: &str,
) -> Result<Vec<u8>, ImageError> {
    if digest::hex_part(&config.digest).is_none() || config.size as u64 > MAX_SMALL_BLOB {
        return Err(ImageError::Unsupported(format!(
            "{shown}: unsupported image config {} ({} bytes)",
            config.digest, config.size
        )));
    }
    let mut bytes = Vec::new();
    endpoint
        .client
        .pull_blob(&endpoint.reference, config, &mut bytes)
        .await
        .map_err(|e| registry::translate(e, shown, repo, false))?;
    if digest::of_bytes(&bytes) != config.digest {
        return Err(ImageError::Registry {
            kind: ErrorKind::InvalidParameter,
            message: format!(
                "image config verification failed for digest {}",
                config.digest
            ),
        });
    }
    Ok(bytes)
}

fn parse_manifest(bytes: &[u8], shown: &str) -> Result<Manifest, ImageError> {
    if bytes.len() as u64 > MAX_SMALL_BLOB {
        return Err(ImageError::Unsupported(format!(
            "{shown}: the manifest is too large"
        )));
    }
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|source| ImageError::BadJson {
            file: format!("manifest of {shown}"),
            source,
        })?;
    if manifest.schema_version != 2 {
        return Err(ImageError::Unsupported(format!(
            "{shown}: manifest schema version {} is not supported (only 2; schema 1 images must be pushed again)",
            manifest.schema_version
        )));
    }
    if let Some(media_type) = &manifest.media_type {
        let known = [
            OCI_IMAGE_INDEX_MEDIA_TYPE,
            IMAGE_MANIFEST_LIST_MEDIA_TYPE,
            OCI_IMAGE_MEDIA_TYPE,
            IMAGE_MANIFEST_MEDIA_TYPE,
        ];
        if !known.contains(&media_type.as_str()) {
            return Err(ImageError::Unsupported(format!(
                "{shown}: unsupported manifest media type {media_type}"
            )));
        }
    }
    Ok(manifest)
}

/// Fetches one layer: waits for a download slot, streams the blob into the
/// unpacker and returns the unpacked size.
async fn fetch_layer(
    puller: &Puller,
    store: &Arc<ImageStore>,
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    layer: &PlannedLayer,
    state: &watch::Sender<LayerState>,
) -> Result<u64, ImageError> {
    let _slot = match puller.downloads.clone().try_acquire_owned() {
        Ok(slot) => slot,
        Err(_) => {
            state.send_replace(LayerState::Waiting);
            puller
                .downloads
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ImageError::Registry {
                    kind: ErrorKind::Internal,
                    message: "the engine is shutting down".to_owned(),
                })?
        }
    };
    if let Some(size) = store.layer_size(&layer.diff_id) {
        return Ok(size);
    }
    let digest = layer.descriptor.digest.clone();
    let total = layer.descriptor.size.max(0) as u64;
    state.send_replace(LayerState::Downloading { current: 0, total });
    let shown = short_digest(&digest);
    let mut stream = client
        .pull_blob_stream(reference, &layer.descriptor)
        .await
        .map_err(|e| {
            registry::translate(e, &format!("layer {shown}"), reference.repository(), false)
        })?;
    let (chunks, rx) = mpsc::channel::<io::Result<Bytes>>(64);
    let unpacker = {
        let store = store.clone();
        let digest = digest.clone();
        let diff_id = layer.diff_id.clone();
        tokio::task::spawn_blocking(move || {
            store.unpack_pulled(ChannelReader::new(rx), &digest, &diff_id)
        })
    };
    let mut current = 0u64;
    let mut unpacking = true;
    let mut stream_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => {
                current += bytes.len() as u64;
                if total > 0 && current > total {
                    stream_error = Some(format!(
                        "layer {digest}: the registry sent more than the {total} bytes the manifest declares"
                    ));
                    break;
                }
                state.send_replace(LayerState::Downloading { current, total });
                // When the unpacker gave up, read on: the blob's digest, checked
                // at its end, tells a corrupt download from a bad layer.
                if unpacking && chunks.send(Ok(bytes)).await.is_err() {
                    unpacking = false;
                }
            }
            Err(e) => {
                stream_error = Some(if e.to_string().contains("igest") {
                    format!("filesystem layer verification failed for digest {digest}")
                } else {
                    format!("layer {digest}: download failed: {e}")
                });
                break;
            }
        }
    }
    if let Some(message) = &stream_error {
        let _ = chunks.send(Err(io::Error::other(message.clone()))).await;
    }
    drop(chunks);
    let unpacked = unpacker.await.map_err(|e| ImageError::Registry {
        kind: ErrorKind::Internal,
        message: format!("layer {digest}: unpacking stopped: {e}"),
    })?;
    match (stream_error, unpacked) {
        (Some(message), _) => Err(ImageError::Registry {
            kind: ErrorKind::InvalidParameter,
            message,
        }),
        (None, result) => result,
    }
}

/// Reads the chunks a download sends (from a blocking thread).
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Passes a blob through while hashing it and writing it to a file.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    file: BufWriter<File>,
    count: u64,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.file.write_all(&buf[..n])?;
        self.count += n as u64;
        Ok(n)
    }
}

/// A file removed on drop unless kept.
struct ScratchFile {
    path: std::path::PathBuf,
    keep: bool,
}

impl Drop for ScratchFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl ImageStore {
    /// The unpacked size of a layer the store holds, `None` when it lacks it.
    pub(super) fn layer_size(&self, diff_id: &str) -> Option<u64> {
        let path = self.layer_path(diff_id);
        if !path.is_dir() {
            return None;
        }
        let known = self
            .lock()
            .images
            .values()
            .flat_map(|i| i.meta.layers.iter())
            .find(|l| l.diff_id == diff_id)
            .map(|l| l.size);
        Some(known.unwrap_or_else(|| dir_size(&path)))
    }

    /// Unpacks a layer blob as it streams in, keeps the blob, checks both
    /// digests, and moves both into place. Returns the unpacked size.
    pub(super) fn unpack_pulled(
        &self,
        blob: impl Read,
        digest: &str,
        diff_id: &str,
    ) -> Result<u64, ImageError> {
        let mut dir = ScratchDir::create(&self.layers_dir(), ".tmp-")?;
        let mut file = ScratchFile {
            path: self
                .tmp_dir()
                .join(format!("pull-{:016x}", rand::random::<u64>())),
            keep: false,
        };
        let out = File::create(&file.path).map_err(|e| ImageError::io("create", &file.path, e))?;
        let mut tee = Tee {
            inner: blob,
            hasher: Sha256::new(),
            file: BufWriter::with_capacity(256 << 10, out),
            count: 0,
        };
        let stats = unpack::unpack_layer(&mut tee, &dir.path)?;
        io::copy(&mut tee, &mut io::sink()).map_err(|source| ImageError::ReadLayer {
            entry: "(end)".to_owned(),
            source,
        })?;
        let actual = format!("sha256:{}", hex::encode(tee.hasher.clone().finalize()));
        if actual != digest {
            return Err(ImageError::Registry {
                kind: ErrorKind::InvalidParameter,
                message: format!("filesystem layer verification failed for digest {digest}"),
            });
        }
        if stats.diff_id != diff_id {
            return Err(ImageError::Registry {
                kind: ErrorKind::InvalidParameter,
                message: format!(
                    "layer {digest} unpacks to diff-id {}, but the image config says {diff_id}",
                    stats.diff_id
                ),
            });
        }
        let out = tee
            .file
            .into_inner()
            .map_err(|e| ImageError::io("write", &file.path, e.into_error()))?;
        out.sync_all()
            .map_err(|e| ImageError::io("sync", &file.path, e))?;
        drop(out);
        sync_filesystem(&self.layers_dir());
        let _state = self.lock();
        let blob = self.blob_path(digest);
        if !blob.exists() {
            std::fs::rename(&file.path, &blob)
                .map_err(|e| ImageError::io("commit blob", &blob, e))?;
            file.keep = true;
        }
        let target = self.layer_path(diff_id);
        if !target.exists() {
            std::fs::rename(&dir.path, &target)
                .map_err(|e| ImageError::io("commit layer", &target, e))?;
            dir.keep = true;
        }
        Ok(stats.size)
    }

    /// Records a pulled image whose layers are all in place; tags it when
    /// pulled by tag. Returns whether the name already pointed at it.
    fn record_pulled(&self, plan: &Plan, layers: Vec<LayerMeta>) -> Result<bool, ImageError> {
        // Under the lock: two pulls of one image write the same config.
        let mut state = self.lock();
        let config_blob = self.blob_path(&plan.id);
        if !config_blob.exists() {
            write_atomic(&config_blob, &plan.config_bytes)
                .map_err(|e| ImageError::io("write", &config_blob, e))?;
        }
        for layer in &layers {
            let path = self.layer_path(&layer.diff_id);
            if !path.is_dir() {
                let gone = io::Error::new(io::ErrorKind::NotFound, "layer removed during pull");
                return Err(ImageError::io("use layer", path, gone));
            }
        }
        let repo_digest = format!("{}@{}", plan.named.name, plan.manifest_digest);
        let existing = state.images.get(&plan.id).map(|i| i.meta.clone());
        let up_to_date = existing.is_some()
            && match &plan.named.tag {
                Some(_) => state.tags.get(&plan.named.full()) == Some(&plan.id),
                None => true,
            };
        let now = crate::state::time::now_rfc3339();
        let mut meta = existing.unwrap_or_else(|| ImageMeta {
            loaded: now.clone(),
            ..ImageMeta::default()
        });
        meta.layers = layers;
        if !meta.repo_digests.contains(&repo_digest) {
            meta.repo_digests.push(repo_digest);
        }
        if plan.named.tag.is_some() && !up_to_date {
            meta.last_tag_time = Some(now);
        }
        self.write_meta(&plan.id, &meta)?;
        if plan.named.tag.is_some() {
            state.tags.insert(plan.named.full(), plan.id.clone());
        }
        state.images.insert(
            plan.id.clone(),
            Image {
                config: plan.config.clone(),
                meta,
            },
        );
        self.write_tags(&state)?;
        Ok(up_to_date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_and_match() {
        let own = parse_platform("").unwrap();
        assert_eq!(own.os, "linux");
        let arm = parse_platform("linux/arm64").unwrap();
        assert_eq!(arm.architecture, "arm64");
        assert!(parse_platform("windows/amd64").is_err());
        assert!(parse_platform("linux//x").is_err());
        let entry = |arch: &str, variant: Option<&str>| PlatformSpec {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        };
        assert!(matches(&entry("arm64", Some("v8")), &arm));
        assert!(!matches(&entry("amd64", None), &arm));
        let v7 = parse_platform("linux/arm/v7").unwrap();
        assert!(matches(&entry("arm", Some("v7")), &v7));
        assert!(!matches(&entry("arm", Some("v6")), &v7));
        assert!(matches(
            &entry("arm64", None),
            &parse_platform("linux/arm64/v8").unwrap()
        ));
    }

    #[test]
    fn manifests_of_unknown_kinds_are_refused() {
        let schema1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(parse_manifest(schema1, "x")
            .unwrap_err()
            .to_string()
            .contains("schema version 1"));
        let odd = br#"{"schemaVersion":2,"mediaType":"application/x-odd","layers":[]}"#;
        assert!(parse_manifest(odd, "x")
            .unwrap_err()
            .to_string()
            .contains("application/x-odd"));
        let index = br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:00","platform":{"os":"linux","architecture":"amd64"}}]}"#;
        assert!(parse_manifest(index, "x").unwrap().manifests.is_some());
    }

    #[test]
    fn channel_reader_yields_chunks_then_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"abc"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"de"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let mut reader = ChannelReader::new(rx);
        let mut buf = [0u8; 2];
        assert_eq!(reader.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf, b"ab");
        let mut rest = Vec::new();
        let err = reader.read_to_end(&mut rest).unwrap_err();
        assert_eq!(rest, b"cde");
        assert_eq!(err.to_string(), "cut");
    }
}
