//! `vmctl-image`: builds vmctl's images.
//!
//! `vmctl-image hello --busybox /bin/busybox --out hello.tar` writes the
//! built-in `hello:latest` image tarball.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "vmctl-image", version, about = "Builds vmctl's images")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the built-in `hello:latest` image tarball.
    Hello {
        /// A static busybox binary.
        #[arg(long, default_value = "/bin/busybox")]
        busybox: PathBuf,
        /// Where to write the tarball.
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Hello { busybox, out } => {
            let tmp = out.with_extension("tar.partial");
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?,
            );
            vmctl_image::hello::build(&busybox, &mut file)?;
            file.flush()
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &out)
                .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))?;
            Ok(())
        }
    }
}
