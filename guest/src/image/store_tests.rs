//! Tests of the store with hand-built archives in a tempdir.

use std::collections::HashMap;
use std::io::Write;

use super::*;
use crate::image::digest::of_bytes;
use crate::state::ErrorKind;

/// A layer tar holding `files` (path, content).
fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(1);
        tar.append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    tar.into_inner().unwrap()
}

fn config(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| of_bytes(l)).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
        "config": { "Cmd": ["sh"], "Env": ["A=1"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [{ "created": "2024-01-02T03:04:05Z", "created_by": "test" }],
    }))
    .unwrap()
}

fn add(tar: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    tar.append_data(&mut header, path, bytes).unwrap();
}

/// A legacy docker-archive: `<n>/layer.tar`, `<id>.json`, `manifest.json`.
/// Tags, config and layers of one image of a test archive.
type TestImage<'a> = (&'a [&'a str], Vec<u8>, Vec<Vec<u8>>);

fn docker_archive(images: &[TestImage<'_>]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut manifest = Vec::new();
    for (tags, config, layers) in images {
        let config_name = format!("{}.json", of_bytes(config).trim_start_matches("sha256:"));
        add(&mut tar, &config_name, config);
        let mut names = Vec::new();
        for layer in layers {
            let name = format!("{}/layer.tar", &of_bytes(layer)[7..19]);
            add(&mut tar, &name, layer);
            names.push(name);
        }
        manifest
            .push(serde_json::json!({"Config": config_name, "RepoTags": tags, "Layers": names}));
    }
    add(
        &mut tar,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    tar.into_inner().unwrap()
}

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("image")).unwrap();
    (dir, store)
}

fn entries(store: &ImageStore, sub: &str) -> usize {
    std::fs::read_dir(store.root().join(sub)).unwrap().count()
}

fn assert_empty(store: &ImageStore) {
    assert_eq!(store.count(), 0);
    assert_eq!(entries(store, "blobs/sha256"), 0, "blobs left");
    assert_eq!(entries(store, "layers"), 0, "layers left");
    assert_eq!(entries(store, "images"), 0, "records left");
    assert_eq!(entries(store, "tmp"), 0, "staging left");
    assert!(store.list().is_empty());
}

#[test]
fn docker_archive_loads_and_resolves() {
    let (_dir, store) = store();
    let base = layer(&[("bin/sh", "shell")]);
    let top = layer(&[("app/run", "run")]);
    let archive = docker_archive(&[(&["me/app:1"], config(&[&base, &top]), vec![base, top])]);
    let loaded = store.load(archive.as_slice()).unwrap();
    assert_eq!(loaded[0].tags, vec!["me/app:1".to_owned()]);
    let image = store.resolve("docker.io/me/app:1").unwrap();
    assert_eq!(image.id, loaded[0].id);
    assert_eq!(image.config.cmd, Some(vec!["sh".to_owned()]));
    assert_eq!(
        std::fs::read(image.layers[0].join("bin/sh")).unwrap(),
        b"shell"
    );
    assert!(image.layers[1].join("app/run").exists());
    assert_eq!(store.resolve(&image.id[7..19]).unwrap().id, image.id);
    assert_eq!(store.resolve(&image.id).unwrap().id, image.id);
    let err = store.resolve("me/app").unwrap_err();
    assert_eq!(err.to_string(), "No such image: me/app:latest");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        store.resolve("Bad!").unwrap_err().kind(),
        ErrorKind::InvalidParameter
    );
    // Reopening finds it again.
    let reopened = ImageStore::open(store.root()).unwrap();
    assert_eq!(reopened.resolve("me/app:1").unwrap().id, image.id);
}

