//! Writes image tarballs that are at once a docker-archive and an OCI image
//! layout, the format `docker save` writes since Docker 25:
//!
//! ```text
//! blobs/sha256/<hex>   configs, layers and OCI manifests, by digest
//! index.json           OCI index: one manifest descriptor per tag, annotated
//!                      with the full name and the tag
//! manifest.json        docker-archive: [{Config, RepoTags, Layers}] pointing
//!                      into blobs/
//! oci-layout           {"imageLayoutVersion": "1.0.0"}
//! repositories         legacy docker-archive tag map
//! ```
//!
//! Entries are written in sorted order with fixed owners and mtimes, so the
//! same images always give the same bytes. Used by the guest's `docker save`
//! and by `vmctl-image` for the built-in `hello` image; reading archives is
//! the guest's job (`vmctl_guest::image::archive`).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::image::{
    Descriptor, DockerManifestEntry, Index, Manifest, OciLayout, ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME, MEDIA_INDEX, MEDIA_MANIFEST,
};

/// A name of an image, in both spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// `docker.io/library/hello:latest`
    pub full: String,
    /// `hello:latest`, as Docker shows it.
    pub familiar: String,
}

/// One image to write: its config and layer blobs, and its names.
#[derive(Debug, Clone)]
pub struct ArchiveImage {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    pub names: Vec<ImageName>,
}

/// Where the bytes of config and layer blobs come from.
pub trait BlobSource {
    /// Opens the blob with digest `sha256:<hex>`.
    fn open(&mut self, digest: &str) -> io::Result<Box<dyn Read + '_>>;
}

/// Errors of writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("blob digest {0} is not sha256:<hex>")]
    BadDigest(String),
    #[error("cannot read blob {digest}")]
    ReadBlob {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error("blob {digest} has {actual} bytes, its descriptor says {expected}")]
    BlobSize {
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("cannot write {path} into the archive")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// A blob to write: bytes we made here, or a blob from the source.
enum Pending {
    Inline(Vec<u8>),
    Stored { digest: String, size: u64 },
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn hex_of(digest: &str) -> Result<&str, ArchiveError> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| ArchiveError::BadDigest(digest.to_owned()))
}

fn encode<T: serde::Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, ArchiveError> {
    serde_json::to_vec(value).map_err(|source| ArchiveError::Encode { what, source })
}

/// Splits `hello:latest` (or `localhost:5000/x:y`) into repository and tag.
fn split_tag(name: &str) -> Option<(&str, &str)> {
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    let colon = name[slash..].rfind(':')? + slash;
    Some((&name[..colon], &name[colon + 1..]))
}

/// Writes `images` as one tarball to `out` and gives `out` back.
pub fn write_archive<W: Write>(
    out: W,
    images: &[ArchiveImage],
    blobs: &mut dyn BlobSource,
) -> Result<W, ArchiveError> {
    let mut pending: BTreeMap<String, Pending> = BTreeMap::new();
    let mut index = Index {
        schema_version: 2,
        media_type: MEDIA_INDEX.to_owned(),
        manifests: Vec::new(),
    };
    let mut docker_manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for image in images {
        let manifest = Manifest {
            schema_version: 2,
            media_type: MEDIA_MANIFEST.to_owned(),
            config: image.config.clone(),
            layers: image.layers.clone(),
        };
        let manifest_bytes = encode("OCI manifest", &manifest)?;
        let manifest_digest = sha256_digest(&manifest_bytes);
        let base = Descriptor {
            media_type: MEDIA_MANIFEST.to_owned(),
            digest: manifest_digest.clone(),
            size: manifest_bytes.len() as u64,
            ..Descriptor::default()
        };
        pending.insert(
            hex_of(&manifest_digest)?.to_owned(),
            Pending::Inline(manifest_bytes),
        );
        if image.names.is_empty() {
            index.manifests.push(base.clone());
        }
        for name in &image.names {
            let mut descriptor = base.clone();
            descriptor
                .annotations
                .insert(ANNOTATION_IMAGE_NAME.to_owned(), name.full.clone());
            if let Some((_, tag)) = split_tag(&name.full) {
                descriptor
                    .annotations
                    .insert(ANNOTATION_REF_NAME.to_owned(), tag.to_owned());
            }
            index.manifests.push(descriptor);
        }
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            pending.insert(
                hex_of(&blob.digest)?.to_owned(),
                Pending::Stored {
                    digest: blob.digest.clone(),
                    size: blob.size,
                },
            );
        }
        let mut layer_paths = Vec::new();
        for layer in &image.layers {
            layer_paths.push(format!("blobs/sha256/{}", hex_of(&layer.digest)?));
        }
        let top = layer_paths
            .last()
            .map(|p| p.trim_start_matches("blobs/sha256/").to_owned());
        for name in &image.names {
            if let (Some((repo, tag)), Some(top)) = (split_tag(&name.familiar), &top) {
                repositories
                    .entry(repo.to_owned())
                    .or_default()
                    .insert(tag.to_owned(), top.clone());
            }
        }
        docker_manifest.push(DockerManifestEntry {
            config: format!("blobs/sha256/{}", hex_of(&image.config.digest)?),
            repo_tags: image.names.iter().map(|n| n.familiar.clone()).collect(),
            layers: layer_paths,
        });
    }

    let mut tar = tar::Builder::new(out);
    append_dir(&mut tar, "blobs/")?;
    append_dir(&mut tar, "blobs/sha256/")?;
    for (hex, blob) in &pending {
        let path = format!("blobs/sha256/{hex}");
        match blob {
            Pending::Inline(bytes) => append_file(&mut tar, &path, bytes)?,
            Pending::Stored { digest, size } => {
                append_blob(&mut tar, &path, digest, *size, blobs)?;
            }
        }
    }
    append_file(&mut tar, "index.json", &encode("index.json", &index)?)?;
    let manifest_json = encode("manifest.json", &docker_manifest)?;
    append_file(&mut tar, "manifest.json", &manifest_json)?;
    let layout = OciLayout {
        image_layout_version: "1.0.0".to_owned(),
    };
    append_file(&mut tar, "oci-layout", &encode("oci-layout", &layout)?)?;
    let repositories = encode("repositories", &repositories)?;
    append_file(&mut tar, "repositories", &repositories)?;
    tar.into_inner().map_err(|source| ArchiveError::Write {
        path: "the end of the archive".to_owned(),
        source,
    })
}

