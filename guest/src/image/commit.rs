//! `docker commit`, the image side: a container's overlayfs upper directory
//! becomes a layer, and a new image is recorded on top of the container's.
//!
//! The upper directory is walked in sorted order into a tar, each entry
//! stored as `lstat` sees it: a symlink as a symlink (never the file it
//! names: a link to `/proc/1/environ` stays a link), a FIFO as a FIFO, a
//! regular file read from a descriptor opened with `O_NOFOLLOW`; sockets are
//! skipped and other device nodes refused (the unpacker refuses them too).
//! Overlayfs whiteouts (`0/0` char devices) become `.wh.NAME` files, opaque
//! directories (`trusted.overlay.opaque=y`) get a `.wh..wh..opq` entry, files
//! with several links inside the layer become hard links. The tar is hashed
//! (the diff-id) and gzipped into a blob (its digest) in one pass; the blob
//! is then unpacked by the same checked unpacker pulls use, so a committed
//! layer is stored exactly like a pulled one. Files the engine itself puts
//! in every container (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`
//! when left empty) are not part of the change, as in Docker, whose init
//! layer holds them.

use std::collections::HashMap;
use std::fs::File;
use std::fs::Metadata;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store::{Image, ImageMeta, LayerMeta};
use super::{ConfigFile, ImageError, ImageStore};
use crate::state::files::write_atomic;

/// The media type of committed layers (gzip, as `docker push` sends them).
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Mount points the engine creates in every container.
pub(super) const ENGINE_FILES: [&str; 3] = ["etc/hosts", "etc/hostname", "etc/resolv.conf"];

/// The diff-id of a tar with no entries (two zero blocks), Docker's
/// empty layer.
const EMPTY_TAR: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// The upper directory a commit makes its layer of.
#[derive(Debug, Clone, Copy)]
pub enum Upper<'a> {
    /// A container's, read and left as it is.
    Kept(&'a Path),
    /// One its owner is done with (a build step's scratch tree): when the
    /// tar holds it exactly, the store moves it into place as the layer
    /// instead of unpacking the tar again.
    Given(&'a Path),
}

/// Whether the upper directory's `etc` holds nothing but the engine's
/// (empty) mount points and is the lower `/etc` as it was (same mode and
/// owner; none below: the engine made it): overlayfs copied it up only for
/// those mount points, which Docker keeps in an init layer of its own.
pub(super) fn engine_only_etc(upper: &Path, lower: Option<&Metadata>) -> bool {
    let etc = upper.join("etc");
    let Ok(meta) = std::fs::symlink_metadata(&etc) else {
        return false;
    };
    if !meta.is_dir() {
        return false;
    }
    if File::open(&etc).is_ok_and(|dir| is_opaque(&dir)) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir(&etc) else {
        return false;
    };
    let only_mount_points = entries.flatten().all(|entry| {
        let name = Path::new("etc").join(entry.file_name());
        ENGINE_FILES.iter().any(|f| name == Path::new(f))
            && entry
                .metadata()
                .is_ok_and(|m| m.file_type().is_file() && m.len() == 0)
    });
    only_mount_points
        && lower.is_none_or(|l| {
            l.mode() == meta.mode() && l.uid() == meta.uid() && l.gid() == meta.gid()
        })
}

/// A writer that hashes what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn sha(hasher: &Sha256) -> String {
    format!("sha256:{}", hex::encode(hasher.clone().finalize()))
}

/// A layer's blob being written: what goes in (the plain tar) is hashed
/// (its diff-id), gzipped, and the gzip hashed too (its digest).
struct GzipBlob {
    tar: HashingWriter<flate2::write::GzEncoder<HashingWriter<BufWriter<File>>>>,
}

/// A written blob: the layer's diff-id, the blob's digest and size.
struct WrittenBlob {
    diff_id: String,
    digest: String,
    size: u64,
}

impl GzipBlob {
    fn create(path: &Path) -> Result<Self, ImageError> {
        let file = File::create(path).map_err(|e| ImageError::io("create", path, e))?;
        let gz = HashingWriter {
            inner: BufWriter::with_capacity(256 << 10, file),
            hasher: Sha256::new(),
        };
        Ok(Self {
            tar: HashingWriter {
                inner: flate2::write::GzEncoder::new(gz, flate2::Compression::fast()),
                hasher: Sha256::new(),
            },
        })
    }

