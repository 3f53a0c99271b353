//! `vmctl-image vm` is reproducible: two builds from the same inputs (the
//! pinned kernel package, the release vmctl-guest, the host's busybox, nft
//! and mke2fs) give byte-identical images, and the manifest records them.

use std::path::PathBuf;
use std::process::Command;

fn kernel_deb() -> Option<PathBuf> {
    let dir = vmctl_tests::bin_dir().join("../vm-inputs");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
}

#[test]
fn two_builds_give_identical_bytes() {
    let guest = vmctl_tests::bin_dir().join("../release/vmctl-guest");
    let (Some(deb), true) = (kernel_deb(), guest.exists()) else {
        if std::env::var("VMCTL_REQUIRE_VM").is_ok_and(|v| v == "1") {
            panic!("no kernel package in target/vm-inputs or no release vmctl-guest");
        }
        eprintln!("SKIPPED: no kernel package in target/vm-inputs or no release vmctl-guest (tests/run makes both)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut manifests = Vec::new();
    for out in ["a", "b"] {
        let status = Command::new(vmctl_tests::binary("vmctl-image"))
            .args(["vm", "--unpinned", "--guest"])
            .arg(&guest)
            .arg("--kernel-deb")
            .arg(&deb)
            .arg("--out")
            .arg(dir.path().join(out))
            .stdout(std::process::Stdio::null())
            .status()
            .expect("vmctl-image");
        assert!(status.success(), "vmctl-image vm failed");
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(out).join("manifest.json")).unwrap(),
        )
        .unwrap();
        manifests.push(manifest);
    }
    for file in ["vmlinux", "bzImage", "initramfs.img", "manifest.json"] {
        let a = std::fs::read(dir.path().join("a").join(file)).unwrap();
        let b = std::fs::read(dir.path().join("b").join(file)).unwrap();
        assert!(a == b, "{file} differs between two builds");
    }
    let outputs = &manifests[0]["outputs"];
    for file in ["vmlinux", "bzImage", "initramfs.img"] {
        assert_eq!(outputs[file]["sha256"].as_str().unwrap().len(), 64);
        assert!(
            outputs[file]["size"].as_u64().unwrap() > 1 << 20,
            "{file} is implausibly small"
        );
    }
    assert!(manifests[0]["modules"].as_u64().unwrap() > 20);
}