/// A header with fixed owner and mtime.
pub fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> Result<(), ArchiveError> {
    let mut header = fixed_header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut header, path, io::empty())
        .map_err(|source| ArchiveError::Write {
            path: path.to_owned(),
            source,
        })
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), ArchiveError> {
    let mut header = fixed_header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)
        .map_err(|source| ArchiveError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    digest: &str,
    size: u64,
    blobs: &mut dyn BlobSource,
) -> Result<(), ArchiveError> {
    let read_err = |source| ArchiveError::ReadBlob {
        digest: digest.to_owned(),
        source,
    };
    let reader = blobs.open(digest).map_err(read_err)?;
    let mut counting = Counting {
        inner: reader.take(size),
        count: 0,
    };
    let mut header = fixed_header(tar::EntryType::Regular, 0o644, size);
    tar.append_data(&mut header, path, &mut counting)
        .map_err(|source| ArchiveError::Write {
            path: path.to_owned(),
            source,
        })?;
    if counting.count != size {
        return Err(ArchiveError::BlobSize {
            digest: digest.to_owned(),
            expected: size,
            actual: counting.count,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_after_the_last_slash() {
        assert_eq!(split_tag("hello:latest"), Some(("hello", "latest")));
        assert_eq!(
            split_tag("localhost:5000/x:y"),
            Some(("localhost:5000/x", "y"))
        );
        assert_eq!(split_tag("localhost:5000/x"), None);
    }

    /// Blobs held in memory, by digest.
    struct Memory(BTreeMap<String, Vec<u8>>);

    impl BlobSource for Memory {
        fn open(&mut self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
            let bytes = self.0.get(digest).ok_or(io::ErrorKind::NotFound)?;
            Ok(Box::new(bytes.as_slice()))
        }
    }

    fn blob(media_type: &str, bytes: &[u8], blobs: &mut Memory) -> Descriptor {
        let digest = sha256_digest(bytes);
        blobs.0.insert(digest.clone(), bytes.to_vec());
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size: bytes.len() as u64,
            ..Descriptor::default()
        }
    }

    fn name(full: &str, familiar: &str) -> ImageName {
        ImageName {
            full: full.to_owned(),
            familiar: familiar.to_owned(),
        }
    }

    /// Two images sharing a base layer; the second has two names.
    fn two_images(blobs: &mut Memory) -> Vec<ArchiveImage> {
        use crate::image::{MEDIA_CONFIG, MEDIA_LAYER};
        let base = blob(MEDIA_LAYER, b"base layer", blobs);
        let top = blob(MEDIA_LAYER, b"top layer", blobs);
        vec![
            ArchiveImage {
                config: blob(MEDIA_CONFIG, br#"{"n":1}"#, blobs),
                layers: vec![base.clone()],
                names: vec![name("docker.io/library/one:latest", "one:latest")],
            },
            ArchiveImage {
                config: blob(MEDIA_CONFIG, br#"{"n":2}"#, blobs),
                layers: vec![base, top],
                names: vec![
                    name("docker.io/library/two:1", "two:1"),
                    name("localhost:5000/x:y", "localhost:5000/x:y"),
                ],
            },
        ]
    }

    /// Path and bytes of every entry, in archive order.
    fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for entry in tar::Archive::new(archive).entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().uid().unwrap(), 0);
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.push((path, bytes));
        }
        out
    }

    #[test]
    fn archive_is_a_docker_archive_and_an_oci_layout_and_reproducible() {
        let mut blobs = Memory(BTreeMap::new());
        let images = two_images(&mut blobs);
        let first = write_archive(Vec::new(), &images, &mut blobs).unwrap();
        let second = write_archive(Vec::new(), &images, &mut blobs).unwrap();
        assert_eq!(first, second, "the same images give the same bytes");

        let entries = entries(&first);
        let files: BTreeMap<&str, &[u8]> = entries
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .collect();
        assert_eq!(files.len(), entries.len(), "every entry written once");
        // Two configs, two layers (the shared one once), two manifests, each
        // named by its digest.
        let mut blob_count = 0;
        for (path, bytes) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                assert_eq!(sha256_digest(bytes), format!("sha256:{hex}"), "{path}");
                blob_count += 1;
            }
        }
        assert_eq!(blob_count, 6);

        let layout: OciLayout = serde_json::from_slice(files["oci-layout"]).unwrap();
        assert_eq!(layout.image_layout_version, "1.0.0");
        let index: Index = serde_json::from_slice(files["index.json"]).unwrap();
        let names: Vec<(&str, &str)> = index
            .manifests
            .iter()
            .map(|m| {
                (
                    m.annotations[ANNOTATION_IMAGE_NAME].as_str(),
                    m.annotations[ANNOTATION_REF_NAME].as_str(),
                )
            })
            .collect();
        assert_eq!(
            names,
            [
                ("docker.io/library/one:latest", "latest"),
                ("docker.io/library/two:1", "1"),
                ("localhost:5000/x:y", "y"),
            ]
        );
        let manifest: Manifest = serde_json::from_slice(
            files[format!("blobs/sha256/{}", &index.manifests[1].digest[7..]).as_str()],
        )
        .unwrap();
        assert_eq!(manifest.config, images[1].config);
        assert_eq!(manifest.layers, images[1].layers);
        assert_eq!(index.manifests[1].digest, index.manifests[2].digest);

        let docker: Vec<DockerManifestEntry> =
            serde_json::from_slice(files["manifest.json"]).unwrap();
        assert_eq!(docker.len(), 2);
        assert_eq!(docker[1].repo_tags, ["two:1", "localhost:5000/x:y"]);
        assert_eq!(docker[1].layers.len(), 2);
        for path in std::iter::once(&docker[1].config).chain(&docker[1].layers) {
            assert!(files.contains_key(path.as_str()), "{path} missing");
        }
        let repositories: BTreeMap<String, BTreeMap<String, String>> =
            serde_json::from_slice(files["repositories"]).unwrap();
        assert_eq!(
            repositories["localhost:5000/x"]["y"],
            images[1].layers[1].digest[7..]
        );
    }

    #[test]
    fn a_blob_shorter_than_its_descriptor_or_a_bad_digest_is_an_error() {
        let mut blobs = Memory(BTreeMap::new());
        let mut images = two_images(&mut blobs);
        images[0].layers[0].size += 1;
        let err = write_archive(Vec::new(), &images[..1], &mut blobs).unwrap_err();
        assert!(
            matches!(err, ArchiveError::BlobSize { expected, actual, .. } if expected == actual + 1),
            "{err:?}"
        );

        let mut images = two_images(&mut blobs);
        images[0].config.digest = "sha256:../../etc".to_owned();
        let err = write_archive(Vec::new(), &images[..1], &mut blobs).unwrap_err();
        assert!(matches!(err, ArchiveError::BadDigest(_)), "{err:?}");

        let mut images = two_images(&mut blobs);
        images[0].layers[0].digest = sha256_digest(b"not stored");
        let err = write_archive(Vec::new(), &images[..1], &mut blobs).unwrap_err();
        assert!(matches!(err, ArchiveError::ReadBlob { .. }), "{err:?}");
    }
}