    /// Ends the gzip stream and the file (at `path`).
    fn finish(self, path: &Path) -> Result<WrittenBlob, ImageError> {
        let diff_id = sha(&self.tar.hasher);
        let gz = self
            .tar
            .inner
            .finish()
            .map_err(|e| ImageError::io("write", path, e))?;
        let digest = sha(&gz.hasher);
        gz.inner
            .into_inner()
            .map_err(|e| ImageError::io("write", path, e.into_error()))?;
        let size = std::fs::metadata(path)
            .map_err(|e| ImageError::io("stat", path, e))?
            .len();
        Ok(WrittenBlob {
            diff_id,
            digest,
            size,
        })
    }
}

impl Write for GzipBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tar.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tar.flush()
    }
}

impl ImageStore {
    /// Commits `upper` as a new layer on `parent`, with `config`; tags it
    /// `tag` when given. Answers the new image id.
    pub fn commit_image(
        &self,
        upper: &Path,
        parent: &str,
        config: ConfigFile,
        tag: Option<&super::reference::Named>,
    ) -> Result<String, ImageError> {
        self.derive(Some(Upper::Kept(upper)), Some(parent), config, tag, None)
    }

    /// `docker import`: the tar `body` (plain, gzip or zstd) as the one
    /// layer of a new image with `config` (its history and rootfs are set
    /// here); tagged `tag` when given. The tar is stored as a commit's is
    /// (gzip blob, checked unpack), so a device node or a path out of the
    /// layer refuses the whole import and leaves nothing.
    pub fn import_image(
        &self,
        body: impl io::Read,
        mut config: ConfigFile,
        tag: Option<&super::reference::Named>,
    ) -> Result<String, ImageError> {
        let blob = self
            .tmp_dir()
            .join(format!("import-{:016x}", rand::random::<u64>()));
        let result = (|| {
            let mut out = GzipBlob::create(&blob)?;
            let mut plain = super::unpack::decompress(body)?;
            io::copy(&mut plain, &mut out).map_err(|source| ImageError::ReadLayer {
                entry: "(import)".to_owned(),
                source,
            })?;
            let written = out.finish(&blob)?;
            let (layer, _pin) = self.store_layer(&blob, written, None)?;
            config.rootfs = Default::default();
            self.record_commit(None, config, Some(layer), tag, None)
        })();
        let _ = std::fs::remove_file(&blob);
        result
    }

    /// `docker export`: the root filesystem at `root` (a container's merged
    /// view) as a tar written to `out`, walked as a commit walks an upper
    /// directory (links stored as links, nothing followed out of `root`),
    /// with the engine's mount points and device nodes as they are.
    pub fn export_tree(root: &Path, out: impl Write) -> Result<(), ImageError> {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        let mut walk = Walk::new(false, false);
        walk.whole = true;
        add_dir(
            &mut builder,
            &DirHandle::open(root)?,
            Path::new(""),
            &mut walk,
        )?;
        builder
            .into_inner()
            .and_then(|mut out| out.flush())
            .map_err(|e| ImageError::io("write", root, e))
    }

    /// A build step's image on `parent` (none: `FROM scratch`): with
    /// `upper` as its new layer, or (a metadata-only step) the parent's
    /// layers and a new config. The step's cache key is kept with it, for
    /// [`Self::cached_step`].
    pub fn build_step(
        &self,
        upper: Option<Upper<'_>>,
        parent: Option<&str>,
        config: ConfigFile,
        build_key: &str,
    ) -> Result<String, ImageError> {
        self.derive(upper, parent, config, None, Some(build_key.to_owned()))
    }

    /// The image an earlier build made from `parent` with the step whose
    /// cache key is `build_key` (the newest, if several), while it exists.
    pub fn cached_step(&self, parent: Option<&str>, build_key: &str) -> Option<String> {
        let state = self.lock();
        let parent = match parent {
            Some(parent) => Some(super::store::lookup(&state, parent).ok()?),
            None => None,
        };
        state
            .images
            .iter()
            .filter(|(_, i)| {
                i.meta.parent == parent && i.meta.build_key.as_deref() == Some(build_key)
            })
            .max_by(|a, b| a.1.meta.loaded.cmp(&b.1.meta.loaded))
            .map(|(id, _)| id.clone())
    }

