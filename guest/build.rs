//! Builds `init/main.rs` into `$OUT_DIR/vmctl-init`, the static init that
//! `runtime::init` embeds for `docker run --init`.
//!
//! It is compiled with the same `rustc` as the crate, directly (no cargo,
//! no crates), statically linked (`+crt-static`) so that it runs in any
//! container image, optimized and with `panic=abort` to stay small.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = PathBuf::from("init/main.rs");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");

    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let output = out_dir.join("vmctl-init");

    let status = Command::new(&rustc)
        .args(["--edition", "2021", "--crate-type", "bin", "--crate-name"])
        .arg("vmctl_init")
        .args([
            "-O",
            "-C",
            "panic=abort",
            "-C",
            "target-feature=+crt-static",
        ])
        .args(["-C", "strip=symbols", "--target"])
        .arg(&target)
        .arg("-o")
        .arg(&output)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {rustc}: {e}"));
    assert!(
        status.success(),
        "{rustc} failed to build {}",
        source.display()
    );
}
