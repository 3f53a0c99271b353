//! Reading image tarballs (`docker load`): docker-archives (`manifest.json` +
//! config + layer tars) and OCI image layouts (`oci-layout`, `index.json`,
//! `blobs/sha256/…`), including the combined form Docker ≥ 25 writes.
//!
//! The outer tar is streamed once to a staging directory: each regular file is
//! written under a number (never under its own name, so the tar's paths cannot
//! point anywhere) while its sha256 is computed; links are kept as a name map.
//! [`plan`] then reads the JSON documents and says, per image, which staged
//! files are its config and layers and which names it carries. Unpacking and
//! committing is the store's job. Writing archives lives in `vmctl_oci::archive`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use vmctl_oci::image::{
    self as oci, Descriptor, DockerManifestEntry, Index, Manifest, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
};

use super::digest::{self, HashingReader};
use super::reference::Named;
use super::ImageError;

/// A file of the archive, copied to the staging directory.
#[derive(Debug, Clone)]
pub struct StagedFile {
    pub path: PathBuf,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    pub size: u64,
}

/// The archive's files, staged on disk, by their (cleaned) archive path.
#[derive(Debug, Default)]
pub struct Staged {
    files: HashMap<String, StagedFile>,
    links: HashMap<String, String>,
}

/// One image found in an archive.
#[derive(Debug, Clone)]
pub struct PlannedImage {
    pub config: Vec<u8>,
    /// `sha256:<hex>` of the config: the image id.
    pub id: String,
    pub layers: Vec<PlannedLayer>,
    pub names: Vec<Named>,
    /// Digest of the OCI manifest it came from, if any.
    pub manifest_digest: Option<String>,
}

/// One layer blob of an image, as staged.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    /// Its path in the archive, for messages.
    pub name: String,
    pub file: StagedFile,
    pub media_type: String,
}

fn bad(message: impl Into<String>) -> ImageError {
    ImageError::BadArchive(message.into())
}

/// Cleans an archive path lexically; `None` when it climbs out.
fn clean(raw: &Path) -> Option<String> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for component in raw.components() {
        match component {
            Component::Normal(p) => parts.push(p),
            Component::ParentDir => {
                parts.pop()?;
            }
            _ => {}
        }
    }
    let joined: Vec<String> = parts
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Some(joined.join("/"))
}

impl Staged {
    /// Streams the archive from `reader` into `dir` (an existing empty directory).
    pub fn read(reader: impl Read, dir: &Path) -> Result<Self, ImageError> {
        let mut staged = Self::default();
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(ImageError::ReadArchive)?;
        for (n, entry) in entries.enumerate() {
            let mut entry = entry.map_err(ImageError::ReadArchive)?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let name = clean(Path::new(OsStr::from_bytes(&raw)))
                .ok_or_else(|| bad(format!("entry {shown} escapes the archive")))?;
            let link = entry
                .link_name_bytes()
                .map(|l| PathBuf::from(OsStr::from_bytes(&l)));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let path = dir.join(n.to_string());
                    let mut file =
                        File::create(&path).map_err(|e| ImageError::io("create", &path, e))?;
                    let mut hashing = HashingReader::new(&mut entry);
                    io::copy(&mut hashing, &mut file).map_err(ImageError::ReadArchive)?;
                    let file = StagedFile {
                        path,
                        digest: hashing.digest(),
                        size: hashing.count(),
                    };
                    staged.files.insert(name, file);
                }
                tar::EntryType::Symlink => {
                    let link = link.ok_or_else(|| bad(format!("symlink {shown} has no target")))?;
                    let base = Path::new(&name)
                        .parent()
                        .unwrap_or(Path::new(""))
                        .join(link);
                    let target = clean(&base)
                        .ok_or_else(|| bad(format!("symlink {shown} escapes the archive")))?;
                    staged.links.insert(name, target);
                }
                tar::EntryType::Link => {
                    let link =
                        link.ok_or_else(|| bad(format!("hardlink {shown} has no target")))?;
                    let target = clean(&link)
                        .ok_or_else(|| bad(format!("hardlink {shown} escapes the archive")))?;
                    staged.links.insert(name, target);
                }
                _ => {}
            }
        }
        Ok(staged)
    }

    /// The staged file at archive path `name`, following links.
    pub fn get(&self, name: &str) -> Option<&StagedFile> {
        let mut name = clean(Path::new(name))?;
        for _ in 0..16 {
            if let Some(file) = self.files.get(&name) {
                return Some(file);
            }
            name = self.links.get(&name)?.clone();
        }
        None
    }

    fn require(&self, name: &str) -> Result<&StagedFile, ImageError> {
        self.get(name)
            .ok_or_else(|| bad(format!("{name} is missing from the archive")))
    }

    fn read_bytes(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let file = self.require(name)?;
        std::fs::read(&file.path).map_err(|e| ImageError::io("read", &file.path, e))
    }

    fn read_json<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, ImageError> {
        serde_json::from_slice(&self.read_bytes(name)?).map_err(|source| ImageError::BadJson {
            file: name.to_owned(),
            source,
        })
    }

    /// The blob a descriptor points to, checked against its digest.
    fn blob(&self, descriptor: &Descriptor) -> Result<(String, &StagedFile), ImageError> {
        let hex = digest::hex_part(&descriptor.digest)
            .ok_or_else(|| bad(format!("unsupported digest {}", descriptor.digest)))?;
        let name = format!("blobs/sha256/{hex}");
        let file = self.require(&name)?;
        if file.digest != descriptor.digest {
            return Err(ImageError::BlobDigest {
                path: name,
                expected: descriptor.digest.clone(),
                actual: file.digest.clone(),
            });
        }
        Ok((name, file))
    }
}