    /// `--cache-from`: the image `source` was built, step by step, on what
    /// `parent` is (its history and layers begin with the parent's), and
    /// its next step was made by `created_by`. Answers the index of that
    /// history entry, or `None` when `source` holds no such step.
    pub fn cache_from_step(
        &self,
        parent: Option<&str>,
        source: &str,
        created_by: &str,
    ) -> Option<usize> {
        let state = self.lock();
        let source = &state.images[&super::store::lookup(&state, source).ok()?];
        let (history, layers) = match parent {
            Some(parent) => {
                let parent = &state.images[&super::store::lookup(&state, parent).ok()?];
                (parent.config.history.clone(), parent.meta.layers.clone())
            }
            None => (Vec::new(), Vec::new()),
        };
        let n = history.len();
        let next = source.config.history.get(n)?;
        let same_history = source.config.history[..n]
            .iter()
            .zip(&history)
            .all(|(a, b)| a.created_by == b.created_by && a.empty_layer == b.empty_layer);
        let same_layers = source.meta.layers.len() >= layers.len()
            && source.meta.layers[..layers.len()]
                .iter()
                .zip(&layers)
                .all(|(a, b)| a.diff_id == b.diff_id);
        (same_history && same_layers && next.created_by == created_by).then_some(n)
    }

    /// Makes the image of a step found in a `--cache-from` image (see
    /// [`Self::cache_from_step`]): on `parent`, with `source`'s layer of
    /// that step (if it has one) and its history entry, and `config` (the
    /// step's config, whose history is replaced). Kept as a build step of
    /// its own with `build_key`, as Docker keeps what it restores.
    pub fn restore_step(
        &self,
        parent: Option<&str>,
        source: &str,
        index: usize,
        mut config: ConfigFile,
        build_key: &str,
    ) -> Result<String, ImageError> {
        let (entry, layer) = {
            let mut state = self.lock();
            let source_id = super::store::lookup(&state, source)?;
            let parent_id = match parent {
                Some(parent) => Some(super::store::lookup(&state, parent)?),
                None => None,
            };
            // The source's own last step: the source itself, as Docker
            // answers it, now known to stand on the stage's image.
            let last = state.images[&source_id].config.history.len() == index + 1;
            if last {
                if let Some(image) = state.images.get_mut(&source_id) {
                    if image.meta.parent.is_none() && parent_id.as_ref() != Some(&source_id) {
                        image.meta.parent = parent_id;
                        let meta = image.meta.clone();
                        self.write_meta(&source_id, &meta)?;
                    }
                }
                return Ok(source_id);
            }
            let source = &state.images[&source_id];
            let entry = source.config.history[index].clone();
            let before = source.config.history[..index]
                .iter()
                .filter(|h| !h.empty_layer)
                .count();
            let layer = (!entry.empty_layer)
                .then(|| source.meta.layers.get(before).cloned())
                .flatten();
            (entry, layer)
        };
        config.history.truncate(index);
        config.created.clone_from(&entry.created);
        config.history.push(entry);
        let _pin = layer
            .as_ref()
            .map(|l| self.pin([l.diff_id.clone(), l.digest.clone()]));
        self.record_commit(parent, config, layer, None, Some(build_key.to_owned()))
    }

    fn derive(
        &self,
        upper: Option<Upper<'_>>,
        parent: Option<&str>,
        config: ConfigFile,
        tag: Option<&super::reference::Named>,
        build_key: Option<String>,
    ) -> Result<String, ImageError> {
        let Some(upper) = upper else {
            return self.record_commit(parent, config, None, tag, build_key);
        };
        let (upper, given) = match upper {
            Upper::Kept(path) => (path, false),
            Upper::Given(path) => (path, true),
        };
        let blob = self
            .tmp_dir()
            .join(format!("commit-{:016x}", rand::random::<u64>()));
        let lower_etc = parent.and_then(|p| self.lower_etc(p));
        let skip_etc = engine_only_etc(upper, lower_etc.as_ref());
        let result = self
            .commit_layer(upper, given, &blob, skip_etc)
            .and_then(|(layer, _pin)| {
                // A build step that changed nothing has no layer, as in
                // dockerd's classic builder (history: empty_layer).
                let mut config = config;
                let layer = if build_key.is_some() && layer.diff_id == EMPTY_TAR {
                    if let Some(entry) = config.history.last_mut() {
                        entry.empty_layer = true;
                    }
                    None
                } else {
                    Some(layer)
                };
                self.record_commit(parent, config, layer, tag, build_key)
            });
        let _ = std::fs::remove_file(&blob);
        result
    }

