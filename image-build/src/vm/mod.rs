//! The VM image: the kernel the VMM boots directly (`vmlinux`), and an
//! initramfs whose `/init` is vmctl-guest, built offline from pinned inputs
//! into byte-identical outputs for identical inputs (`manifest.json`
//! records every digest).
//!
//! amd64 (the host's architecture): a Debian kernel package, the host's
//! busybox, nft and mke2fs; `vmlinux` is the ELF for PVH boot, `bzImage` the
//! package's compressed kernel beside it.
//! arm64 (Apple silicon; `--arch arm64`): Debian's arm64 kernel package and
//! the arm64 packages of busybox-static, nftables, e2fsprogs and their
//! libraries (`--userland DIR` of `.deb`s, pinned in `pins.json`, unpacked
//! into a temporary sysroot, never installed or run); `vmlinux` is the
//! uncompressed arm64 boot `Image` (what `-M virt` and VZ boot), and there
//! is no `bzImage`.

pub mod arch;
pub mod cpio;
pub mod deb;
pub mod elf;
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

use arch::Arch;
use cpio::Node;
use initramfs::Tree;
use libs::Libraries;

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
    #[error("the kernel package's vmlinuz is not an uncompressed arm64 Image")]
    NoArm64Image,
    #[error("an {0} image needs that architecture's userland packages (--userland DIR; image-build/fetch-userland.sh fetches them)")]
    NeedsUserland(Arch),
    #[error(
        "the pinned package {package} is not in {dir} (image-build/fetch-userland.sh fetches it)"
    )]
    MissingPackage { package: String, dir: PathBuf },
    #[error("{path} is not a program for {arch}")]
    WrongArch { path: PathBuf, arch: Arch },
    #[error("cannot read the ELF file {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: elf::ElfError,
    },
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
    /// The guest's architecture.
    pub arch: Arch,
    pub guest: PathBuf,
    pub kernel_deb: PathBuf,
    /// A directory of the architecture's userland `.deb`s (the pinned
    /// ones); required for an architecture other than the host's. The
    /// programs below then default to their paths inside those packages.
    pub userland: Option<PathBuf>,
    /// Default: `/bin/busybox` (host) or the package's.
    pub busybox: Option<PathBuf>,
    /// Default: `/usr/sbin/nft` (host) or the package's.
    pub nft: Option<PathBuf>,
    /// Default: `/usr/sbin/mke2fs` (host) or the package's `/sbin/mke2fs`.
    pub mke2fs: Option<PathBuf>,
    pub out: PathBuf,
    pub unpinned: bool,
}

/// The programs the initramfs holds besides the guest, and where their
/// libraries come from.
struct Programs {
    busybox: PathBuf,
    nft: PathBuf,
    mke2fs: PathBuf,
    libraries: Libraries,
    /// The unpacked userland, when the programs come from packages.
    _sysroot: Option<tempfile::TempDir>,
}