#[test]
fn oci_layout_loads_with_compressed_layers() {
    let (_dir, store) = store();
    let plain_a = layer(&[("a", "1")]);
    let plain_b = layer(&[("b", "2")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain_a).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(plain_b.as_slice(), 3).unwrap();
    let config = config(&[&plain_a, &plain_b]);
    let desc = |media: &str, bytes: &[u8]| serde_json::json!({"mediaType": media, "digest": of_bytes(bytes), "size": bytes.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": vmctl_oci::image::MEDIA_MANIFEST,
        "config": desc(vmctl_oci::image::MEDIA_CONFIG, &config),
        "layers": [desc(vmctl_oci::image::MEDIA_LAYER_GZIP, &gz), desc(vmctl_oci::image::MEDIA_LAYER_ZSTD, &zst)],
    }))
    .unwrap();
    let mut entry = desc(vmctl_oci::image::MEDIA_MANIFEST, &manifest);
    entry["annotations"] =
        serde_json::json!({"org.opencontainers.image.ref.name": "localhost:5000/x:y"});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    let mut tar = tar::Builder::new(Vec::new());
    for blob in [&config, &manifest, &gz, &zst] {
        add(
            &mut tar,
            &format!("blobs/sha256/{}", &of_bytes(blob)[7..]),
            blob,
        );
    }
    add(&mut tar, "index.json", &serde_json::to_vec(&index).unwrap());
    add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let loaded = store.load(tar.into_inner().unwrap().as_slice()).unwrap();
    assert_eq!(loaded[0].tags, vec!["localhost:5000/x:y".to_owned()]);
    let image = store.resolve("localhost:5000/x:y").unwrap();
    assert!(image.layers[0].join("a").exists() && image.layers[1].join("b").exists());
    let digest_ref = format!("localhost:5000/x@{}", of_bytes(&manifest));
    assert_eq!(store.resolve(&digest_ref).unwrap().id, image.id);
}

#[test]
fn shared_layers_are_unpacked_once() {
    let (_dir, store) = store();
    let base = layer(&[("base", "b")]);
    let one = layer(&[("one", "1")]);
    let two = layer(&[("two", "2")]);
    let archive = docker_archive(&[
        (&["one"], config(&[&base, &one]), vec![base.clone(), one]),
        (&["two"], config(&[&base, &two]), vec![base.clone(), two]),
    ]);
    store.load(archive.as_slice()).unwrap();
    assert_eq!(entries(&store, "layers"), 3);
    let a = store.resolve("one").unwrap();
    let b = store.resolve("two").unwrap();
    assert_eq!(a.layers[0], b.layers[0]);
    // Removing one image keeps the shared layer.
    store.remove("one", false, &HashMap::new()).unwrap();
    assert!(b.layers[0].exists());
    assert!(!a.layers[1].exists());
    assert_eq!(entries(&store, "layers"), 2);
}

#[test]
fn tag_remove_and_conflicts() {
    let (_dir, store) = store();
    let l = layer(&[("f", "x")]);
    store
        .load(docker_archive(&[(&["app:1"], config(&[&l]), vec![l.clone()])]).as_slice())
        .unwrap();
    let (id, name) = store.tag("app:1", "app", "2").unwrap();
    assert_eq!(name, "app:2");
    let mut info = store.inspect("app:2").unwrap();
    info.repo_tags.sort();
    assert_eq!(info.repo_tags, vec!["app:1".to_owned(), "app:2".to_owned()]);
    assert!(info.last_tag_time.is_some());

    let err = store.remove(&id, false, &HashMap::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        err.to_string()
            .contains("referenced in multiple repositories"),
        "{err}"
    );

    let in_use = HashMap::from([(id.clone(), "c0ffee".repeat(10))]);
    // Untagging one of two names is fine even when in use.
    assert_eq!(
        store.remove("app:2", false, &in_use).unwrap(),
        vec![Removed::Untagged("app:2".into())]
    );
    let err = store.remove("app:1", false, &in_use).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(err.to_string().starts_with("conflict: unable to remove repository reference \"app:1\" (must force) - container c0ffeec0ffee is using its referenced image"), "{err}");
    // Forced: untagged, but kept for its container.
    assert_eq!(
        store.remove("app:1", true, &in_use).unwrap(),
        vec![Removed::Untagged("app:1".into())]
    );
    assert_eq!(store.resolve(&id).unwrap().id, id);
    assert_eq!(
        store.remove(&id, false, &in_use).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    // Not in use any more: deleted, and nothing is left.
    assert_eq!(
        store.remove(&id, false, &HashMap::new()).unwrap(),
        vec![Removed::Deleted(id.clone())]
    );
    assert_empty(&store);
    assert_eq!(
        store
            .remove("app:1", false, &HashMap::new())
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn malformed_archives_leave_the_store_empty() {
    let (_dir, store) = store();
    let good = layer(&[("f", "x")]);
    let other = layer(&[("g", "y")]);
    // diff-id mismatch: the config names a different layer.
    let mismatch = docker_archive(&[(&["a"], config(&[&other]), vec![good.clone()])]);
    // a good image and a bad one in the same archive: neither is loaded.
    let half = docker_archive(&[
        (&["ok"], config(&[&good]), vec![good.clone()]),
        (&["bad"], config(&[&good, &other]), vec![good.clone()]),
    ]);
    let mut truncated = docker_archive(&[(&["a"], config(&[&good]), vec![good.clone()])]);
    truncated.truncate(1000);
    let no_manifest = layer(&[("random", "file")]);
    for (what, bytes) in [
        ("mismatch", mismatch),
        ("half", half),
        ("truncated", truncated),
        ("no manifest", no_manifest),
    ] {
        let err = store.load(bytes.as_slice()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParameter, "{what}: {err}");
        assert_empty(&store);
    }
}

#[test]
fn malicious_layers_are_refused_and_leave_nothing() {
    let (dir, store) = store();
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_link_name(dir.path()).unwrap();
    tar.append_data(&mut header, "escape", std::io::empty())
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    tar.append_data(&mut header, "escape/pwned", &b"pwned"[..])
        .unwrap();
    let evil = tar.into_inner().unwrap();
    let archive = docker_archive(&[(&["evil"], config(&[&evil]), vec![evil.clone()])]);
    let err = store.load(archive.as_slice()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidParameter);
    assert!(err.to_string().contains("escape/pwned"), "{err}");
    assert!(!dir.path().join("pwned").exists());
    assert_empty(&store);
}

/// `lsetxattr` (a `trusted.` name needs root, as the engine has).
fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "set {name}: {}", std::io::Error::last_os_error());
}

fn get_xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 256];
    // SAFETY: NUL-terminated strings and a live buffer of the given length.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| buf[..len as usize].to_vec())
}

