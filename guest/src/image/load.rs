//! `docker load`: stage an archive, unpack and verify every new layer, then
//! commit blobs, layers, image records and tags in one short critical section.
//!
//! Nothing reaches the store before every layer of every image in the archive
//! has been unpacked (or, when already present, re-hashed) and its diff-id
//! checked against the config. A refused archive leaves no blob, layer or tag.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::archive::{self, PlannedImage, Staged};
use super::store::{Image, ImageMeta, LayerMeta};
use super::unpack;
use super::{ConfigFile, ImageError, ImageStore, LoadedImage};
use crate::state::files::write_atomic;

/// A directory removed on drop unless kept.
pub(super) struct ScratchDir {
    pub(super) path: PathBuf,
    pub(super) keep: bool,
}

impl ScratchDir {
    pub(super) fn create(parent: &Path, prefix: &str) -> Result<Self, ImageError> {
        let path = parent.join(format!("{prefix}{:016x}", rand::random::<u64>()));
        std::fs::create_dir(&path).map_err(|e| ImageError::io("create", &path, e))?;
        Ok(Self { path, keep: false })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove scratch dir");
            }
        }
    }
}

/// A layer made ready by this load.
struct Prepared {
    /// The unpacked layer, or `None` when the store already had it.
    dir: Option<ScratchDir>,
    size: u64,
}

/// An image ready to commit.
struct Ready {
    plan: PlannedImage,
    config: ConfigFile,
    layers: Vec<LayerMeta>,
}

impl ImageStore {
    /// Loads every image of a docker-archive or OCI layout tarball.
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>, ImageError> {
        self.load_archive(reader, false)
    }

    /// Loads every `*.tar` in `dir` whose names are not all present yet. A
    /// tarball that fails is logged and skipped.
    pub fn load_builtin(&self, dir: &Path) -> Result<Vec<LoadedImage>, ImageError> {
        let entries = std::fs::read_dir(dir).map_err(|e| ImageError::io("read", dir, e))?;
        let mut tars: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar"))
            .collect();
        tars.sort();
        let mut loaded = Vec::new();
        for path in tars {
            let result = File::open(&path)
                .map_err(|e| ImageError::io("open", &path, e))
                .and_then(|file| self.load_archive(std::io::BufReader::new(file), true));
            match result {
                Ok(images) => {
                    for image in &images {
                        tracing::info!(tarball = %path.display(), image = %image.id, tags = ?image.tags, "loaded built-in image");
                    }
                    loaded.extend(images);
                }
                Err(e) => {
                    tracing::warn!(tarball = %path.display(), error = %e, "cannot load built-in image");
                }
            }
        }
        Ok(loaded)
    }

    fn load_archive(
        &self,
        reader: impl Read,
        only_missing: bool,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        let staging = ScratchDir::create(&self.tmp_dir(), "load-")?;
        let staged = Staged::read(reader, &staging.path)?;
        let plans = archive::plan(&staged)?;
        if only_missing {
            let state = self.lock();
            let present = plans.iter().all(|p| {
                !p.names.is_empty() && p.names.iter().all(|n| state.tags.contains_key(&n.full()))
            });
            if present {
                return Ok(Vec::new());
            }
        }
        let mut prepared: HashMap<String, Prepared> = HashMap::new();
        let mut ready = Vec::new();
        for plan in plans {
            ready.push(self.prepare(plan, &mut prepared)?);
        }
        self.commit(ready, prepared)
    }