/// The images of a staged archive: from `manifest.json` when present, else
/// from the OCI `index.json`.
pub fn plan(staged: &Staged) -> Result<Vec<PlannedImage>, ImageError> {
    let mut images: Vec<PlannedImage> = if staged.get("manifest.json").is_some() {
        plan_docker(staged)?
    } else if staged.get("index.json").is_some() {
        if staged.get("oci-layout").is_none() {
            return Err(bad("index.json without oci-layout"));
        }
        plan_oci(staged)?
    } else {
        return Err(bad("neither manifest.json nor index.json found"));
    };
    // The same image listed twice (once per tag) becomes one, with both names.
    let mut merged: Vec<PlannedImage> = Vec::new();
    for image in images.drain(..) {
        match merged.iter_mut().find(|m| m.id == image.id) {
            Some(existing) => {
                for name in image.names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
            }
            None => merged.push(image),
        }
    }
    if merged.is_empty() {
        return Err(bad("the archive holds no image"));
    }
    Ok(merged)
}

fn plan_docker(staged: &Staged) -> Result<Vec<PlannedImage>, ImageError> {
    let entries: Vec<DockerManifestEntry> = staged.read_json("manifest.json")?;
    let mut images = Vec::new();
    for entry in entries {
        let config = staged.read_bytes(&entry.config)?;
        let id = staged.require(&entry.config)?.digest.clone();
        let mut layers = Vec::new();
        for name in &entry.layers {
            let file = staged.require(name)?.clone();
            let media_type = sniff_media_type(&file.path)?;
            layers.push(PlannedLayer {
                name: name.clone(),
                file,
                media_type,
            });
        }
        let names = entry
            .repo_tags
            .iter()
            .map(|tag| {
                Named::parse(tag).map_err(|_| bad(format!("invalid tag {tag:?} in manifest.json")))
            })
            .collect::<Result<_, _>>()?;
        images.push(PlannedImage {
            config,
            id,
            layers,
            names,
            manifest_digest: None,
        });
    }
    Ok(images)
}

fn plan_oci(staged: &Staged) -> Result<Vec<PlannedImage>, ImageError> {
    let index: Index = staged.read_json("index.json")?;
    let mut images = Vec::new();
    for descriptor in &index.manifests {
        let manifest_descriptor = pick_manifest(staged, descriptor, 0)?;
        let (name, _) = staged.blob(&manifest_descriptor)?;
        let manifest: Manifest = staged.read_json(&name)?;
        let (config_name, config_file) = staged.blob(&manifest.config)?;
        let mut layers = Vec::new();
        for layer in &manifest.layers {
            let (name, file) = staged.blob(layer)?;
            layers.push(PlannedLayer {
                name,
                file: file.clone(),
                media_type: layer.media_type.clone(),
            });
        }
        images.push(PlannedImage {
            config: staged.read_bytes(&config_name)?,
            id: config_file.digest.clone(),
            layers,
            names: oci_names(descriptor)?,
            manifest_digest: Some(manifest_descriptor.digest.clone()),
        });
    }
    Ok(images)
}

/// The image manifest a descriptor of `index.json` leads to: itself, or for a
/// nested index the entry for this machine's platform (else the first).
fn pick_manifest(
    staged: &Staged,
    descriptor: &Descriptor,
    depth: usize,
) -> Result<Descriptor, ImageError> {
    let is_index = descriptor.media_type == oci::MEDIA_INDEX
        || descriptor.media_type == oci::MEDIA_DOCKER_LIST;
    if !is_index {
        return Ok(descriptor.clone());
    }
    if depth > 4 {
        return Err(bad("image indexes nest too deep"));
    }
    let (name, _) = staged.blob(descriptor)?;
    let nested: Index = staged.read_json(&name)?;
    let native = nested.manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == "linux" && p.architecture == oci::go_arch())
    });
    let chosen = native
        .or_else(|| nested.manifests.first())
        .ok_or_else(|| bad(format!("index {name} lists no manifest")))?;
    pick_manifest(staged, chosen, depth + 1)
}

/// The names of an `index.json` entry: the full name annotation, else a ref
/// name that is a whole reference (a bare tag names no repository).
fn oci_names(descriptor: &Descriptor) -> Result<Vec<Named>, ImageError> {
    let full = descriptor.annotations.get(ANNOTATION_IMAGE_NAME);
    let ref_name = descriptor
        .annotations
        .get(ANNOTATION_REF_NAME)
        .filter(|r| r.contains('/') || r.contains(':'));
    match full.or(ref_name) {
        Some(name) => Named::parse(name)
            .map(|n| vec![n])
            .map_err(|_| bad(format!("invalid image name {name:?} in index.json"))),
        None => Ok(Vec::new()),
    }
}

/// The layer media type matching the first bytes of a file.
fn sniff_media_type(path: &Path) -> Result<String, ImageError> {
    let file = File::open(path).map_err(|e| ImageError::io("open", path, e))?;
    let mut reader = BufReader::new(file);
    let head = reader
        .fill_buf()
        .map_err(|e| ImageError::io("read", path, e))?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        oci::MEDIA_LAYER_GZIP
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        oci::MEDIA_LAYER_ZSTD
    } else {
        oci::MEDIA_LAYER
    }
    .to_owned())
}

/// Opens a staged layer for unpacking.
pub fn open_layer(layer: &PlannedLayer) -> Result<BufReader<File>, ImageError> {
    File::open(&layer.file.path)
        .map(BufReader::new)
        .map_err(|e| ImageError::io("open", &layer.file.path, e))
}