#[derive(Debug, Serialize)]
pub struct Digest256 {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub arch: String,
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

/// `path`'s digest, checked against `pinned` (refused unless `unpinned`
/// is allowed); answers the digest and whether it differs from the pin.
fn check_pin(
    path: &Path,
    pinned: &str,
    allow_unpinned: bool,
) -> Result<(Digest256, bool), VmImageError> {
    let found = digest(&read(path)?);
    let unpinned = found.sha256 != pinned;
    if unpinned && !allow_unpinned {
        return Err(VmImageError::Unpinned {
            path: path.to_owned(),
            actual: found.sha256,
            pinned: pinned.to_owned(),
        });
    }
    Ok((found, unpinned))
}

/// Builds the image into `opts.out`.
pub fn build(opts: &Options) -> Result<Manifest, VmImageError> {
    let (deb_digest, mut unpinned) = check_pin(
        &opts.kernel_deb,
        pins::kernel_for(opts.arch).sha256,
        opts.unpinned,
    )?;
    let package = deb::read_kernel_package(&opts.kernel_deb)?;
    let vmlinux = kernel::boot_kernel(opts.arch, &package.vmlinuz)?;

    let mut tree = Tree::default();
    let mut inputs = BTreeMap::new();
    inputs.insert("kernel_deb".to_owned(), deb_digest);
    let programs = programs(opts, &mut inputs, &mut unpinned)?;
    let module_count = add_modules(&mut tree, &package, opts.arch)?;
    add_programs(&mut tree, opts, &programs, &mut inputs)?;
    add_config(&mut tree, &package.release, opts.arch, &programs)?;
    let initramfs = tree.archive()?;

    let mut outputs = BTreeMap::new();
    let mut files = vec![("vmlinux", &vmlinux)];
    if opts.arch == Arch::Amd64 {
        files.push(("bzImage", &package.vmlinuz));
    }
    files.push(("initramfs.img", &initramfs));
    for (name, bytes) in files {
        write_atomic(&opts.out.join(name), bytes)?;
        outputs.insert(name.to_owned(), digest(bytes));
    }
    let manifest = Manifest {
        arch: opts.arch.to_string(),
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

/// The busybox, nft and mke2fs to use: the host's, or those of the
/// userland packages unpacked into a temporary sysroot (each `.deb` checked
/// against its pin and recorded in `inputs`).
fn programs(
    opts: &Options,
    inputs: &mut BTreeMap<String, Digest256>,
    unpinned: &mut bool,
) -> Result<Programs, VmImageError> {
    let Some(dir) = &opts.userland else {
        if opts.arch != Arch::host() {
            return Err(VmImageError::NeedsUserland(opts.arch));
        }
        return Ok(Programs {
            busybox: opts.busybox.clone().unwrap_or("/bin/busybox".into()),
            nft: opts.nft.clone().unwrap_or("/usr/sbin/nft".into()),
            mke2fs: opts.mke2fs.clone().unwrap_or("/usr/sbin/mke2fs".into()),
            libraries: Libraries::Host,
            _sysroot: None,
        });
    };
    let sysroot = tempfile::tempdir().map_err(|source| VmImageError::Output {
        path: std::env::temp_dir(),
        source,
    })?;
    for pin in pins::userland(opts.arch) {
        let deb = find_deb(dir, pin.package)?;
        let (found, differs) = check_pin(&deb, pin.sha256, opts.unpinned)?;
        *unpinned |= differs;
        inputs.insert(format!("{}.deb", pin.package), found);
        deb::unpack(&deb, sysroot.path())?;
    }
    let root = sysroot.path().to_owned();
    Ok(Programs {
        busybox: opts.busybox.clone().unwrap_or(root.join("bin/busybox")),
        nft: opts.nft.clone().unwrap_or(root.join("usr/sbin/nft")),
        mke2fs: opts.mke2fs.clone().unwrap_or(root.join("sbin/mke2fs")),
        libraries: Libraries::Sysroot {
            root,
            arch: opts.arch,
        },
        _sysroot: Some(sysroot),
    })
}

/// The `.deb` of `package` in `dir` (`<package>_<version>_<arch>.deb`, as
/// `apt-get download` names it); the last one by name if there are several.
fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, VmImageError> {
    let prefix = format!("{package}_");
    let entries = std::fs::read_dir(dir).map_err(|source| VmImageError::Input {
        path: dir.to_owned(),
        source,
    })?;
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| VmImageError::MissingPackage {
        package: package.to_owned(),
        dir: dir.to_owned(),
    })
}

fn add_modules(
    tree: &mut Tree,
    package: &deb::KernelPackage,
    arch: Arch,
) -> Result<usize, VmImageError> {
    let mut deps = modules::ModuleDeps::default();
    for (path, bytes) in &package.modules {
        let depends = modules::modinfo_depends(bytes).unwrap_or_default();
        deps.add(path, &depends);
    }
    let order = deps.load_order(modules::roots(arch.module_roots()))?;
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
    programs: &Programs,
    inputs: &mut BTreeMap<String, Digest256>,
) -> Result<(), VmImageError> {
    let guest = stripped(&opts.guest, opts.arch)?;
    inputs.insert("vmctl-guest".into(), digest(&read(&opts.guest)?));
    tree.file("/init", guest, 0o755);
    for (name, path, at) in [
        ("nft", &programs.nft, "/usr/sbin/nft"),
        ("mke2fs", &programs.mke2fs, "/usr/sbin/mke2fs"),
    ] {
        let bytes = read(path)?;
        inputs.insert(name.into(), digest(&bytes));
        tree.file(at, bytes, 0o755);
    }
    for binary in [&opts.guest, &programs.nft, &programs.mke2fs] {
        for (lib, from) in libs::closure(binary, &programs.libraries)? {
            if !tree.contains(&lib) {
                let bytes = read(&from)?;
                tree.file(&lib, bytes, 0o755);
            }
        }
    }
    let busybox = read(&programs.busybox)?;
    if !libs::closure(&programs.busybox, &programs.libraries)?.is_empty() {
        return Err(VmImageError::NotStatic(programs.busybox.clone()));
    }
    inputs.insert("busybox".into(), digest(&busybox));
    let applets = busybox_applets(&programs.busybox, &busybox, opts.arch)?;
    tree.file("/bin/busybox", busybox, 0o755);
    for applet in applets {
        if !tree.contains(&applet) {
            tree.add(&applet, Node::Symlink("/bin/busybox".into()), 0o777);
        }
    }
    let mut hello = Vec::new();
    crate::hello::build_for(&programs.busybox, Some(opts.arch.as_str()), &mut hello)
        .map_err(VmImageError::Hello)?;
    inputs.insert("hello.tar".into(), digest(&hello));
    tree.file("/usr/share/vmctl/images/hello.tar", hello, 0o644);
    Ok(())
}

/// `busybox --list-full`: applet paths such as `/bin/sh`, `/sbin/udhcpc`;
/// for another architecture's busybox, which cannot run here, its applet
/// names read from the binary, all in `/bin`.
fn busybox_applets(busybox: &Path, bytes: &[u8], arch: Arch) -> Result<Vec<String>, VmImageError> {
    if arch != Arch::host() {
        let names = crate::busybox::applet_names(bytes).ok_or_else(|| {
            VmImageError::Hello(crate::hello::HelloError::NoApplets {
                path: busybox.to_owned(),
            })
        })?;
        return Ok(names.iter().map(|n| format!("/bin/{n}")).collect());
    }
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

/// `binary` without symbols and debug info (`strip`, or the cross
/// `<triple>-strip` for another architecture), or as is without it.
fn stripped(binary: &Path, arch: Arch) -> Result<Vec<u8>, VmImageError> {
    let tmp = tempfile::NamedTempFile::new().map_err(|source| VmImageError::Input {
        path: binary.to_owned(),
        source,
    })?;
    let strip = arch.strip_program();
    let ok = Command::new(&strip)
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
            "vmctl-image: `{strip}` is unavailable; {} goes in unstripped",
            binary.display()
        );
        read(binary)
    }
}

fn add_config(
    tree: &mut Tree,
    release: &str,
    arch: Arch,
    programs: &Programs,
) -> Result<(), VmImageError> {
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
    // mke2fs's defaults: from its own package when it comes from one.
    let mke2fs_conf = match &programs.libraries {
        Libraries::Sysroot { root, .. } => root.join("etc/mke2fs.conf"),
        Libraries::Host => PathBuf::from("/etc/mke2fs.conf"),
    };
    let mke2fs_conf = read(&mke2fs_conf).unwrap_or_default();
    if !mke2fs_conf.is_empty() {
        tree.file("/etc/mke2fs.conf", mke2fs_conf, 0o644);
    }
    let image = serde_json::json!({
        "arch": arch.as_str(),
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
