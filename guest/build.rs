//! Builds `init/main.rs` into `$OUT_DIR/vmctl-init`, the static init that
//! `runtime::init` embeds for `docker run --init`.
//!
//! It is compiled with the same `rustc` as the crate, directly (no cargo,
//! no crates), statically linked (`+crt-static`) so that it runs in any
//! container image, optimized and with `panic=abort` to stay small.
//!
//! When cross-building (`TARGET` differs from `HOST`, e.g. the arm64 guest
//! built on an x86 desktop) rustc's default linker, the host's `cc`, cannot
//! link the target's objects: the target's linker is taken from the same
//! variables cargo and the `cc` crate read — `CARGO_TARGET_<TRIPLE>_LINKER`,
//! then `CC_<triple>`, `CC_<triple_with_underscores>`, `TARGET_CC`.

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
    let host = env::var("HOST").expect("cargo sets HOST");
    let output = out_dir.join("vmctl-init");

    let mut command = Command::new(&rustc);
    command
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
        .arg(&target);
    if let Some(linker) = target_linker(&target, &host) {
        command.arg("-C").arg(format!("linker={linker}"));
    }
    let status = command
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

/// The linker for `target`: cargo's `CARGO_TARGET_<TRIPLE>_LINKER` when set;
/// when cross-building, else the target's C compiler as the `cc` crate finds
/// it. `None`: rustc's default (right for a native build).
fn target_linker(target: &str, host: &str) -> Option<String> {
    let upper = target.to_uppercase().replace('-', "_");
    let underscored = target.replace('-', "_");
    let mut names = vec![format!("CARGO_TARGET_{upper}_LINKER")];
    if target != host {
        names.extend([
            format!("CC_{target}"),
            format!("CC_{underscored}"),
            "TARGET_CC".to_owned(),
        ]);
    }
    for name in &names {
        println!("cargo:rerun-if-env-changed={name}");
    }
    names
        .iter()
        .find_map(|name| env::var(name).ok().filter(|v| !v.is_empty()))
}
