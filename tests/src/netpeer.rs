//! `netpeer:latest`: a one-file image holding `tests/helpers/netpeer.rs`
//! built static, the far end (UDP echo, TCP echo and sink, raw vsock) of
//! forwarded traffic in VM tests and benchmarks. The busybox in `hello`
//! has no UDP server and nothing speaks vsock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;
use sha2::{Digest, Sha256};

/// The image's name as `docker run` takes it.
pub const IMAGE: &str = "netpeer:latest";

/// `netpeer.tar` (`docker load` format), built once per process.
pub fn image_tar() -> &'static Path {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = crate::bin_dir().join("netpeer");
        std::fs::create_dir_all(&dir).expect("netpeer dir");
        let binary = dir.join("netpeer");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("helpers/netpeer.rs");
        // rustc straight: std only, static, so the scratch image needs no libc.
        let out = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .args([
                "--edition",
                "2021",
                "-O",
                "-C",
                "target-feature=+crt-static",
            ])
            .args(["-C", "strip=symbols", "-o"])
            .arg(&binary)
            .arg(&source)
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "rustc {}: {}",
            source.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&binary).expect("read netpeer");
        let tar = dir.join("netpeer.tar");
        std::fs::write(&tar, archive(&bytes)).expect("write netpeer.tar");
        tar
    })
}

fn archive(binary: &[u8]) -> Vec<u8> {
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(binary.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, "netpeer", binary)
        .expect("layer");
    let layer = layer.into_inner().expect("layer");
    load_archive(
        &layer,
        json!({"Entrypoint": ["/netpeer"], "Cmd": ["tcp-echo", "7"]}),
        IMAGE,
    )
}

/// A `docker load` archive of one image: one layer (a tar), the image
/// config's `config` section, one tag.
pub fn load_archive(layer: &[u8], config: serde_json::Value, tag: &str) -> Vec<u8> {
    let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
    })
    .to_string();
    let config_name = format!("{}.json", &digest(config.as_bytes())[7..]);
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": ["layer/layer.tar"],
    }])
    .to_string();
    let mut out = tar::Builder::new(Vec::new());
    for (name, bytes) in [
        ("manifest.json", manifest.as_bytes()),
        (config_name.as_str(), config.as_bytes()),
        ("layer/layer.tar", layer),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, name, bytes).expect("append");
    }
    out.into_inner().expect("archive")
}