    /// The `lstat` of `/etc` in image `reference`'s top-most layer that has
    /// one (none when no layer has it, or it was whited out).
    fn lower_etc(&self, reference: &str) -> Option<Metadata> {
        let layers = self.resolve(reference).ok()?.layers;
        let meta = layers
            .iter()
            .rev()
            .find_map(|l| std::fs::symlink_metadata(l.join("etc")).ok())?;
        meta.is_dir().then_some(meta)
    }

    /// Turns `upper` into a stored layer, pinned until its image is recorded.
    /// `given`: the caller is done with `upper` ([`Upper::Given`]).
    /// `skip_etc`: leave out the upper's `etc`, which holds nothing but the
    /// engine's mount points (see [`engine_only_etc`]).
    fn commit_layer(
        &self,
        upper: &Path,
        given: bool,
        blob: &Path,
        skip_etc: bool,
    ) -> Result<(LayerMeta, super::prune::Pin<'_>), ImageError> {
        let mut builder = tar::Builder::new(GzipBlob::create(blob)?);
        builder.mode(tar::HeaderMode::Complete);
        let mut walk = Walk::new(skip_etc, given);
        // A container never started has no upper directory: an empty layer.
        let exists = upper.is_dir();
        if exists {
            if given {
                walk.tidy_xattrs(upper, upper)?;
            }
            add_dir(
                &mut builder,
                &DirHandle::open(upper)?,
                Path::new(""),
                &mut walk,
            )?;
        }
        let written = builder
            .into_inner()
            .map_err(|e| ImageError::io("write", blob, e))?
            .finish(blob)?;
        // A given tree the tar holds exactly is the layer itself.
        let adopt = (given && exists && walk.exact).then_some((upper, walk.size));
        self.store_layer(blob, written, adopt)
    }

    /// Stores the written `blob` as a layer, pinned until its image is
    /// recorded: beside the layer when the same change exists already,
    /// else `adopt`'s tree (which the tar holds exactly, of that size)
    /// renamed into place, else the blob unpacked.
    fn store_layer(
        &self,
        blob: &Path,
        written: WrittenBlob,
        adopt: Option<(&Path, u64)>,
    ) -> Result<(LayerMeta, super::prune::Pin<'_>), ImageError> {
        let WrittenBlob {
            diff_id,
            digest,
            size: blob_size,
        } = written;
        let pin = self.pin([diff_id.clone(), digest.clone()]);
        let size = match (self.layer_size(&diff_id), adopt) {
            // The same change exists already: keep its layer, add this blob.
            (Some(size), _) => self.keep_blob(blob, &digest).map(|()| size)?,
            (None, Some((tree, size))) => {
                if self.adopt_layer(tree, blob, &digest, &diff_id)? {
                    size
                } else {
                    self.unpack_blob(blob, &digest, &diff_id)?
                }
            }
            (None, None) => self.unpack_blob(blob, &digest, &diff_id)?,
        };
        let layer = LayerMeta {
            diff_id,
            digest,
            media_type: LAYER_TYPE.to_owned(),
            blob_size,
            size,
        };
        Ok((layer, pin))
    }

    /// Stores the gzip `blob` (`digest`) beside a layer that exists already.
    fn keep_blob(&self, blob: &Path, digest: &str) -> Result<(), ImageError> {
        let target = self.blob_path(digest);
        if !target.exists() {
            std::fs::copy(blob, &target).map_err(|e| ImageError::io("store blob", &target, e))?;
        }
        Ok(())
    }

    /// Unpacks the gzip `blob` into the layer `diff_id` (checked as a
    /// pull's), storing the blob; answers the layer's size.
    fn unpack_blob(&self, blob: &Path, digest: &str, diff_id: &str) -> Result<u64, ImageError> {
        let reader = BufReader::new(File::open(blob).map_err(|e| ImageError::io("open", blob, e))?);
        self.unpack_pulled(reader, digest, diff_id)
    }

