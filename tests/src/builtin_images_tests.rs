//! The built-in `hello` image, as [`builtin_images`] builds it with
//! `vmctl-image` for every suite, in the engine's image store: it loads with
//! busybox and its applets, survives a save and load with the same id, and
//! built-in loading skips it once present. Here rather than beside the store
//! so that the engine does not depend on the VM image builder, not even for
//! its tests.

use std::path::{Path, PathBuf};

use vmctl_guest::image::ImageStore;

use crate::{builtin_images, BUSYBOX};

fn store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&dir.path().join("image")).unwrap();
    (dir, store)
}

#[test]
fn hello_image_loads_and_has_busybox() {
    if !Path::new(BUSYBOX).exists() {
        eprintln!("SKIP: {BUSYBOX} is missing (install busybox-static); hello image test not run");
        return;
    }
    let builtin = builtin_images();
    let bytes = std::fs::read(builtin.join("hello.tar")).unwrap();
    let (_dir, store) = store();
    let loaded = store.load(bytes.as_slice()).unwrap();
    assert_eq!(loaded[0].tags, vec!["hello:latest".to_owned()]);
    let image = store.resolve("hello").unwrap();
    let top = image.layers.last().unwrap();
    assert!(top.join("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(top.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(image.config.cmd.as_ref().unwrap()[0], "httpd");

    // Save and load into another store: the same id comes back.
    let mut saved = Vec::new();
    store.save(&["hello".to_owned()], &mut saved).unwrap();
    let (_dir2, other) = self::store();
    let again = other.load(saved.as_slice()).unwrap();
    assert_eq!(again[0].id, image.id);
    assert_eq!(again[0].tags, vec!["hello:latest".to_owned()]);

    // Built-in loading skips what is present.
    assert!(store.load_builtin(builtin).unwrap().is_empty());
    let (_dir3, fresh) = self::store();
    assert_eq!(fresh.load_builtin(builtin).unwrap().len(), 1);
}
