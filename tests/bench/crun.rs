//! crun on this machine: it refuses the hybrid cgroup layout, so it runs in
//! a private mount namespace without `/sys/fs/cgroup/unified` (VM-RECIPE.md).
//!
//! [`CrunHelper`] keeps one such namespace alive (a copy of `vmctl-bench`
//! started under `unshare -m` with [`HELPER_ARG`]) and times `crun run`
//! inside it, so the figure carries no wrapper cost. Protocol on the
//! helper's stdin/stdout: `STATE\tBUNDLE\tID` in, `ok NANOS` or
//! `error TEXT` out; its first line out is `ready`.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// A running helper: crun on request, timed inside the private namespace.
pub struct CrunHelper {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

/// The argument that turns `vmctl-bench` into the crun helper.
pub const HELPER_ARG: &str = "__crun-helper";

impl CrunHelper {
    pub fn start() -> Result<CrunHelper> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new("unshare")
            .args(["-m", "--propagation", "private"])
            .arg(exe)
            .arg(HELPER_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the crun helper")?;
        let input = child.stdin.take().context("helper stdin")?;
        let mut output = BufReader::new(child.stdout.take().context("helper stdout")?);
        let mut line = String::new();
        output.read_line(&mut line)?;
        if line.trim_end() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            bail!("crun helper did not start: {}", line.trim_end());
        }
        Ok(CrunHelper {
            child,
            input,
            output,
        })
    }

    pub fn run(&mut self, state: &Path, bundle: &Path, id: &str) -> Result<Duration> {
        writeln!(
            self.input,
            "{}\t{}\t{id}",
            state.display(),
            bundle.display()
        )?;
        let mut line = String::new();
        self.output.read_line(&mut line)?;
        let line = line.trim_end();
        let Some(nanos) = line.strip_prefix("ok ") else {
            bail!("crun failed: {line}");
        };
        Ok(Duration::from_nanos(nanos.parse()?))
    }

    pub fn stop(mut self) {
        drop(self.input);
        let _ = self.child.wait();
    }
}

/// The helper's side: already in a private mount namespace (`unshare -m`).
pub fn crun_helper() -> Result<()> {
    if Path::new(UNIFIED).exists() {
        let path = CString::new(UNIFIED)?;
        // SAFETY: a valid NUL-terminated path; affects only this private mount namespace.
        let rc = unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            println!(
                "cannot unmount {UNIFIED}: {}",
                std::io::Error::last_os_error()
            );
            return Ok(());
        }
    }
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let fields: Vec<&str> = line.split('\t').collect();
        let [state, bundle, id] = fields[..] else {
            println!("error bad request {line:?}");
            continue;
        };
        let mut command = Command::new("crun");
        command
            .args(["--root", state, "run", "--bundle", bundle, id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = command.output();
        let took = start.elapsed();
        match out {
            Ok(out) if out.status.success() => println!("ok {}", took.as_nanos()),
            Ok(out) => println!(
                "error {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).replace('\n', " ")
            ),
            Err(e) => println!("error cannot run crun: {e}"),
        }
        std::io::stdout().flush()?;
    }
    Ok(())
}