    /// Makes the directory `upper`, which the tar `blob` holds exactly, the
    /// stored layer `diff_id` itself, and `blob` its blob (`digest`): both
    /// are renamed into place after a sync of the filesystem (the blob
    /// with it), as an unpacked pull is synced. Answers `false` when
    /// `upper` cannot be renamed there (another filesystem), for the
    /// caller to unpack the blob.
    fn adopt_layer(
        &self,
        upper: &Path,
        blob: &Path,
        digest: &str,
        diff_id: &str,
    ) -> Result<bool, ImageError> {
        super::load::sync_filesystem(&self.layers_dir());
        let _state = self.lock();
        let target = self.layer_path(diff_id);
        if !target.exists() {
            match std::fs::rename(upper, &target) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => return Ok(false),
                Err(e) => return Err(ImageError::io("commit layer", &target, e)),
            }
        }
        let stored = self.blob_path(digest);
        if !stored.exists() {
            std::fs::rename(blob, &stored)
                .map_err(|e| ImageError::io("commit blob", &stored, e))?;
        }
        Ok(true)
    }

    /// Records a committed image: `parent`'s layers plus `layer` (if any),
    /// with `config`; tags it `tag` when given. Answers the new image id.
    fn record_commit(
        &self,
        parent: Option<&str>,
        mut config: ConfigFile,
        layer: Option<LayerMeta>,
        tag: Option<&super::reference::Named>,
        build_key: Option<String>,
    ) -> Result<String, ImageError> {
        let mut state = self.lock();
        let parent_id = match parent {
            Some(parent) => Some(super::store::lookup(&state, parent)?),
            None => None,
        };
        let mut layers = parent_id
            .as_ref()
            .map(|id| state.images[id].meta.layers.clone())
            .unwrap_or_default();
        layers.extend(layer);
        config.rootfs.kind = "layers".to_owned();
        config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
        let bytes = serde_json::to_vec(&config).map_err(|source| ImageError::Encode {
            what: "image config",
            source,
        })?;
        let id = super::digest::of_bytes(&bytes);
        for layer in &layers {
            let path = self.layer_path(&layer.diff_id);
            if !path.is_dir() {
                let gone = io::Error::new(io::ErrorKind::NotFound, "layer removed during commit");
                return Err(ImageError::io("use layer", path, gone));
            }
        }
        let config_blob = self.blob_path(&id);
        if !config_blob.exists() {
            write_atomic(&config_blob, &bytes)
                .map_err(|e| ImageError::io("write", &config_blob, e))?;
        }
        let now = crate::state::time::now_rfc3339();
        let meta = ImageMeta {
            layers,
            loaded: now.clone(),
            last_tag_time: tag.map(|_| now),
            repo_digests: Vec::new(),
            parent: parent_id.filter(|p| *p != id),
            build_key,
        };
        self.write_meta(&id, &meta)?;
        state.images.insert(id.clone(), Image { config, meta });
        if let Some(tag) = tag {
            state.tags.insert(tag.full(), id.clone());
            self.write_tags(&state)?;
        }
        Ok(id)
    }

    /// The config file of an image (to build a commit on).
    pub fn config_file(&self, reference: &str) -> Result<ConfigFile, ImageError> {
        let state = self.lock();
        let id = super::store::lookup(&state, reference)?;
        Ok(state.images[&id].config.clone())
    }
}

/// An open directory of the upper tree. Its entries are reached through
/// `/proc/self/fd/N/NAME`: the directory is the one opened, whatever its
/// path names now, and only the last component is looked up, never
/// followed. A running container (`commit --pause=false`) that swaps a
/// directory for a symlink to `/` cannot lead the walk out of its upper dir.
pub(super) struct DirHandle {
    dir: File,
    /// The directory's path, for messages.
    shown: PathBuf,
}

impl DirHandle {
    pub(super) fn open(path: &Path) -> Result<Self, ImageError> {
        let dir =
            open_nofollow(path, libc::O_DIRECTORY).map_err(|e| ImageError::io("open", path, e))?;
        Ok(Self {
            dir,
            shown: path.to_owned(),
        })
    }

    /// A path naming `name` inside this very directory.
    fn at(&self, name: &std::ffi::OsStr) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.dir.as_raw_fd())).join(name)
    }

    /// The names of the entries, sorted.
    pub(super) fn names(&self) -> Result<Vec<std::ffi::OsString>, ImageError> {
        let mut names: Vec<std::ffi::OsString> =
            std::fs::read_dir(self.at(std::ffi::OsStr::new("")))
                .map_err(|e| ImageError::io("read", &self.shown, e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| ImageError::io("read", &self.shown, e))?;
        names.sort();
        Ok(names)
    }

    /// The `lstat` of the entry `name`.
    pub(super) fn lstat(&self, name: &std::ffi::OsStr) -> Result<Metadata, ImageError> {
        std::fs::symlink_metadata(self.at(name))
            .map_err(|e| ImageError::io("stat", self.shown.join(name), e))
    }

    /// The open directory.
    pub(super) fn file(&self) -> &File {
        &self.dir
    }

    /// The child directory `name`, if it still is the directory `meta` saw.
    pub(super) fn child(
        &self,
        name: &std::ffi::OsStr,
        meta: &Metadata,
    ) -> Result<Self, ImageError> {
        let shown = self.shown.join(name);
        let dir = open_nofollow(&self.at(name), libc::O_DIRECTORY)
            .map_err(|e| ImageError::io("open", &shown, e))?;
        let opened = dir
            .metadata()
            .map_err(|e| ImageError::io("stat", &shown, e))?;
        if opened.ino() != meta.ino() || opened.dev() != meta.dev() {
            return Err(ImageError::io("open", &shown, replaced()));
        }
        Ok(Self { dir, shown })
    }
}

