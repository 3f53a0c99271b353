//! The image store under `<root>/image`:
//!
//! ```text
//! blobs/sha256/<hex>      configs and layer blobs (as loaded), by digest
//! layers/<hex>/           one unpacked layer per diff-id, shared by images
//! layers/.tmp-*/          layers being unpacked (removed at open)
//! images/<hex>.json       per image: its layers' diff-ids and blobs, times
//! repositories.json       full tag → image id, written atomically
//! tmp/                    staging of archives being loaded (emptied at open)
//! ```
//!
//! Layers appear under their final name only by `rename` after a complete,
//! verified, synced unpack, so a crash never leaves a half layer that looks
//! whole. The in-memory state sits behind one mutex held only for short
//! bookkeeping; unpacking runs outside it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::reference::{self, Named};
use super::{ConfigFile, HistoryEntry, ImageError, ImageInfo, Removed, ResolvedImage};
use crate::state::files::write_atomic;

const REPOSITORIES: &str = "repositories.json";

/// The tag map as stored in `repositories.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Repositories {
    /// Full reference (`docker.io/library/hello:latest`) → image id.
    tags: BTreeMap<String, String>,
}

/// `images/<hex>.json`: what the config blob does not say.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct ImageMeta {
    pub layers: Vec<LayerMeta>,
    pub loaded: String,
    #[serde(default)]
    pub last_tag_time: Option<String>,
    /// `name@sha256:…` of the manifests the image came with.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// The image this one was committed or built on (Docker's `Parent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// For a build step's image: the step's cache key (see `build::cache`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_key: Option<String>,
}

/// One layer of an image: its diff-id, the blob it came in, its unpacked size.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LayerMeta {
    pub diff_id: String,
    pub digest: String,
    pub media_type: String,
    pub blob_size: u64,
    pub size: u64,
}

/// One image in memory.
#[derive(Debug, Clone)]
pub(super) struct Image {
    pub config: ConfigFile,
    pub meta: ImageMeta,
}

/// Everything behind the store's lock.
#[derive(Debug, Default)]
pub(super) struct State {
    /// Image id → image.
    pub images: BTreeMap<String, Image>,
    /// Full reference → image id.
    pub tags: BTreeMap<String, String>,
}

impl State {
    /// The full tags that name image `id`.
    pub(super) fn tags_of(&self, id: &str) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The image store under `<root>/image`.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    state: Mutex<State>,
    /// Diff-ids and digests pulls and commits still need (see `prune`).
    pub(super) pins: Mutex<HashMap<String, usize>>,
}

/// The first 12 hex digits of an id, as Docker shows it in messages.
fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

