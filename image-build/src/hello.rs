//! The built-in image `hello:latest`: a static busybox with every applet linked
//! into `/bin`, root and nobody in `/etc/passwd`, and a page in `/www` that
//! busybox `httpd` serves on port 80 by default.
//!
//! The build is reproducible: entries are sorted, owned by 0:0 with mtime 0,
//! the config's `created` is fixed, and the layer is a plain tar. Two builds
//! from the same busybox give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use vmctl_oci::archive::{fixed_header, sha256_digest, write_archive, ArchiveImage, BlobSource};
use vmctl_oci::archive::{ArchiveError, ImageName};
use vmctl_oci::image::{go_arch, Descriptor, MEDIA_CONFIG, MEDIA_LAYER};

/// The full name the image is tagged with.
pub const NAME: &str = "docker.io/library/hello:latest";
/// The name as Docker shows it.
pub const FAMILIAR_NAME: &str = "hello:latest";
/// The image's `created` time.
const CREATED: &str = "1970-01-01T00:00:00Z";

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const GROUP: &str = "root:x:0:\nnogroup:x:65534:\n";
const INDEX_HTML: &str = "<!DOCTYPE html>\n<html>\n<head><title>Hello from vmctl</title></head>\n<body>\n<h1>Hello from vmctl</h1>\n<p>This page is served by busybox httpd in a container run by vmctl.</p>\n</body>\n</html>\n";

/// Errors of building the hello image.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    #[error("cannot read busybox at {}", path.display())]
    ReadBusybox {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {} --list", path.display())]
    ListApplets {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} --list failed or listed no applets", path.display())]
    NoApplets { path: PathBuf },
    #[error("busybox lists an applet with an unusable name: {0:?}")]
    BadApplet(String),
    #[error("cannot write layer entry {path}")]
    Layer {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the image config")]
    Config(#[source] serde_json::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

/// One entry of the layer.
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(&'static str),
}

/// Writes the `hello:latest` image tarball, built around the static busybox at
/// `busybox`, to `out`.
pub fn build(busybox: &Path, out: &mut impl Write) -> Result<(), HelloError> {
    build_for(busybox, None, out)
}

/// [`build`] for the architecture `arch` (Go's name, `arm64`) when it is
/// not this host's: the busybox is then not run but read
/// ([`crate::busybox::applet_names`]), and the config names that architecture.
pub fn build_for(
    busybox: &Path,
    arch: Option<&str>,
    out: &mut impl Write,
) -> Result<(), HelloError> {
    let binary = std::fs::read(busybox).map_err(|source| HelloError::ReadBusybox {
        path: busybox.to_owned(),
        source,
    })?;
    let arch = arch.unwrap_or(go_arch());
    let names = if arch == go_arch() {
        applets(busybox)?
    } else {
        foreign_applets(busybox, &binary)?
    };
    let layer = layer_tar(binary, &names)?;
    let diff_id = sha256_digest(&layer);
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "created": CREATED,
        "author": "vmctl",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["httpd", "-f", "-v", "-p", "80", "-h", "/www"],
            "ExposedPorts": { "80/tcp": {} },
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": CREATED,
            "created_by": "vmctl-image hello",
            "comment": "busybox, its applets in /bin, /etc/passwd and /www/index.html",
        }],
    });
    let config = serde_json::to_vec(&config).map_err(HelloError::Config)?;
    let image = ArchiveImage {
        config: Descriptor {
            media_type: MEDIA_CONFIG.to_owned(),
            digest: sha256_digest(&config),
            size: config.len() as u64,
            ..Descriptor::default()
        },
        layers: vec![Descriptor {
            media_type: MEDIA_LAYER.to_owned(),
            digest: diff_id,
            size: layer.len() as u64,
            ..Descriptor::default()
        }],
        names: vec![ImageName {
            full: NAME.to_owned(),
            familiar: FAMILIAR_NAME.to_owned(),
        }],
    };
    let mut blobs = MemoryBlobs(HashMap::from([
        (image.config.digest.clone(), config),
        (image.layers[0].digest.clone(), layer),
    ]));
    write_archive(out, &[image], &mut blobs)?;
    Ok(())
}

