//! `docker image prune` and what `docker system df` needs to know about
//! images, plus pins: layers and blobs an unfinished pull or commit still
//! needs, which prune must not take even though no image names them yet.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::load::dir_size;
use super::{ImageError, ImageStore, Removed};

/// Keeps `names` (diff-ids and blob digests) from prune until dropped.
pub struct Pin<'a> {
    store: &'a ImageStore,
    names: Vec<String>,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock().unwrap_or_else(|p| p.into_inner());
        for name in &self.names {
            if let Some(count) = pins.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    pins.remove(name);
                }
            }
        }
    }
}

/// What prune removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub removed: Vec<Removed>,
    /// Bytes of unpacked layers and blobs freed.
    pub reclaimed: u64,
}

/// One image as `docker system df` counts it.
#[derive(Debug, Clone)]
pub struct Usage {
    pub id: String,
    /// Unpacked size of all its layers.
    pub size: u64,
    /// Size of its layers that other images share.
    pub shared: u64,
}

impl ImageStore {
    /// Pins `names` (diff-ids, digests) for as long as the answer lives.
    pub fn pin(&self, names: impl IntoIterator<Item = String>) -> Pin<'_> {
        let names: Vec<String> = names.into_iter().collect();
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        for name in &names {
            *pins.entry(name.clone()).or_insert(0) += 1;
        }
        Pin { store: self, names }
    }

    fn pinned(&self) -> HashSet<String> {
        self.pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Removes images no container uses (`in_use`: image ids): untagged
    /// ones, or with `all` every one; `keep` vetoes an image (label filters).
    /// Then removes layers and blobs no image references.
    pub fn prune(
        &self,
        all: bool,
        in_use: &HashSet<String>,
        keep: &dyn Fn(&super::ImageInfo) -> bool,
    ) -> Result<Pruned, ImageError> {
        let images = self.list();
        let kept: HashSet<&str> = images
            .iter()
            .filter(|i| keep(i))
            .map(|i| i.id.as_str())
            .collect();
        let candidates: Vec<String> = images
            .iter()
            .filter(|i| !in_use.contains(&i.id))
            // Without `all`, only dangling images: untagged and not a
            // build's intermediate image (one with children).
            .filter(|i| all || (i.repo_tags.is_empty() && i.children == 0))
            .filter(|i| !kept.contains(i.id.as_str()))
            .map(|i| i.id.clone())
            .collect();
        let mut pruned = Pruned::default();
        let mut state = self.lock();
        for id in candidates {
            let Some(image) = state.images.get(&id).cloned() else {
                continue;
            };
            for tag in state.tags_of(&id) {
                state.tags.remove(&tag);
                pruned
                    .removed
                    .push(Removed::Untagged(super::reference::familiar(&tag)));
            }
            for layer in &image.meta.layers {
                let shared = state.images.iter().any(|(other, i)| {
                    *other != id && i.meta.layers.iter().any(|l| l.diff_id == layer.diff_id)
                });
                if !shared {
                    pruned.reclaimed += layer.size;
                }
            }
            self.delete(&mut state, &id)?;
            pruned.removed.push(Removed::Deleted(id));
            for id in
                self.delete_orphaned_parents(&mut state, image.meta.parent.clone(), &|id| {
                    in_use.contains(id) || kept.contains(id)
                })?
            {
                pruned.removed.push(Removed::Deleted(id));
            }
        }
        self.write_tags(&state)?;
        // Leftovers no image names: layers of a pull killed before its
        // image was recorded, blobs of deleted layers.
        let pinned = self.pinned();
        let mut layers = HashSet::new();
        let mut blobs = HashSet::new();
        for (id, image) in &state.images {
            blobs.insert(super::digest::hex_part(id).unwrap_or_default().to_owned());
            for layer in &image.meta.layers {
                layers.insert(hex(&layer.diff_id).to_owned());
                blobs.insert(hex(&layer.digest).to_owned());
            }
        }
        let pinned_hex: HashSet<String> = pinned.iter().map(|p| hex(p).to_owned()).collect();
        let dir = self.layers_dir();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| ImageError::io("read", &dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || layers.contains(&name) || pinned_hex.contains(&name) {
                continue;
            }
            let size = dir_size(&entry.path());
            let doomed = dir.join(format!(".tmp-rm-{name}"));
            if std::fs::rename(entry.path(), &doomed).is_ok() {
                std::fs::remove_dir_all(&doomed)
                    .map_err(|e| ImageError::io("remove", &doomed, e))?;
                pruned.reclaimed += size;
            }
        }
        let dir = self.blobs_dir();
        for entry in std::fs::read_dir(&dir)
            .map_err(|e| ImageError::io("read", &dir, e))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || blobs.contains(&name) || pinned_hex.contains(&name) {
                continue;
            }
            let size = entry.metadata().map_or(0, |m| m.len());
            if std::fs::remove_file(entry.path()).is_ok() {
                pruned.reclaimed += size;
            }
        }
        Ok(pruned)
    }

    /// `docker builder prune`: removes the images of build steps (the
    /// build cache) that are untagged, used by no container (`in_use`) and,
    /// unless `all`, not below a tagged image. Answers their ids and the
    /// bytes of layers no remaining image shares.
    pub fn prune_build_cache(
        &self,
        all: bool,
        in_use: &HashSet<String>,
    ) -> Result<(Vec<String>, u64), ImageError> {
        let mut state = self.lock();
        // Images that are a tagged image or below one (its ancestors).
        let mut needed = HashSet::new();
        if !all {
            let tagged: Vec<String> = state.tags.values().cloned().collect();
            for id in tagged {
                let mut next = Some(id);
                while let Some(id) = next.take() {
                    if !needed.insert(id.clone()) {
                        break;
                    }
                    next = state.images.get(&id).and_then(|i| i.meta.parent.clone());
                }
            }
        }
        let doomed: Vec<String> = state
            .images
            .iter()
            .filter(|(id, i)| {
                i.meta.build_key.is_some()
                    && state.tags_of(id).is_empty()
                    && !in_use.contains(*id)
                    && !needed.contains(*id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        // Counted once per layer: several doomed images may hold it.
        let mut counted = HashSet::new();
        let mut total = 0;
        for id in &doomed {
            if let Some(image) = state.images.get(id) {
                for layer in &image.meta.layers {
                    let shared = state.images.iter().any(|(other, i)| {
                        !doomed.contains(other)
                            && i.meta.layers.iter().any(|l| l.diff_id == layer.diff_id)
                    });
                    if !shared && counted.insert(layer.diff_id.clone()) {
                        total += layer.size;
                    }
                }
            }
        }
        for id in &doomed {
            self.delete(&mut state, id)?;
        }
        Ok((doomed, total))
    }

    /// Per image: its size and the part other images share.
    pub fn usage(&self) -> (Vec<Usage>, u64) {
        let state = self.lock();
        let mut users: HashMap<&str, usize> = HashMap::new();
        let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
        for image in state.images.values() {
            for layer in &image.meta.layers {
                *users.entry(layer.diff_id.as_str()).or_default() += 1;
                sizes.insert(layer.diff_id.as_str(), layer.size);
            }
        }
        let usage = state
            .images
            .iter()
            .map(|(id, image)| Usage {
                id: id.clone(),
                size: image.meta.layers.iter().map(|l| l.size).sum(),
                shared: image
                    .meta
                    .layers
                    .iter()
                    .filter(|l| users.get(l.diff_id.as_str()).is_some_and(|n| *n > 1))
                    .map(|l| l.size)
                    .sum(),
            })
            .collect();
        (usage, sizes.values().sum())
    }
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}