impl ImageStore {
    /// Opens (creating when needed) the store at `root`, dropping leftovers of
    /// interrupted loads.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = Self {
            root: root.to_owned(),
            state: Mutex::new(State::default()),
            pins: Mutex::new(HashMap::new()),
        };
        for dir in [store.blobs_dir(), store.layers_dir(), store.images_dir()] {
            std::fs::create_dir_all(&dir).map_err(|e| ImageError::io("create", &dir, e))?;
        }
        let tmp = store.tmp_dir();
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| ImageError::io("clean", &tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| ImageError::io("create", &tmp, e))?;
        store.remove_partial_layers()?;
        let state = store.read_state()?;
        *store.lock() = state;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    pub(super) fn blob_path(&self, digest: &str) -> PathBuf {
        self.blobs_dir().join(hex(digest))
    }

    pub(super) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(super) fn layer_path(&self, diff_id: &str) -> PathBuf {
        self.layers_dir().join(hex(diff_id))
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub(super) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remove_partial_layers(&self) -> Result<(), ImageError> {
        let dir = self.layers_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("read", &dir, e))?;
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let path = entry.path();
                std::fs::remove_dir_all(&path).map_err(|e| ImageError::io("clean", &path, e))?;
            }
        }
        Ok(())
    }

    fn read_state(&self) -> Result<State, ImageError> {
        let mut state = State::default();
        let dir = self.images_dir();
        let entries = std::fs::read_dir(&dir).map_err(|e| ImageError::io("read", &dir, e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let id = format!("sha256:{hex}");
            match self.read_image(&id, &entry.path()) {
                Ok(image) => {
                    state.images.insert(id, image);
                }
                Err(e) => tracing::warn!(image = %id, error = %e, "skipping unreadable image"),
            }
        }
        let path = self.root.join(REPOSITORIES);
        let repositories: Repositories = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable tags");
                Repositories::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Repositories::default(),
            Err(e) => return Err(ImageError::io("read", &path, e)),
        };
        state.tags = repositories
            .tags
            .into_iter()
            .filter(|(_, id)| state.images.contains_key(id))
            .collect();
        Ok(state)
    }

    fn read_image(&self, id: &str, meta_path: &Path) -> Result<Image, ImageError> {
        let bytes = std::fs::read(meta_path).map_err(|e| ImageError::io("read", meta_path, e))?;
        let meta: ImageMeta =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::BadJson {
                file: meta_path.display().to_string(),
                source,
            })?;
        let config_path = self.blob_path(id);
        let bytes =
            std::fs::read(&config_path).map_err(|e| ImageError::io("read", &config_path, e))?;
        let config = serde_json::from_slice(&bytes).map_err(|source| ImageError::BadJson {
            file: config_path.display().to_string(),
            source,
        })?;
        Ok(Image { config, meta })
    }

    /// Writes an image's record.
    pub(super) fn write_meta(&self, id: &str, meta: &ImageMeta) -> Result<(), ImageError> {
        let path = self.images_dir().join(format!("{}.json", hex(id)));
        let bytes = serde_json::to_vec(meta).map_err(|source| ImageError::Encode {
            what: "image record",
            source,
        })?;
        write_atomic(&path, &bytes).map_err(|e| ImageError::io("write", &path, e))
    }

    /// Writes the tag map.
    pub(super) fn write_tags(&self, state: &State) -> Result<(), ImageError> {
        let path = self.root.join(REPOSITORIES);
        let repositories = Repositories {
            tags: state.tags.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&repositories).map_err(|source| ImageError::Encode {
                what: "tags",
                source,
            })?;
        write_atomic(&path, &bytes).map_err(|e| ImageError::io("write", &path, e))
    }

    /// How many images the store holds.
    pub fn count(&self) -> usize {
        self.lock().images.len()
    }

    /// Finds an image by name, `name:tag`, `name@digest`, full or short id.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let state = self.lock();
        let id = lookup(&state, reference)?;
        let image = &state.images[&id];
        Ok(ResolvedImage {
            config: image.config.config.clone().unwrap_or_default(),
            layers: image
                .meta
                .layers
                .iter()
                .map(|l| self.layer_path(&l.diff_id))
                .collect(),
            id,
        })
    }

    /// Every image, newest load first.
    pub fn list(&self) -> Vec<ImageInfo> {
        let state = self.lock();
        // Children counted in one pass, not once per image.
        let mut children: HashMap<&str, usize> = HashMap::new();
        for image in state.images.values() {
            if let Some(parent) = &image.meta.parent {
                *children.entry(parent.as_str()).or_default() += 1;
            }
        }
        let mut all: Vec<ImageInfo> = state
            .images
            .keys()
            .map(|id| self.info(&state, id, children.get(id.as_str()).copied().unwrap_or(0)))
            .collect();
        all.sort_by(|a, b| b.loaded.cmp(&a.loaded).then_with(|| a.id.cmp(&b.id)));
        all
    }

    /// One image, for `inspect`.
    pub fn inspect(&self, reference: &str) -> Result<ImageInfo, ImageError> {
        let state = self.lock();
        let id = lookup(&state, reference)?;
        let children = state
            .images
            .values()
            .filter(|i| i.meta.parent.as_deref() == Some(id.as_str()))
            .count();
        Ok(self.info(&state, &id, children))
    }

    /// What `list` and `inspect` say of image `id`, which `children`
    /// images were built on.
    fn info(&self, state: &State, id: &str, children: usize) -> ImageInfo {
        let image = &state.images[id];
        let layer_sizes: Vec<u64> = image.meta.layers.iter().map(|l| l.size).collect();
        ImageInfo {
            id: id.to_owned(),
            repo_tags: state
                .tags
                .iter()
                .filter(|(_, v)| *v == id)
                .map(|(k, _)| reference::familiar(k))
                .collect(),
            repo_digests: image.meta.repo_digests.clone(),
            config: image.config.clone(),
            size: layer_sizes.iter().sum(),
            layer_dirs: image
                .meta
                .layers
                .iter()
                .map(|l| self.layer_path(&l.diff_id))
                .collect(),
            layer_sizes,
            loaded: image.meta.loaded.clone(),
            last_tag_time: image.meta.last_tag_time.clone(),
            parent: image.meta.parent.clone(),
            children,
        }
    }

    /// `docker history`: the config's history, newest first, with layer sizes.
    pub fn history(&self, reference: &str) -> Result<Vec<HistoryEntry>, ImageError> {
        let info = self.inspect(reference)?;
        let created = |c: &Option<String>| {
            c.as_deref()
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map_or(0, |t| t.timestamp())
        };
        let mut sizes = info.layer_sizes.iter();
        let mut entries: Vec<HistoryEntry> = info
            .config
            .history
            .iter()
            .map(|h| HistoryEntry {
                id: "<missing>".to_owned(),
                created: created(&h.created),
                created_by: h.created_by.clone(),
                tags: Vec::new(),
                size: if h.empty_layer {
                    0
                } else {
                    sizes.next().copied().unwrap_or(0)
                },
                comment: h.comment.clone(),
            })
            .collect();
        if entries.is_empty() {
            entries = info
                .layer_sizes
                .iter()
                .map(|size| HistoryEntry {
                    id: "<missing>".to_owned(),
                    created: created(&info.config.created),
                    created_by: String::new(),
                    tags: Vec::new(),
                    size: *size,
                    comment: String::new(),
                })
                .collect();
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top.id = info.id.clone();
            top.tags = info.repo_tags.clone();
        }
        Ok(entries)
    }

    /// Tags the image `reference` as `repo:tag` (tag `latest` when empty);
    /// returns the image id and the familiar new name.
    pub fn tag(
        &self,
        reference: &str,
        repo: &str,
        tag: &str,
    ) -> Result<(String, String), ImageError> {
        let target = if tag.is_empty() {
            repo.to_owned()
        } else {
            format!("{repo}:{tag}")
        };
        let named = Named::parse(&target)?;
        if named.digest.is_some() {
            return Err(ImageError::InvalidReference(target));
        }
        let mut state = self.lock();
        let id = lookup(&state, reference)?;
        state.tags.insert(named.full(), id.clone());
        self.write_tags(&state)?;
        if let Some(image) = state.images.get_mut(&id) {
            image.meta.last_tag_time = Some(crate::state::time::now_rfc3339());
            let meta = image.meta.clone();
            self.write_meta(&id, &meta)?;
        }
        Ok((id, named.familiar()))
    }

    /// Removes a tag or an image, the way `docker rmi` does. `in_use` maps image
    /// ids to a container using them. An image in use is never deleted: with
    /// `force` its names go and it stays, untagged, for its containers.
    pub fn remove(
        &self,
        reference: &str,
        force: bool,
        in_use: &HashMap<String, String>,
    ) -> Result<Vec<Removed>, ImageError> {
        let mut state = self.lock();
        let id = lookup(&state, reference)?;
        let tags = state.tags_of(&id);
        let container = in_use.get(&id);
        let by_name = Named::parse(reference)
            .ok()
            .map(|n| n.full())
            .filter(|full| tags.contains(full));
        let mut removed = Vec::new();
        let untag = match by_name {
            Some(full) => {
                if let (false, 1, Some(container)) = (force, tags.len(), container) {
                    return Err(ImageError::RepositoryInUse {
                        reference: reference.to_owned(),
                        container: short(container).to_owned(),
                        image: short(&id).to_owned(),
                    });
                }
                vec![full]
            }
            None => {
                if !force && tags.len() > 1 {
                    return Err(ImageError::MultipleRepositories {
                        image: short(&id).to_owned(),
                    });
                }
                if let (false, Some(container)) = (force, container) {
                    return Err(ImageError::ImageInUse {
                        image: short(&id).to_owned(),
                        container: short(container).to_owned(),
                    });
                }
                tags.clone()
            }
        };
        for full in &untag {
            state.tags.remove(full);
            removed.push(Removed::Untagged(reference::familiar(full)));
        }
        if !untag.is_empty() {
            self.write_tags(&state)?;
        }
        let still_tagged = state.tags.values().any(|v| *v == id);
        if still_tagged || container.is_some() {
            return Ok(removed);
        }
        let parent = state.images[&id].meta.parent.clone();
        self.delete(&mut state, &id)?;
        removed.push(Removed::Deleted(id));
        for id in self.delete_orphaned_parents(&mut state, parent, &|id| in_use.contains_key(id))? {
            removed.push(Removed::Deleted(id));
        }
        Ok(removed)
    }

    /// After an image is deleted, the build's intermediate images it stood
    /// on, as Docker removes them: from `parent` up, each untagged one that
    /// no container uses (`in_use`) and no other image was built on.
    /// Answers the ids deleted.
    pub(super) fn delete_orphaned_parents(
        &self,
        state: &mut State,
        mut parent: Option<String>,
        in_use: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>, ImageError> {
        let mut deleted = Vec::new();
        while let Some(id) = parent.take() {
            let Some(image) = state.images.get(&id) else {
                break;
            };
            let children = state
                .images
                .values()
                .any(|i| i.meta.parent.as_deref() == Some(id.as_str()));
            if children || in_use(&id) || !state.tags_of(&id).is_empty() {
                break;
            }
            parent = image.meta.parent.clone();
            self.delete(state, &id)?;
            deleted.push(id);
        }
        Ok(deleted)
    }

    /// Deletes an untagged image and whatever no other image shares with it.
    pub(super) fn delete(&self, state: &mut State, id: &str) -> Result<(), ImageError> {
        let Some(image) = state.images.remove(id) else {
            return Ok(());
        };
        let meta_path = self.images_dir().join(format!("{}.json", hex(id)));
        remove_file(&meta_path)?;
        remove_file(&self.blob_path(id))?;
        for layer in &image.meta.layers {
            let shared = |f: &dyn Fn(&LayerMeta) -> bool| {
                state.images.values().any(|i| i.meta.layers.iter().any(f))
            };
            if !shared(&|l| l.digest == layer.digest) {
                remove_file(&self.blob_path(&layer.digest))?;
            }
            if !shared(&|l| l.diff_id == layer.diff_id) {
                // Rename first: a crash mid-delete leaves a `.tmp-` dir that
                // open() removes, never a half layer under its real name.
                let path = self.layer_path(&layer.diff_id);
                let doomed = self
                    .layers_dir()
                    .join(format!(".tmp-rm-{}", hex(&layer.diff_id)));
                match std::fs::rename(&path, &doomed) {
                    Ok(()) => std::fs::remove_dir_all(&doomed)
                        .map_err(|e| ImageError::io("remove", &doomed, e))?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(ImageError::io("remove", &path, e)),
                }
            }
        }
        Ok(())
    }
}