/// The applet names of `busybox --list`, sorted, without `busybox` itself.
fn applets(busybox: &Path) -> Result<Vec<String>, HelloError> {
    let output = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(|source| HelloError::ListApplets {
            path: busybox.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "busybox")
        .map(str::to_owned)
        .collect();
    if !output.status.success() || names.is_empty() {
        return Err(HelloError::NoApplets {
            path: busybox.to_owned(),
        });
    }
    if let Some(bad) = names
        .iter()
        .find(|n| n.contains('/') || *n == "." || *n == "..")
    {
        return Err(HelloError::BadApplet(bad.clone()));
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// The applet names of a busybox of another architecture, sorted.
fn foreign_applets(busybox: &Path, binary: &[u8]) -> Result<Vec<String>, HelloError> {
    let mut names = crate::busybox::applet_names(binary).ok_or_else(|| HelloError::NoApplets {
        path: busybox.to_owned(),
    })?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// The layer as a plain tar, entries sorted by path.
fn layer_tar(busybox: Vec<u8>, applets: &[String]) -> Result<Vec<u8>, HelloError> {
    let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("www", 0o755),
    ] {
        nodes.insert(format!("{dir}/"), Node::Dir(mode));
    }
    nodes.insert("bin/busybox".into(), Node::File(0o755, busybox));
    for applet in applets {
        nodes.insert(format!("bin/{applet}"), Node::Symlink("busybox"));
    }
    nodes.insert("etc/passwd".into(), Node::File(0o644, PASSWD.into()));
    nodes.insert("etc/group".into(), Node::File(0o644, GROUP.into()));
    nodes.insert(
        "www/index.html".into(),
        Node::File(0o644, INDEX_HTML.into()),
    );

    let mut tar = tar::Builder::new(Vec::new());
    for (path, node) in &nodes {
        let layer_err = |source| HelloError::Layer {
            path: path.clone(),
            source,
        };
        match node {
            Node::Dir(mode) => {
                let mut header = fixed_header(tar::EntryType::Directory, *mode, 0);
                tar.append_data(&mut header, path, io::empty())
                    .map_err(layer_err)?;
            }
            Node::File(mode, bytes) => {
                let mut header = fixed_header(tar::EntryType::Regular, *mode, bytes.len() as u64);
                tar.append_data(&mut header, path, bytes.as_slice())
                    .map_err(layer_err)?;
            }
            Node::Symlink(target) => {
                let mut header = fixed_header(tar::EntryType::Symlink, 0o777, 0);
                tar.append_link(&mut header, path, target)
                    .map_err(layer_err)?;
            }
        }
    }
    tar.into_inner().map_err(|source| HelloError::Layer {
        path: "the end of the layer".to_owned(),
        source,
    })
}

/// Blobs held in memory, by digest.
struct MemoryBlobs(HashMap<String, Vec<u8>>);

impl BlobSource for MemoryBlobs {
    fn open(&mut self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
        match self.0.get(digest) {
            Some(bytes) => Ok(Box::new(bytes.as_slice())),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no blob {digest}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX: &str = "/bin/busybox";

    fn busybox() -> Option<&'static Path> {
        let path = Path::new(BUSYBOX);
        if path.exists() {
            Some(path)
        } else {
            eprintln!("SKIP: {BUSYBOX} is missing (install busybox-static); hello image not built");
            None
        }
    }

    #[test]
    fn two_builds_give_identical_bytes() {
        let Some(busybox) = busybox() else { return };
        let mut first = Vec::new();
        let mut second = Vec::new();
        build(busybox, &mut first).unwrap();
        build(busybox, &mut second).unwrap();
        assert_eq!(first, second);
        assert!(
            first.len() < 4 << 20,
            "hello image is {} bytes",
            first.len()
        );
    }

    #[test]
    fn archive_has_both_formats_and_the_applets() {
        let Some(busybox) = busybox() else { return };
        let mut bytes = Vec::new();
        build(busybox, &mut bytes).unwrap();
        let mut files = HashMap::new();
        for entry in tar::Archive::new(bytes.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        let manifest: Vec<vmctl_oci::image::DockerManifestEntry> =
            serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0].repo_tags, vec![FAMILIAR_NAME.to_owned()]);
        let index: vmctl_oci::image::Index = serde_json::from_slice(&files["index.json"]).unwrap();
        assert_eq!(
            index.manifests[0].annotations[vmctl_oci::image::ANNOTATION_REF_NAME],
            "latest"
        );
        assert!(files.contains_key("oci-layout"));
        let layer = &files[&manifest[0].layers[0]];
        let mut names = Vec::new();
        for entry in tar::Archive::new(layer.as_slice()).entries().unwrap() {
            names.push(
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        for wanted in [
            "bin/busybox",
            "bin/sh",
            "bin/httpd",
            "etc/passwd",
            "www/index.html",
        ] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} missing");
        }
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }
}
