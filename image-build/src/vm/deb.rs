//! Reading a Debian package without dpkg: a `.deb` is an `ar` archive whose
//! `data.tar.xz` member holds the files. Only the kernel package's members
//! the image needs are kept: the compressed kernel and the `.ko` files.
//! Another architecture's userland packages are unpacked whole into a
//! directory (a sysroot), never installed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::VmImageError;

/// What the image takes from a kernel package.
pub struct KernelPackage {
    /// `uname -r` of the kernel (`6.1.0-56-amd64`).
    pub release: String,
    /// `boot/vmlinuz-<release>`, as is.
    pub vmlinuz: Vec<u8>,
    /// Every module, by path relative to `lib/modules/<release>/`.
    pub modules: BTreeMap<String, Vec<u8>>,
}

pub fn read_kernel_package(deb: &Path) -> Result<KernelPackage, VmImageError> {
    with_data(deb, |data| read_data(data))
}

/// Unpacks every file, directory and symlink of `deb` under `root`
/// (permissions kept, owners and times not: the tree is only read).
pub fn unpack(deb: &Path, root: &Path) -> Result<(), VmImageError> {
    with_data(deb, |data| {
        let mut tar = tar::Archive::new(data);
        tar.set_preserve_mtime(false);
        tar.set_overwrite(true);
        tar.unpack(root)
    })
}

/// Runs `read` over the decompressed `data.tar.xz` of `deb`.
fn with_data<T>(
    deb: &Path,
    read: impl FnOnce(&mut dyn Read) -> std::io::Result<T>,
) -> Result<T, VmImageError> {
    let io = |source| VmImageError::Deb {
        path: deb.to_owned(),
        source,
    };
    let file = std::fs::File::open(deb).map_err(io)?;
    let mut archive = ar::Archive::new(std::io::BufReader::new(file));
    while let Some(entry) = archive.next_entry() {
        let entry = entry.map_err(io)?;
        if entry.header().identifier() != b"data.tar.xz" {
            continue;
        }
        return read(&mut xz2::read::XzDecoder::new(entry)).map_err(io);
    }
    Err(io(std::io::Error::other("no data.tar.xz member")))
}

fn read_data(data: impl Read) -> std::io::Result<KernelPackage> {
    let mut vmlinuz = None;
    let mut modules = BTreeMap::new();
    let mut tar = tar::Archive::new(data);
    for entry in tar.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path.trim_start_matches("./").to_owned();
        if let Some(release) = path.strip_prefix("boot/vmlinuz-") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            vmlinuz = Some((release.to_owned(), bytes));
        } else if let Some(rest) = path.strip_prefix("lib/modules/") {
            if let Some((_, inside)) = rest.split_once('/').filter(|_| path.ends_with(".ko")) {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                modules.insert(inside.to_owned(), bytes);
            }
        }
    }
    let (release, vmlinuz) =
        vmlinuz.ok_or_else(|| std::io::Error::other("no boot/vmlinuz-* in the package"))?;
    Ok(KernelPackage {
        release,
        vmlinuz,
        modules,
    })
}