fn remove_file(path: &Path) -> Result<(), ImageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("remove", path, e)),
    }
}

/// Finds the id `reference` names: a full id, a tag, `name@digest`, then a
/// unique id prefix.
pub(super) fn lookup(state: &State, reference: &str) -> Result<String, ImageError> {
    let id_hex = reference::id_prefix(reference);
    if let Some(hex) = id_hex.filter(|h| h.len() == 64) {
        let id = format!("sha256:{hex}");
        if state.images.contains_key(&id) {
            return Ok(id);
        }
    }
    let shown = match Named::parse(reference) {
        Ok(named) => {
            if let Some(digest) = &named.digest {
                let wanted = format!("{}@{digest}", named.name);
                let found = state
                    .images
                    .iter()
                    .find(|(id, image)| *id == digest || image.meta.repo_digests.contains(&wanted));
                if let Some((id, _)) = found {
                    return Ok(id.clone());
                }
            } else if let Some(id) = state.tags.get(&named.full()) {
                return Ok(id.clone());
            }
            named.familiar()
        }
        Err(e) if id_hex.is_none() => return Err(e),
        Err(_) => reference.to_owned(),
    };
    if let Some(hex) = id_hex {
        let mut matches = state
            .images
            .keys()
            .filter(|id| id.trim_start_matches("sha256:").starts_with(hex));
        if let Some(first) = matches.next() {
            if matches.next().is_some() {
                return Err(ImageError::AmbiguousId(reference.to_owned()));
            }
            return Ok(first.clone());
        }
    }
    Err(ImageError::NoSuchImage(shown))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