/// An upper directory as a build step's overlay leaves it: a directory
/// copied up (overlayfs' `origin` and `impure` marks on it), a file, an
/// opaque directory, a whiteout, a symlink.
fn step_upper(upper: &std::path::Path) {
    std::fs::create_dir_all(upper.join("app")).unwrap();
    std::fs::write(upper.join("app/file"), b"data").unwrap();
    std::os::unix::fs::symlink("file", upper.join("app/link")).unwrap();
    set_xattr(&upper.join("app"), "trusted.overlay.origin", b"\0\xfb\x21");
    set_xattr(&upper.join("app"), "trusted.overlay.impure", b"y");
    std::fs::create_dir(upper.join("fresh")).unwrap();
    set_xattr(&upper.join("fresh"), "trusted.overlay.opaque", b"y");
    nix::sys::stat::mknod(
        &upper.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        0,
    )
    .unwrap();
    // Fixed times (children first), so two such trees tar the same.
    let time = nix::sys::time::TimeSpec::new(1_000_000, 0);
    for path in ["app/file", "app/link", "app", "fresh", "gone"] {
        nix::sys::stat::utimensat(
            None,
            &upper.join(path),
            &time,
            &time,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }
}

fn step_config() -> ConfigFile {
    ConfigFile {
        history: vec![vmctl_oci::image::History {
            created_by: "/bin/sh -c #(nop) COPY dir:x in / ".to_owned(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[test]
fn a_given_upper_becomes_the_layer_as_the_tar_would_have_made_it() {
    use crate::image::commit::Upper;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (dir, images) = store();
    let upper = dir.path().join("given");
    step_upper(&upper);
    let inode = std::fs::metadata(upper.join("app/file")).unwrap().ino();
    let id = images
        .build_step(Some(Upper::Given(&upper)), None, step_config(), "k1")
        .unwrap();
    let layer = images.resolve(&id).unwrap().layers.pop().unwrap();
    assert!(!upper.exists(), "the given upper was not moved into place");
    assert_eq!(
        std::fs::metadata(layer.join("app/file")).unwrap().ino(),
        inode,
        "the layer is not the upper itself"
    );
    // overlayfs' bookkeeping is gone, the opaque mark and the whiteout stay.
    assert_eq!(
        get_xattr(&layer.join("app"), "trusted.overlay.origin"),
        None
    );
    assert_eq!(
        get_xattr(&layer.join("app"), "trusted.overlay.impure"),
        None
    );
    assert_eq!(
        get_xattr(&layer.join("fresh"), "trusted.overlay.opaque").as_deref(),
        Some(&b"y"[..])
    );
    let gone = std::fs::symlink_metadata(layer.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device() && gone.rdev() == 0);

    // The same tree kept (read, then unpacked from its tar) is the same
    // layer: same diff-id, same blob, reused.
    let (dir2, other) = store();
    let kept = dir2.path().join("kept");
    step_upper(&kept);
    let id2 = other
        .build_step(Some(Upper::Kept(&kept)), None, step_config(), "k1")
        .unwrap();
    assert!(kept.join("app/file").exists(), "a kept upper was moved");
    assert_eq!(id, id2, "given and kept trees give different images");
    let unpacked = other.resolve(&id2).unwrap().layers.pop().unwrap();
    for path in ["app", "app/file", "app/link", "fresh", "gone"] {
        let (a, b) = (
            std::fs::symlink_metadata(layer.join(path)).unwrap(),
            std::fs::symlink_metadata(unpacked.join(path)).unwrap(),
        );
        assert_eq!(
            (a.mode(), a.uid(), a.len()),
            (b.mode(), b.uid(), b.len()),
            "{path}"
        );
    }
    assert_eq!(
        get_xattr(&unpacked.join("fresh"), "trusted.overlay.opaque"),
        get_xattr(&layer.join("fresh"), "trusted.overlay.opaque")
    );
}

#[test]
fn a_given_upper_the_tar_cannot_hold_exactly_is_unpacked_instead() {
    use crate::image::commit::Upper;
    let (dir, store) = store();
    let upper = dir.path().join("given");
    step_upper(&upper);
    // A socket (tars skip them) and an attribute tars here do not carry.
    let _socket = std::os::unix::net::UnixListener::bind(upper.join("app/sock")).unwrap();
    set_xattr(&upper.join("app/file"), "user.note", b"kept?");
    let id = store
        .build_step(Some(Upper::Given(&upper)), None, step_config(), "k1")
        .unwrap();
    let layer = store.resolve(&id).unwrap().layers.pop().unwrap();
    assert!(
        upper.join("app/file").exists(),
        "an inexact upper was moved"
    );
    assert!(layer.join("app/file").exists());
    assert!(!layer.join("app/sock").exists());
    assert_eq!(get_xattr(&layer.join("app/file"), "user.note"), None);
}

#[test]
fn a_real_overlay_upper_is_taken_as_the_layer() {
    use crate::image::commit::Upper;
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: mounting an overlay needs root");
        return;
    }
    let (dir, images) = store();
    let (lower, upper, work, merged) = (
        dir.path().join("lower"),
        dir.path().join("upper"),
        dir.path().join("work"),
        dir.path().join("merged"),
    );
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::create_dir(lower.join("app")).unwrap();
    std::fs::write(lower.join("app/old"), b"old").unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap();
    // What a COPY does: a file into a lower directory (copied up, with
    // whatever marks this kernel gives it and the upper's root), one
    // replaced, one new directory.
    std::fs::write(merged.join("app/new"), b"new").unwrap();
    std::fs::remove_file(merged.join("app/old")).unwrap();
    std::fs::write(merged.join("app/old"), b"replaced").unwrap();
    std::fs::create_dir(merged.join("fresh")).unwrap();
    std::fs::write(merged.join("fresh/f"), b"f").unwrap();
    nix::mount::umount(&merged).unwrap();
    let inode = std::fs::metadata(upper.join("app/new")).unwrap().ino();
    let id = images
        .build_step(Some(Upper::Given(&upper)), None, step_config(), "k1")
        .unwrap();
    let layer = images.resolve(&id).unwrap().layers.pop().unwrap();
    assert!(
        !upper.exists(),
        "a real overlay's upper was unpacked again, not taken (an overlay mark the walk does not know?)"
    );
    assert_eq!(
        std::fs::metadata(layer.join("app/new")).unwrap().ino(),
        inode
    );
    assert_eq!(std::fs::read(layer.join("app/old")).unwrap(), b"replaced");
    assert_eq!(std::fs::read(layer.join("fresh/f")).unwrap(), b"f");
}
