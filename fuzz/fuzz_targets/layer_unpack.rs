//! The layer unpacker on arbitrary tar bytes (plain, or wrapped here in
//! gzip or zstd so the fuzzer can shape the tar inside), each run into a
//! fresh directory. Nothing may be written outside it.
//!
//! It must run in the sandbox `tests/fuzz` makes (a private mount namespace
//! where every mount is read-only except a tmpfs on /tmp and the fuzz
//! directory): a write that escapes the layer then fails with EROFS or EXDEV
//! instead of touching the machine, and the target reports it as a crash.
//!
//! Input: `[mode] tar…`, mode % 3: 0 the bytes as they are (they may be gzip
//! or zstd themselves), 1 gzip them, 2 zstd them.
#![no_main]

use std::io::Write;
use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use vmctl_guest::image::unpack::{digest_layer, unpack_layer};

const SCRATCH: &str = "/tmp";

/// Refuses to run where an escape would reach the machine's files.
fn check_sandbox() {
    static CHECKED: Once = Once::new();
    CHECKED.call_once(|| {
        let read_only = |path: &str| {
            nix::sys::statvfs::statvfs(path)
                .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
                .unwrap_or(false)
        };
        let scratch_is_tmpfs = nix::sys::statfs::statfs(SCRATCH)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(false);
        assert!(
            read_only("/") && scratch_is_tmpfs,
            "layer_unpack runs only in the sandbox tests/fuzz sets up \
             (read-only mounts, a tmpfs on {SCRATCH}): run it through tests/fuzz"
        );
    });
}

fn escaped(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EROFS) | Some(libc::EXDEV)) {
                return true;
            }
        }
        cause = e.source();
    }
    false
}

fuzz_target!(|data: &[u8]| {
    check_sandbox();
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let blob = match mode % 3 {
        0 => tar.to_vec(),
        1 => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).expect("gzip in memory");
            gz.finish().expect("gzip in memory")
        }
        _ => zstd::encode_all(tar, 1).expect("zstd in memory"),
    };
    let run = tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(SCRATCH)
        .expect("a run dir on the scratch tmpfs");
    let root = run.path().join("root");
    std::fs::create_dir(&root).expect("the layer dir");
    let result = unpack_layer(&blob[..], &root);
    if let Err(e) = &result {
        assert!(!escaped(e), "the unpacker wrote outside the layer: {e:?}");
    }
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("list a dir")
            .map(|e| {
                e.expect("a dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(run.path()), ["root"], "beside the layer");
    let run_name = run
        .path()
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(names(Path::new(SCRATCH)), [run_name], "in the scratch dir");
    let meta = std::fs::symlink_metadata(&root).expect("the layer dir is still there");
    assert!(meta.is_dir(), "the layer dir was replaced");
    if let Ok(stats) = result {
        // The layer's diff-id is the one a layer already in the store gets.
        assert_eq!(
            stats.diff_id,
            digest_layer(&blob[..]).expect("digest again")
        );
    }
});
