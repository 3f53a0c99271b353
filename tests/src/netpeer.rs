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
        one_file_image(
            "netpeer",
            json!({"Entrypoint": ["/netpeer"], "Cmd": ["tcp-echo", "7"]}),
            IMAGE,
        )
    })
}

/// Builds `tests/helpers/NAME.rs` static (rustc straight: std only, so a
/// scratch image needs no libc) into `NAME.tar`, a `docker load` archive of
/// the one-file image `tag` holding `/NAME` with the image `config`.
pub fn one_file_image(name: &str, config: serde_json::Value, tag: &str) -> PathBuf {
    let arch = crate::vm::guest_arch();
    let dir = crate::bin_dir().join(format!("{name}-{arch}"));
    std::fs::create_dir_all(&dir).expect("helper dir");
    let binary = dir.join(format!("{name}.{}", std::process::id()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("helpers/{name}.rs"));
    let out = helper_rustc(arch)
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
    let bytes = std::fs::read(&binary).expect("read the helper binary");
    let _ = std::fs::remove_file(&binary);
    let mut layer = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o755);
    header.set_entry_type(tar::EntryType::Regular);
    layer
        .append_data(&mut header, name, bytes.as_slice())
        .expect("layer");
    let layer = layer.into_inner().expect("layer");
    // Written aside and renamed: test processes running at once may each build it.
    let tmp = dir.join(format!(".{name}.tar.{}", std::process::id()));
    std::fs::write(&tmp, load_archive(&layer, config, tag)).expect("write the image archive");
    let tar = dir.join(format!("{name}.tar"));
    std::fs::rename(&tmp, &tar).expect("rename the image archive");
    tar
}

/// The compiler of a helper for the guest architecture under test: this
/// toolchain's for amd64; for arm64 (`tests/arm64`), Debian's rustc with its
/// arm64 std and the cross linker, as `tests/vm-image` builds the guest.
fn helper_rustc(arch: &str) -> Command {
    if arch == "arm64" {
        let mut rustc = Command::new("/usr/bin/rustc");
        rustc.args([
            "--target",
            "aarch64-unknown-linux-gnu",
            "-C",
            "linker=aarch64-linux-gnu-gcc",
        ]);
        rustc
    } else {
        Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
    }
}

/// A `docker load` archive of one image for the guest architecture under
/// test: one layer (a tar), the image config's `config` section, one tag.
pub fn load_archive(layer: &[u8], config: serde_json::Value, tag: &str) -> Vec<u8> {
    let digest = |bytes: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    let config = json!({
        "architecture": crate::vm::guest_arch(),
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
