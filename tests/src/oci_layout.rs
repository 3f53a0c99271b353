//! Builds OCI image layouts by hand (blobs, manifests, indexes) for images a
//! test needs exactly so: several platforms in one index, a layer of chosen
//! bytes, a config that lies. `skopeo copy [--all] oci:DIR:TAG docker://…`
//! then puts them in a registry.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::BUSYBOX;

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An OCI layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
    entries: Vec<Value>,
}

/// A tar of `files` (path, bytes, mode) and `links` (path, target).
pub fn tar(files: &[(&str, &[u8], u32)], links: &[(&str, &str)]) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for (path, bytes, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(1_700_000_000);
        out.append_data(&mut header, path, *bytes)
            .expect("tar append");
    }
    for (path, target) in links {
        let mut header = tar::Header::new_gnu();
        header.set_size(0);
        header.set_mode(0o777);
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mtime(1_700_000_000);
        out.append_link(&mut header, path, target)
            .expect("tar link");
    }
    out.into_inner().expect("tar")
}

/// A layer with a static busybox as `/bin/busybox` and `sh`, `cat`,
/// `sha256sum`, `echo`, `ls` linked to it.
pub fn busybox_layer() -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).expect("busybox-static");
    tar(
        &[("bin/busybox", &busybox, 0o755)],
        &[
            ("bin/sh", "busybox"),
            ("bin/cat", "busybox"),
            ("bin/sha256sum", "busybox"),
            ("bin/echo", "busybox"),
            ("bin/ls", "busybox"),
        ],
    )
}

/// Gzip of `bytes` (fast level: tests care about content, not size).
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// `len` bytes no compressor can shrink (a counter through sha256).
pub fn noise(len: usize, seed: u8) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = sha2::Sha256::new();
        hasher.update([seed]);
        hasher.update(counter.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// One layer of an image: its tar and whether to gzip it.
pub struct Layer {
    pub tar: Vec<u8>,
    pub gzip: bool,
}

impl Layout {
    pub fn create(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Layout {
            dir: dir.to_owned(),
            entries: Vec::new(),
        }
    }

    /// Stores a blob; answers its descriptor.
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&digest[7..]), bytes).expect("blob");
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    /// Writes an image (config from `config` with the right diff-ids, unless
    /// `diff_ids` overrides them); answers its manifest's descriptor.
    pub fn image(
        &self,
        arch: &str,
        layers: &[Layer],
        config: Value,
        diff_ids: Option<Vec<String>>,
    ) -> Value {
        let mut descriptors = Vec::new();
        let mut real = Vec::new();
        for layer in layers {
            real.push(sha256(&layer.tar));
            descriptors.push(if layer.gzip {
                self.blob(
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    &gzip(&layer.tar),
                )
            } else {
                self.blob("application/vnd.oci.image.layer.v1.tar", &layer.tar)
            });
        }
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "created": "2026-01-01T00:00:00Z",
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids.unwrap_or(real) },
        });
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": descriptors,
        });
        self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        )
    }

    /// Writes an index of `(manifest, arch)` entries; answers its descriptor.
    pub fn index(&self, manifests: &[(Value, &str)]) -> Value {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(descriptor, arch)| {
                let mut entry = descriptor.clone();
                entry["platform"] = json!({ "os": "linux", "architecture": arch });
                entry
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            index.to_string().as_bytes(),
        )
    }

    /// Names `descriptor` `tag` in the layout's `index.json`.
    pub fn tag(&mut self, descriptor: &Value, tag: &str) {
        let mut entry = descriptor.clone();
        entry["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
        self.entries.push(entry);
        let index = json!({ "schemaVersion": 2, "manifests": self.entries });
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index.json");
    }

    /// `oci:<dir>:<tag>` for skopeo.
    pub fn source(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }
}
