//! The Docker SDK for Python as an independent client of the tests: a
//! virtualenv holding it, made once under target/ from PyPI and kept.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The version of the Docker SDK for Python the virtualenv holds.
pub const SDK_VERSION: &str = "7.1.0";

/// The python of a virtualenv holding the Docker SDK for Python, made once
/// under target/ and kept (like `hello.tar`); or why it cannot be made
/// (no python3-venv, PyPI out of reach).
pub fn python() -> Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = crate::bin_dir().join("e2e-docker-sdk");
            let ready = venv.join(format!("docker-{SDK_VERSION}.ready"));
            if ready.exists() {
                return Ok(venv.join("bin/python"));
            }
            // Made aside and renamed, so that a half-made one is never used.
            let tmp = crate::bin_dir().join(format!(".e2e-docker-sdk.{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            let run = |program: &Path, args: &[&str]| -> Result<(), String> {
                let out = Command::new(program)
                    .args(args)
                    .stdin(Stdio::null())
                    .output()
                    .map_err(|e| format!("{}: {e}", program.display()))?;
                if out.status.success() {
                    return Ok(());
                }
                let _ = std::fs::remove_dir_all(&tmp);
                Err(format!(
                    "{} {args:?}: {}",
                    program.display(),
                    text(&out.stderr).trim()
                ))
            };
            let python = Path::new(crate::outside::python3());
            run(python, &["-m", "venv", tmp.to_str().expect("utf-8 path")])?;
            let pin = format!("docker=={SDK_VERSION}");
            let pip = [
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                &pin,
            ];
            run(&tmp.join("bin/python"), &pip)?;
            std::fs::write(tmp.join(format!("docker-{SDK_VERSION}.ready")), "")
                .map_err(|e| e.to_string())?;
            let _ = std::fs::remove_dir_all(&venv);
            std::fs::rename(&tmp, &venv).map_err(|e| e.to_string())?;
            Ok(venv.join("bin/python"))
        })
        .clone()
}

/// Runs `script` with the SDK's python (argv: the engine's URL, then
/// `args`); it must succeed and print one JSON object, which is answered.
pub fn report(
    python: &Path,
    script: &str,
    engine: &crate::Engine,
    args: &[&std::ffi::OsStr],
) -> serde_json::Value {
    let out = Command::new(python)
        .args(["-c", script, &engine.docker_host()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "the SDK script failed:\n{}\nengine log:\n{}",
        text(&out.stderr),
        crate::tail(&engine.log(), 30)
    );
    serde_json::from_slice(&out.stdout).expect("the SDK script's JSON")
}
