//! `POST /containers/{id}/exec`: the body as the API decodes it, the checks
//! `exec_create` applies, and the user lookup `exec_start` does in the
//! container's rootfs (whose passwd and group files the image chose).
//!
//! Input: `body [0xFF passwd [0xFF group]]`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmctl_fuzz::{parts, write_etc};
use vmctl_guest::engine::exec::ExecConfig;
use vmctl_guest::runtime::user;

fn rootfs() -> &'static PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-fuzz-exec-")
            .tempdir()
            .expect("a rootfs dir");
        dir.keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let [body, passwd, group] = parts::<3>(data);
    let Ok(config) = serde_json::from_slice::<ExecConfig>(body.unwrap_or_default()) else {
        return;
    };
    // `GET /exec/{id}/json` shows the config back.
    let shown = serde_json::to_vec(&config).expect("ExecConfig serializes");
    serde_json::from_slice::<ExecConfig>(&shown).expect("a shown ExecConfig reads back");
    if config.validate().is_err() {
        return;
    }
    let rootfs = rootfs();
    write_etc(rootfs, passwd, group);
    if let Ok(resolved) = user::resolve(rootfs, &config.user, &[]) {
        // A numeric user the files do not know is taken as given, as Docker does.
        if let Ok(uid) = config
            .user
            .split(':')
            .next()
            .unwrap_or_default()
            .parse::<u32>()
        {
            assert_eq!(resolved.uid, uid, "user {:?}", config.user);
        }
    }
});
