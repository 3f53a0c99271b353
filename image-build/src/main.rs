//! `vmctl-image`: builds vmctl's images.
//!
//! `vmctl-image hello --busybox /bin/busybox --out hello.tar` writes the
//! built-in `hello:latest` image tarball; `vmctl-image vm --kernel-deb DEB`
//! builds the VM image into `target/vm`; `vmctl-image vm --arch arm64
//! --kernel-deb DEB --userland DIR --out target/vm-arm64` the arm64 one from
//! Debian's arm64 packages.

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
    /// Build the VM image: vmlinux, bzImage (amd64), initramfs.img, manifest.json.
    Vm {
        /// The guest's architecture (default: this host's).
        #[arg(long, value_enum, default_value_t = vmctl_image::vm::arch::Arch::host())]
        arch: vmctl_image::vm::arch::Arch,
        /// The vmctl-guest binary that becomes /init (a release build).
        #[arg(long, default_value = "target/release/vmctl-guest")]
        guest: PathBuf,
        /// The Debian kernel package (image-build/fetch-kernel.sh fetches the pinned one).
        #[arg(long)]
        kernel_deb: PathBuf,
        /// A directory of the architecture's pinned userland .deb files
        /// (image-build/fetch-userland.sh); required for another architecture.
        #[arg(long)]
        userland: Option<PathBuf>,
        /// A static busybox (the debug shell, udhcpc, the hello image)
        /// [default: /bin/busybox, or the userland package's].
        #[arg(long)]
        busybox: Option<PathBuf>,
        /// The nft binary the engine runs [default: /usr/sbin/nft, or the package's].
        #[arg(long)]
        nft: Option<PathBuf>,
        /// mke2fs, which formats the data disk on first boot
        /// [default: /usr/sbin/mke2fs, or the package's].
        #[arg(long)]
        mke2fs: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "target/vm")]
        out: PathBuf,
        /// Build from a kernel package other than the pinned one.
        #[arg(long)]
        unpinned: bool,
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
        Command::Vm {
            arch,
            guest,
            kernel_deb,
            userland,
            busybox,
            nft,
            mke2fs,
            out,
            unpinned,
        } => {
            let started = std::time::Instant::now();
            let options = vmctl_image::vm::Options {
                arch,
                guest,
                kernel_deb,
                userland,
                busybox,
                nft,
                mke2fs,
                out,
                unpinned,
            };
            let manifest = vmctl_image::vm::build(&options)?;
            println!(
                "{} VM image for kernel {} in {} ({} modules, {} initramfs entries{}; {:.1} s)",
                manifest.arch,
                manifest.kernel_release,
                options.out.display(),
                manifest.modules,
                manifest.initramfs_files,
                if manifest.unpinned {
                    ", UNPINNED kernel"
                } else {
                    ""
                },
                started.elapsed().as_secs_f64()
            );
            for (name, digest) in &manifest.outputs {
                println!(
                    "  {name:<14} {:>7.2} MiB  sha256:{}",
                    digest.size as f64 / (1024.0 * 1024.0),
                    digest.sha256
                );
            }
            Ok(())
        }
    }
}
