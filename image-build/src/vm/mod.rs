//! The VM image: `vmlinux` (PVH), `bzImage`, and an initramfs whose `/init`
//! is vmctl-guest, built offline from pinned inputs — a Debian kernel
//! package, the host's busybox, nft and mke2fs — into byte-identical
//! outputs for identical inputs (`manifest.json` records every digest).

pub mod cpio;
pub mod deb;
pub mod initramfs;
pub mod kernel;
pub mod libs;
pub mod modules;
pub mod pins;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;
use sha2::{Digest, Sha256};

use cpio::Node;
use initramfs::Tree;

#[derive(Debug, thiserror::Error)]
pub enum VmImageError {
    #[error("cannot read the kernel package {path}")]
    Deb {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the kernel package's vmlinuz holds no xz-compressed ELF kernel")]
    NoVmlinux,
    #[error("kernel module {0} is not in the kernel package")]
    UnknownModule(String),
    #[error("kernel modules depend on each other in a cycle through {0}")]
    ModuleCycle(String),
    #[error("{path} does not match the pin in image-build/pins.json (sha256 {actual}, pinned {pinned}); pass --unpinned to build anyway")]
    Unpinned {
        path: PathBuf,
        actual: String,
        pinned: String,
    },
    #[error("cannot read {path}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a static binary (the VM's busybox must be busybox-static)")]
    NotStatic(PathBuf),
    #[error("cannot list the libraries of {path}")]
    Ldd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{binary} needs a library the host lacks: {line}")]
    MissingLibrary { binary: PathBuf, line: String },
    #[error("writing the initramfs archive")]
    Archive(#[source] std::io::Error),
    #[error("building the hello image")]
    Hello(#[source] crate::hello::HelloError),
    #[error("cannot write {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to build from.
pub struct Options {
    pub guest: PathBuf,
    pub kernel_deb: PathBuf,
    pub busybox: PathBuf,
    pub nft: PathBuf,
    pub mke2fs: PathBuf,
    pub out: PathBuf,
    pub unpinned: bool,
}

#[derive(Debug, Serialize)]
pub struct Digest256 {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub kernel_release: String,
    pub inputs: BTreeMap<String, Digest256>,
    pub outputs: BTreeMap<String, Digest256>,
    pub initramfs_files: usize,
    pub modules: usize,
    pub unpinned: bool,
}

pub fn digest(bytes: &[u8]) -> Digest256 {
    Digest256 {
        sha256: hex::encode(Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

fn read(path: &Path) -> Result<Vec<u8>, VmImageError> {
    std::fs::read(path).map_err(|source| VmImageError::Input {
        path: path.to_owned(),
        source,
    })
}

/// Builds the image into `opts.out`.
pub fn build(opts: &Options) -> Result<Manifest, VmImageError> {
    let deb_bytes = read(&opts.kernel_deb)?;
    let deb_digest = digest(&deb_bytes);
    drop(deb_bytes);
    let pinned = pins::kernel().sha256;
    let unpinned = deb_digest.sha256 != pinned;
    if unpinned && !opts.unpinned {
        return Err(VmImageError::Unpinned {
            path: opts.kernel_deb.clone(),
            actual: deb_digest.sha256,
            pinned: pinned.to_owned(),
        });
    }
    let package = deb::read_kernel_package(&opts.kernel_deb)?;
    let vmlinux = kernel::vmlinux(&package.vmlinuz)?;

    let mut tree = Tree::default();
    let mut inputs = BTreeMap::new();
    inputs.insert("kernel_deb".to_owned(), deb_digest);
    let module_count = add_modules(&mut tree, &package)?;
    add_programs(&mut tree, opts, &mut inputs)?;
    add_config(&mut tree, &package.release)?;
    let initramfs = tree.archive()?;

    let mut outputs = BTreeMap::new();
    for (name, bytes) in [
        ("vmlinux", &vmlinux),
        ("bzImage", &package.vmlinuz),
        ("initramfs.img", &initramfs),
    ] {
        write_atomic(&opts.out.join(name), bytes)?;
        outputs.insert(name.to_owned(), digest(bytes));
    }
    let manifest = Manifest {
        kernel_release: package.release.clone(),
        inputs,
        outputs,
        initramfs_files: tree.len(),
        modules: module_count,
        unpinned,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| VmImageError::Output {
        path: opts.out.join("manifest.json"),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&opts.out.join("manifest.json"), &json)?;
    Ok(manifest)
}

fn add_modules(tree: &mut Tree, package: &deb::KernelPackage) -> Result<usize, VmImageError> {
    let mut deps = modules::ModuleDeps::default();
    for (path, bytes) in &package.modules {
        let depends = modules::modinfo_depends(bytes).unwrap_or_default();
        deps.add(path, &depends);
    }
    let order = deps.load_order(modules::roots(modules::ROOTS))?;
    let base = format!("/lib/modules/{}", package.release);
    // `<level> <path>` in load order: a level's modules need only lower levels.
    let mut list = String::new();
    for (path, level) in order.iter().zip(deps.levels(&order)) {
        let bytes = package.modules[path].clone();
        let full = format!("{base}/{path}");
        tree.file(&full, bytes, 0o644);
        list.push_str(&format!("{level} {full}\n"));
    }
    tree.file("/etc/vmctl/modules", list.into_bytes(), 0o644);
    Ok(order.len())
}

fn add_programs(
    tree: &mut Tree,
    opts: &Options,
    inputs: &mut BTreeMap<String, Digest256>,
) -> Result<(), VmImageError> {
    let guest = stripped(&opts.guest)?;
    inputs.insert("vmctl-guest".into(), digest(&read(&opts.guest)?));
    tree.file("/init", guest, 0o755);
    for (name, path, at) in [
        ("nft", &opts.nft, "/usr/sbin/nft"),
        ("mke2fs", &opts.mke2fs, "/usr/sbin/mke2fs"),
    ] {
        let bytes = read(path)?;
        inputs.insert(name.into(), digest(&bytes));
        tree.file(at, bytes, 0o755);
    }
    for binary in [&opts.guest, &opts.nft, &opts.mke2fs] {
        for lib in libs::closure(binary)? {
            if !tree.contains(&lib) {
                let bytes = read(Path::new(&lib))?;
                tree.file(&lib, bytes, 0o755);
            }
        }
    }
    let busybox = read(&opts.busybox)?;
    if !libs::closure(&opts.busybox)?.is_empty() {
        return Err(VmImageError::NotStatic(opts.busybox.clone()));
    }
    inputs.insert("busybox".into(), digest(&busybox));
    tree.file("/bin/busybox", busybox, 0o755);
    for applet in busybox_applets(&opts.busybox)? {
        if !tree.contains(&applet) {
            tree.add(&applet, Node::Symlink("/bin/busybox".into()), 0o777);
        }
    }
    let mut hello = Vec::new();
    crate::hello::build(&opts.busybox, &mut hello).map_err(VmImageError::Hello)?;
    inputs.insert("hello.tar".into(), digest(&hello));
    tree.file("/usr/share/vmctl/images/hello.tar", hello, 0o644);
    Ok(())
}

/// `busybox --list-full`: applet paths such as `bin/sh`, `sbin/udhcpc`.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>, VmImageError> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|source| VmImageError::Input {
            path: busybox.to_owned(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && *l != "bin/busybox")
        .map(|l| format!("/{}", l.trim()))
        .collect())
}

/// `binary` without symbols and debug info (`strip`), or as is without `strip`.
fn stripped(binary: &Path) -> Result<Vec<u8>, VmImageError> {
    let tmp = tempfile::NamedTempFile::new().map_err(|source| VmImageError::Input {
        path: binary.to_owned(),
        source,
    })?;
    let ok = Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(tmp.path())
        .arg(binary)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        read(tmp.path())
    } else {
        eprintln!(
            "vmctl-image: `strip` is unavailable; {} goes in unstripped",
            binary.display()
        );
        read(binary)
    }
}

fn add_config(tree: &mut Tree, release: &str) -> Result<(), VmImageError> {
    for dir in [
        "/proc",
        "/sys",
        "/sys/fs/cgroup",
        "/dev",
        "/run",
        "/root",
        "/mnt",
        "/var/lib/vmctl",
    ] {
        tree.dir(dir, 0o755);
    }
    tree.dir("/tmp", 0o1777);
    tree.add(
        "/dev/console",
        Node::CharDevice { major: 5, minor: 1 },
        0o600,
    );
    tree.add("/dev/null", Node::CharDevice { major: 1, minor: 3 }, 0o666);
    tree.file(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    );
    tree.file("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
    tree.file("/etc/hostname", b"vmctl\n".to_vec(), 0o644);
    tree.file(
        "/etc/hosts",
        b"127.0.0.1\tlocalhost\n127.0.1.1\tvmctl\n".to_vec(),
        0o644,
    );
    // The builder's CA bundle, so the engine can verify registries over
    // HTTPS (Docker Hub and the like); the engine refuses HTTPS without it.
    let ca_bundle = read(Path::new(CA_BUNDLE)).unwrap_or_default();
    if !ca_bundle.is_empty() {
        tree.file(CA_BUNDLE, ca_bundle, 0o644);
    }
    let mke2fs_conf = read(Path::new("/etc/mke2fs.conf")).unwrap_or_default();
    if !mke2fs_conf.is_empty() {
        tree.file("/etc/mke2fs.conf", mke2fs_conf, 0o644);
    }
    let image = serde_json::json!({
        "kernel_release": release,
        "vmctl_image": env!("CARGO_PKG_VERSION"),
    });
    tree.file(
        "/etc/vmctl/image.json",
        image.to_string().into_bytes(),
        0o644,
    );
    Ok(())
}

/// Where Debian keeps its CA certificates (one PEM bundle).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), VmImageError> {
    let io = |source| VmImageError::Output {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