/// What a walk of an upper directory into a tar carries along.
struct Walk {
    /// Files with several links: the name each was first stored under.
    links: HashMap<(u64, u64), PathBuf>,
    /// Leave out the top `etc` (see [`engine_only_etc`]).
    skip_etc: bool,
    /// The tree is the store's to keep: clear overlayfs' own bookkeeping
    /// (`origin`, `impure`, `nlink`, the upper root's `uuid`) from each
    /// entry as it goes by.
    tidy: bool,
    /// Whether the tar holds the tree exactly as it is on disk: nothing
    /// left out, and no attribute the tar does not carry but overlayfs'
    /// opaque marks (which it carries as `.wh..wh..opq`). Only such a tree
    /// can become the layer itself.
    exact: bool,
    /// A whole root filesystem (`docker export`), not a change: the
    /// engine's mount points are part of it, and device nodes are stored
    /// as device entries (a layer refuses them).
    whole: bool,
    /// The bytes of the regular files walked (every name of a hard link).
    size: u64,
}

impl Walk {
    fn new(skip_etc: bool, tidy: bool) -> Self {
        Self {
            links: HashMap::new(),
            skip_etc,
            tidy,
            exact: true,
            whole: false,
            size: 0,
        }
    }

    /// Clears overlayfs' bookkeeping attributes of the entry at `inside`
    /// (shown as `path`); any other attribute, which the tar would not
    /// carry, makes the walk inexact.
    fn tidy_xattrs(&mut self, inside: &Path, path: &Path) -> Result<(), ImageError> {
        for name in
            list_xattrs(inside).map_err(|e| ImageError::io("list attributes of", path, e))?
        {
            match name.as_bytes() {
                b"trusted.overlay.opaque" => {}
                b"trusted.overlay.origin"
                | b"trusted.overlay.impure"
                | b"trusted.overlay.nlink"
                | b"trusted.overlay.uuid" => {
                    remove_xattr(inside, &name)
                        .map_err(|e| ImageError::io("clear attributes of", path, e))?;
                }
                _ => self.exact = false,
            }
        }
        Ok(())
    }
}

/// The extended attribute names of `path` (not following a last link).
fn list_xattrs(path: &Path) -> io::Result<Vec<std::ffi::CString>> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: a NUL-terminated path and a live buffer of the given length.
        let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            buf.truncate(n as usize);
            break;
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(Vec::new()),
            _ => return Err(err),
        }
    }
    Ok(buf
        .split(|b| *b == 0)
        .filter(|name| !name.is_empty())
        .filter_map(|name| std::ffi::CString::new(name).ok())
        .collect())
}