    /// Parses an image's config and readies each of its layers.
    fn prepare(
        &self,
        plan: PlannedImage,
        prepared: &mut HashMap<String, Prepared>,
    ) -> Result<Ready, ImageError> {
        let config: ConfigFile =
            serde_json::from_slice(&plan.config).map_err(|source| ImageError::BadJson {
                file: format!("config {}", plan.id),
                source,
            })?;
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != plan.layers.len() {
            return Err(ImageError::LayerCount {
                image: plan.id.clone(),
                layers: plan.layers.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let mut layers = Vec::new();
        for (layer, diff_id) in plan.layers.iter().zip(diff_ids) {
            if super::digest::hex_part(diff_id).is_none() {
                return Err(ImageError::BadArchive(format!(
                    "unsupported diff-id {diff_id}"
                )));
            }
            let size = match prepared.get(diff_id) {
                Some(done) => {
                    verify(
                        layer.name.as_str(),
                        diff_id,
                        &unpack::digest_layer(archive::open_layer(layer)?)?,
                    )?;
                    done.size
                }
                None => {
                    let done = self.prepare_layer(layer, diff_id)?;
                    let size = done.size;
                    prepared.insert(diff_id.clone(), done);
                    size
                }
            };
            layers.push(LayerMeta {
                diff_id: diff_id.clone(),
                digest: layer.file.digest.clone(),
                media_type: layer.media_type.clone(),
                blob_size: layer.file.size,
                size,
            });
        }
        Ok(Ready {
            plan,
            config,
            layers,
        })
    }

    /// Unpacks a layer the store lacks, or re-hashes one it has.
    fn prepare_layer(
        &self,
        layer: &archive::PlannedLayer,
        diff_id: &str,
    ) -> Result<Prepared, ImageError> {
        if let Some(size) = self.layer_size(diff_id) {
            let actual = unpack::digest_layer(archive::open_layer(layer)?)?;
            verify(&layer.name, diff_id, &actual)?;
            return Ok(Prepared { dir: None, size });
        }
        let dir = ScratchDir::create(&self.layers_dir(), ".tmp-")?;
        let stats = unpack::unpack_layer(archive::open_layer(layer)?, &dir.path)?;
        verify(&layer.name, diff_id, &stats.diff_id)?;
        Ok(Prepared {
            dir: Some(dir),
            size: stats.size,
        })
    }

    /// Moves everything into place and records it.
    fn commit(
        &self,
        ready: Vec<Ready>,
        mut prepared: HashMap<String, Prepared>,
    ) -> Result<Vec<LoadedImage>, ImageError> {
        sync_filesystem(&self.layers_dir());
        let mut state = self.lock();
        for (diff_id, layer) in prepared.iter_mut() {
            let target = self.layer_path(diff_id);
            match layer.dir.as_mut() {
                Some(dir) if !target.exists() => {
                    std::fs::rename(&dir.path, &target)
                        .map_err(|e| ImageError::io("commit layer", &target, e))?;
                    dir.keep = true;
                }
                Some(_) => {} // a concurrent load won: ours is dropped
                None if target.is_dir() => {}
                None => {
                    let gone = std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "layer removed during load",
                    );
                    return Err(ImageError::io("reuse layer", target, gone));
                }
            }
        }
        let now = crate::state::time::now_rfc3339();
        let mut loaded = Vec::new();
        for Ready {
            plan,
            config,
            layers,
        } in ready
        {
            for (planned, meta) in plan.layers.iter().zip(&layers) {
                let blob = self.blob_path(&meta.digest);
                if !blob.exists() && planned.file.path.exists() {
                    std::fs::rename(&planned.file.path, &blob)
                        .map_err(|e| ImageError::io("commit blob", &blob, e))?;
                }
            }
            let config_blob = self.blob_path(&plan.id);
            if !config_blob.exists() {
                write_atomic(&config_blob, &plan.config)
                    .map_err(|e| ImageError::io("write", &config_blob, e))?;
            }
            let mut meta = match state.images.get(&plan.id) {
                Some(image) => image.meta.clone(),
                None => ImageMeta {
                    loaded: now.clone(),
                    ..ImageMeta::default()
                },
            };
            meta.layers = layers;
            if let Some(digest) = &plan.manifest_digest {
                for name in &plan.names {
                    let repo_digest = format!("{}@{digest}", name.name);
                    if !meta.repo_digests.contains(&repo_digest) {
                        meta.repo_digests.push(repo_digest);
                    }
                }
            }
            if !plan.names.is_empty() {
                meta.last_tag_time = Some(now.clone());
            }
            self.write_meta(&plan.id, &meta)?;
            for name in &plan.names {
                state.tags.insert(name.full(), plan.id.clone());
            }
            state.images.insert(plan.id.clone(), Image { config, meta });
            loaded.push(LoadedImage {
                id: plan.id.clone(),
                tags: plan.names.iter().map(|n| n.familiar()).collect(),
            });
        }
        self.write_tags(&state)?;
        Ok(loaded)
    }
}

fn verify(layer: &str, expected: &str, actual: &str) -> Result<(), ImageError> {
    if expected == actual {
        Ok(())
    } else {
        Err(ImageError::DiffId {
            path: layer.to_owned(),
            expected: expected.to_owned(),
            actual: actual.to_owned(),
        })
    }
}

pub(super) use crate::state::files::dir_size;

/// Flushes the filesystem holding `dir`, so renamed layers are whole on disk.
pub(super) fn sync_filesystem(dir: &Path) {
    use std::os::fd::AsRawFd;
    match File::open(dir) {
        Ok(file) => {
            // SAFETY: the fd is valid for the life of `file`; syncfs only reads it.
            let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
            if rc != 0 {
                tracing::warn!(path = %dir.display(), error = %std::io::Error::last_os_error(), "syncfs failed");
            }
        }
        Err(e) => tracing::warn!(path = %dir.display(), error = %e, "cannot open for syncfs"),
    }
}
