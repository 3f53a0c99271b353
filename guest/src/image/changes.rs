//! `docker diff`: what a container changed, from its overlayfs upper
//! directory and the image's layers below it, the way dockerd's overlay
//! driver says it (`archive.OverlayChanges` of dockerd 20.10).
//!
//! The upper directory is walked in sorted order, each entry seen with
//! `lstat` through the directory opened before it (a running container
//! that swaps a directory for a symlink cannot lead the walk out, as in
//! [`super::commit`]). An entry is *deleted* when it is a whiteout (a `0/0`
//! character device) or an opaque directory; *modified* when a layer has
//! the path (a directory only when its mode, size or time differ there);
//! else *added*. The parent of an added or deleted entry is modified
//! unless it was reported already. The engine's own mount points (an
//! `/etc` that holds nothing else) are not a change, as in Docker, whose
//! init layer holds them. A layer's path is looked up inside the layer,
//! never through a link out of it.

use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::commit::{engine_only_etc, is_opaque, DirHandle, ENGINE_FILES};
use super::ImageError;

/// What happened to a path, as the API numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Modified = 0,
    Added = 1,
    Deleted = 2,
}

/// One change: an absolute path in the container and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub path: String,
    pub kind: ChangeKind,
}

/// The changes of the container whose upper directory is `upper`, on the
/// image whose layers are `layers` (lowest first).
pub fn changes(upper: &Path, layers: &[PathBuf]) -> Result<Vec<Change>, ImageError> {
    let mut walk = Walk {
        layers,
        changes: Vec::new(),
        changed_dirs: std::collections::HashSet::new(),
    };
    if !upper.is_dir() {
        return Ok(Vec::new());
    }
    let lower_etc = walk.in_layers("etc").filter(Metadata::is_dir);
    let skip_etc = engine_only_etc(upper, lower_etc.as_ref());
    walk.dir(&DirHandle::open(upper)?, "", skip_etc)?;
    Ok(walk.changes)
}

struct Walk<'a> {
    layers: &'a [PathBuf],
    changes: Vec<Change>,
    changed_dirs: std::collections::HashSet<String>,
}

impl Walk<'_> {
    /// The `lstat` of `rel` in the top-most layer that has it.
    fn in_layers(&self, rel: &str) -> Option<Metadata> {
        self.layers
            .iter()
            .rev()
            .find_map(|layer| lstat_in(layer, rel))
    }

    fn dir(&mut self, dir: &DirHandle, rel: &str, skip_etc: bool) -> Result<(), ImageError> {
        for name in dir.names()? {
            let name_text = name.to_string_lossy();
            let path = if rel.is_empty() {
                name_text.into_owned()
            } else {
                format!("{rel}/{name_text}")
            };
            let meta = dir.lstat(&name)?;
            if meta.is_file()
                && meta.len() == 0
                && ENGINE_FILES
                    .iter()
                    .any(|f| Path::new(&path) == Path::new(f))
            {
                continue;
            }
            if skip_etc && rel.is_empty() && name == "etc" {
                continue;
            }
            let child = meta.is_dir().then(|| dir.child(&name, &meta)).transpose()?;
            let whiteout = meta.file_type().is_char_device() && meta.rdev() == 0;
            let opaque = child.as_ref().is_some_and(|c| is_opaque(c.file()));
            let kind = if whiteout || opaque {
                ChangeKind::Deleted
            } else {
                match self.in_layers(&path) {
                    None => ChangeKind::Added,
                    Some(lower) if lower.is_dir() && meta.is_dir() && same_dir(&lower, &meta) => {
                        // Only the parent of a change: no change itself.
                        if let Some(child) = &child {
                            self.dir(child, &path, false)?;
                        }
                        continue;
                    }
                    Some(_) => ChangeKind::Modified,
                }
            };
            if meta.is_dir() {
                self.changed_dirs.insert(path.clone());
            }
            if kind != ChangeKind::Modified
                && !rel.is_empty()
                && self.changed_dirs.insert(rel.to_owned())
            {
                self.changes.push(Change {
                    path: format!("/{rel}"),
                    kind: ChangeKind::Modified,
                });
            }
            self.changes.push(Change {
                path: format!("/{path}"),
                kind,
            });
            if let Some(child) = &child {
                self.dir(child, &path, false)?;
            }
        }
        Ok(())
    }
}

/// dockerd's test for a directory that is only there as a parent: the same
/// size, mode and modification time as in the layer (times equal to the
/// second when either has no nanoseconds, as tars keep none).
fn same_dir(lower: &Metadata, upper: &Metadata) -> bool {
    let same_time = lower.mtime() == upper.mtime()
        && (lower.mtime_nsec() == upper.mtime_nsec()
            || lower.mtime_nsec() == 0
            || upper.mtime_nsec() == 0);
    lower.len() == upper.len() && lower.mode() == upper.mode() && same_time
}

/// The `lstat` of `rel` (a relative path) in `layer`, its parents
/// resolved inside the layer.
fn lstat_in(layer: &Path, rel: &str) -> Option<Metadata> {
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let parent =
        crate::runtime::in_root::open_path(layer, if parent.is_empty() { "." } else { parent })
            .ok()?;
    let at = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&parent)
    ));
    std::fs::symlink_metadata(at.join(name)).ok()
}