/// `lremovexattr(2)`: never follows a last link.
fn remove_xattr(path: &Path, name: &std::ffi::CStr) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated strings.
    if unsafe { libc::lremovexattr(c.as_ptr(), name.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn open_nofollow(path: &Path, flags: i32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | flags)
        .open(path)
}

fn replaced() -> io::Error {
    io::Error::other("replaced while the layer was written")
}

/// Adds the entries of `dir` (at `rel` in the layer), sorted, recursively.
/// Every entry is looked at with `lstat` and stored as what it is: a
/// symlink as a symlink (never what it points to), a FIFO as a FIFO, a
/// regular file from a descriptor opened without following links.
/// Sockets are skipped, as Docker skips them.
fn add_dir<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &DirHandle,
    rel: &Path,
    walk: &mut Walk,
) -> Result<(), ImageError> {
    for file_name in dir.names()? {
        let path = dir.shown.join(&file_name);
        let inside = dir.at(&file_name);
        let name = rel.join(&file_name);
        let meta =
            std::fs::symlink_metadata(&inside).map_err(|e| ImageError::io("stat", &path, e))?;
        let kind = meta.file_type();
        if !walk.whole
            && kind.is_file()
            && meta.len() == 0
            && ENGINE_FILES.iter().any(|f| name == Path::new(f))
        {
            walk.exact = false;
            continue;
        }
        if walk.skip_etc && rel.as_os_str().is_empty() && file_name == "etc" {
            walk.exact = false;
            continue;
        }
        if walk.tidy {
            walk.tidy_xattrs(&inside, &path)?;
        }
        let io = |e| ImageError::io("add to the layer", &path, e);
        if walk.whole && (kind.is_char_device() || kind.is_block_device()) {
            let entry = if kind.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut header = header_from(&meta, entry);
            header.set_size(0);
            let rdev = meta.rdev();
            header
                .set_device_major(libc::major(rdev))
                .and_then(|()| header.set_device_minor(libc::minor(rdev)))
                .map_err(io)?;
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(io)?;
            continue;
        }
        if kind.is_char_device() && meta.rdev() == 0 {
            let parent = name.parent().unwrap_or(Path::new(""));
            let whiteout = parent.join(format!(".wh.{}", file_name.to_string_lossy()));
            let mut header = header_from(&meta, tar::EntryType::Regular);
            header.set_size(0);
            builder
                .append_data(&mut header, &whiteout, io::empty())
                .map_err(io)?;
            continue;
        }
        if kind.is_char_device() || kind.is_block_device() {
            return Err(ImageError::Unsupported(format!(
                "cannot commit the device node /{}",
                name.display()
            )));
        }
        if kind.is_socket() {
            walk.exact = false;
            continue;
        }
        if kind.is_symlink() {
            let target =
                std::fs::read_link(&inside).map_err(|e| ImageError::io("read link", &path, e))?;
            let mut header = header_from(&meta, tar::EntryType::Symlink);
            header.set_size(0);
            builder
                .append_link(&mut header, &name, &target)
                .map_err(io)?;
            continue;
        }
        if kind.is_fifo() {
            let mut header = header_from(&meta, tar::EntryType::Fifo);
            header.set_size(0);
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(io)?;
            continue;
        }
        if kind.is_dir() {
            let child = dir.child(&file_name, &meta)?;
            let mut header = header_from(&meta, tar::EntryType::Directory);
            header.set_size(0);
            builder
                .append_data(&mut header, &name, io::empty())
                .map_err(io)?;
            if is_opaque(&child.dir) {
                let mut header = header_from(&meta, tar::EntryType::Regular);
                header.set_size(0);
                header.set_mode(0o644);
                builder
                    .append_data(&mut header, name.join(".wh..wh..opq"), io::empty())
                    .map_err(io)?;
            }
            add_dir(builder, &child, &name, walk)?;
            continue;
        }
        walk.size += meta.len();
        if meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = walk.links.get(&key) {
                let mut header = header_from(&meta, tar::EntryType::Link);
                header.set_size(0);
                builder.append_link(&mut header, &name, first).map_err(io)?;
                continue;
            }
            walk.links.insert(key, name.clone());
        }
        add_file(builder, &inside, &path, &name, &meta)?;
    }
    Ok(())
}

/// Adds the regular file at `inside` (shown as `path`) as `name`. It is
/// first opened `O_PATH` (which opens nothing: a device node swapped in
/// since the `lstat` reaches no driver) and must still be that regular
/// file; only then is it reopened for reading. A file that shrinks while it
/// is read (a container committed without pause) is padded with zeros to
/// the size in its header, one that grows is cut there, so the tar stays
/// well formed.
fn add_file<W: Write>(
    builder: &mut tar::Builder<W>,
    inside: &Path,
    path: &Path,
    name: &Path,
    meta: &Metadata,
) -> Result<(), ImageError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let handle =
        open_nofollow(inside, libc::O_PATH).map_err(|e| ImageError::io("open", path, e))?;
    let opened = handle
        .metadata()
        .map_err(|e| ImageError::io("stat", path, e))?;
    if !opened.is_file() || opened.ino() != meta.ino() || opened.dev() != meta.dev() {
        return Err(ImageError::io("add to the layer", path, replaced()));
    }
    let reopen = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
    // The magic link of our own descriptor: following it is the point.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&reopen)
        .map_err(|e| ImageError::io("open", path, e))?;
    let size = opened.len();
    let mut header = header_from(&opened, tar::EntryType::Regular);
    header.set_size(size);
    let data = file.take(size).chain(io::repeat(0)).take(size);
    builder
        .append_data(&mut header, name, data)
        .map_err(|e| ImageError::io("add to the layer", path, e))
}

fn header_from(meta: &Metadata, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(meta.mode() & 0o7777);
    header.set_uid(u64::from(meta.uid()));
    header.set_gid(u64::from(meta.gid()));
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header
}

/// Whether overlayfs marked the directory `dir` opaque (its lower
/// contents hidden).
pub(super) fn is_opaque(dir: &File) -> bool {
    let mut value = [0u8; 4];
    // SAFETY: a live descriptor, a NUL-terminated name and a live buffer of
    // the given length.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            c"trusted.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The entries (type, path, link target) of a tar of `upper`.
    fn entries_of(upper: &Path) -> Vec<(tar::EntryType, String, Option<String>, Vec<u8>)> {
        let mut builder = tar::Builder::new(Vec::new());
        let dir = DirHandle::open(upper).unwrap();
        add_dir(
            &mut builder,
            &dir,
            Path::new(""),
            &mut Walk::new(false, false),
        )
        .unwrap();
        let bytes = builder.into_inner().unwrap();
        let mut archive = tar::Archive::new(&bytes[..]);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let kind = e.header().entry_type();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                (kind, path, link, data)
            })
            .collect()
    }

    #[test]
    fn links_fifos_and_hardlinks_are_stored_as_themselves() {
        let dir = tempfile::tempdir().unwrap();
        let upper = dir.path();
        std::os::unix::fs::symlink("/proc/self/environ", upper.join("a")).unwrap();
        std::fs::create_dir(upper.join("d")).unwrap();
        std::os::unix::fs::symlink("../../../etc", upper.join("d/up")).unwrap();
        nix::unistd::mkfifo(
            &upper.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        std::fs::write(upper.join("file"), b"data").unwrap();
        std::fs::hard_link(upper.join("file"), upper.join("same")).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(upper.join("sock")).unwrap();

        let entries = entries_of(upper);
        let find = |name: &str| {
            entries
                .iter()
                .find(|e| e.1.trim_end_matches('/') == name)
                .unwrap_or_else(|| panic!("{name} missing from {entries:?}"))
        };
        let a = find("a");
        assert_eq!(a.0, tar::EntryType::Symlink);
        assert_eq!(a.2.as_deref(), Some("/proc/self/environ"));
        assert!(a.3.is_empty(), "the link's target was read");
        assert_eq!(find("d").0, tar::EntryType::Directory);
        assert_eq!(find("d/up").0, tar::EntryType::Symlink);
        assert_eq!(find("fifo").0, tar::EntryType::Fifo);
        assert_eq!(find("file").0, tar::EntryType::Regular);
        assert_eq!(find("file").3, b"data");
        let same = find("same");
        assert_eq!(same.0, tar::EntryType::Link);
        assert_eq!(same.2.as_deref(), Some("file"));
        assert!(
            !entries.iter().any(|e| e.1 == "sock"),
            "sockets are skipped"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_link_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let handle = DirHandle::open(dir.path()).unwrap();
        let seen = std::fs::symlink_metadata(dir.path().join("d")).unwrap();
        let file_seen = std::fs::symlink_metadata(dir.path().join("f")).unwrap();
        // Between the walk's lstat and its open, both become links out.
        std::fs::remove_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/", dir.path().join("d")).unwrap();
        std::fs::remove_file(dir.path().join("f")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("f")).unwrap();
        assert!(handle.child(std::ffi::OsStr::new("d"), &seen).is_err());
        let mut builder = tar::Builder::new(Vec::new());
        let inside = handle.at(std::ffi::OsStr::new("f"));
        let err = add_file(
            &mut builder,
            &inside,
            &dir.path().join("f"),
            Path::new("f"),
            &file_seen,
        )
        .unwrap_err();
        assert!(err.to_string().contains("f"), "{err}");
    }

    #[test]
    fn device_nodes_other_than_whiteouts_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        nix::sys::stat::mknod(
            &dir.path().join("zero"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
            nix::sys::stat::makedev(1, 5),
        )
        .unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        let err = add_dir(
            &mut builder,
            &DirHandle::open(dir.path()).unwrap(),
            Path::new(""),
            &mut Walk::new(false, false),
        )
        .unwrap_err();
        assert!(err.to_string().contains("device node /zero"), "{err}");
    }
}
