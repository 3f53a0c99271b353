//! The build context as received: the client's tar kept as one file, and an
//! index of its entries (path, type, mode, owner, size, link target and the
//! SHA-256 of each file's bytes) made while it streams in.
//!
//! A rebuild of an unchanged context then does no work beyond hashing it:
//! the Dockerfile comes from the index, each COPY's cache key from the
//! index's hashes, and the context is unpacked (by the checked layer
//! unpacker, [`super::context::unpack`]) only when a COPY or ADD has to run.
//! A source whose path goes through a symlink of the context is left to the
//! unpacked tree, where it is resolved inside the context as before
//! ([`Lookup::Unpack`]).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::copy::{clean_in_root, has_wildcards, wildcard_match, CopyError, Item, Source, Stat};
use crate::image::ImageError;

/// One entry of the context.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// The tar entry type (`b'0'` file, `b'5'` directory, `b'2'` symlink…).
    kind: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    /// Seconds since the epoch.
    mtime: u64,
    link: Option<String>,
    /// SHA-256 of a regular file's bytes.
    digest: Option<[u8; 32]>,
    /// Where a regular file's bytes are in the kept tar.
    offset: Option<u64>,
}

/// What the index can say of a COPY's sources.
#[derive(Debug)]
pub enum Lookup {
    /// The sources (cleaned paths in the context) and their content hash.
    Found(Vec<String>, String),
    /// A path goes through (or is) a symlink: resolve it in the unpacked
    /// context instead.
    Unpack,
}

/// The received context.
#[derive(Debug)]
pub struct Context {
    /// Where it is unpacked, on first need.
    dir: PathBuf,
    /// The decompressed tar as received.
    tar: PathBuf,
    entries: BTreeMap<String, Entry>,
    /// The Dockerfile's bytes, when it is a regular file of the context.
    dockerfile: Option<Vec<u8>>,
    unpacked: Mutex<bool>,
    /// Paths `.dockerignore` drops (see [`Context::drop_ignored`]).
    dropped: Vec<String>,
}

/// Removes the file `path` of the unpacked context, its parent reached
/// inside the context (a context's own links cannot lead it out).
fn remove_in_root(root: &Path, path: &str) -> Result<(), ImageError> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let dir =
        crate::runtime::in_root::open_path(root, if parent.is_empty() { "." } else { parent })
            .map_err(|e| ImageError::io("open", root.join(parent), e))?;
    match nix::unistd::unlinkat(
        Some(std::os::fd::AsRawFd::as_raw_fd(&dir)),
        name,
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    ) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(ImageError::io("remove", root.join(path), e.into())),
    }
}

/// Reads everything through, writing it to `out` as it goes.
struct Tee<R, W> {
    inner: R,
    out: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn read_error(entry: &str) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::ReadLayer {
        entry: entry.to_owned(),
        source,
    }
}

impl Context {
    /// Receives the client's tar (plain, gzip or zstd; a stream the CLI
    /// ended without padding is completed) into `tar`, indexing it;
    /// `dockerfile` (a path in the context) is kept in memory when it is a
    /// regular file of at most [`super::context::MAX_DOCKERFILE`] bytes.
    pub fn receive(
        body: impl Read,
        tar: &Path,
        dir: &Path,
        dockerfile: &str,
    ) -> Result<Self, ImageError> {
        let plain = super::context::padded(crate::image::unpack::decompress(body)?);
        let file = File::create(tar).map_err(|e| ImageError::io("create", tar, e))?;
        let mut tee = Tee {
            inner: plain,
            out: BufWriter::new(file),
        };
        let wanted = clean_in_root(dockerfile);
        let mut entries = BTreeMap::new();
        let mut kept = None;
        {
            let mut archive = tar::Archive::new(&mut tee);
            for entry in archive.entries().map_err(read_error("(start)"))? {
                let mut entry = entry.map_err(read_error("(next)"))?;
                let name = entry
                    .path()
                    .map_err(read_error("(name)"))?
                    .to_string_lossy()
                    .into_owned();
                let path = clean_in_root(&name);
                let header = entry.header();
                let kind = header.entry_type().as_byte();
                let mut record = Entry {
                    kind,
                    mode: header.mode().unwrap_or(0),
                    uid: header.uid().unwrap_or(0),
                    gid: header.gid().unwrap_or(0),
                    size: entry.size(),
                    mtime: header.mtime().unwrap_or(0),
                    link: entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.to_string_lossy().into_owned()),
                    digest: None,
                    offset: None,
                };
                if entry.header().entry_type().is_file() {
                    record.offset = Some(entry.raw_file_position());
                    let keep = path == wanted && record.size <= super::context::MAX_DOCKERFILE;
                    let mut hasher = Sha256::new();
                    let mut bytes = Vec::new();
                    let mut buf = [0u8; 64 << 10];
                    loop {
                        let n = entry.read(&mut buf).map_err(read_error(&name))?;
                        if n == 0 {
                            break;
                        }
                        hasher.update(&buf[..n]);
                        if keep {
                            bytes.extend_from_slice(&buf[..n]);
                        }
                    }
                    record.digest = Some(hasher.finalize().into());
                    if keep {
                        kept = Some(bytes);
                    }
                }
                if !path.is_empty() {
                    entries.insert(path, record);
                }
            }
        }
        // The end blocks, and whatever follows them, go to the file too.
        io::copy(&mut tee, &mut io::sink()).map_err(read_error("(end)"))?;
        tee.out
            .flush()
            .map_err(|e| ImageError::io("write", tar, e))?;
        Ok(Self {
            dir: dir.to_owned(),
            tar: tar.to_owned(),
            entries,
            dockerfile: kept,
            unpacked: Mutex::new(false),
            dropped: Vec::new(),
        })
    }

    /// Drops `.dockerignore` and the Dockerfile from the context when the
    /// context's `.dockerignore` names them, as dockerd's classic builder
    /// does (`super::dockerignore`). A Dockerfile is dropped only when the
    /// index kept its bytes (one read from the unpacked context stays).
    pub fn drop_ignored(&mut self, dockerfile: &str) -> Result<(), ImageError> {
        const IGNORE: &str = ".dockerignore";
        let Some((at, size)) = self
            .entries
            .get(IGNORE)
            .filter(|e| e.kind == b'0' && e.size <= super::context::MAX_DOCKERFILE)
            .and_then(|e| Some((e.offset?, e.size)))
        else {
            return Ok(());
        };
        let mut bytes = vec![0u8; size as usize];
        File::open(&self.tar)
            .and_then(|file| std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, at))
            .map_err(|e| ImageError::io("read", &self.tar, e))?;
        let patterns = super::dockerignore::Patterns::parse(&String::from_utf8_lossy(&bytes));
        let dockerfile = clean_in_root(dockerfile);
        for path in [IGNORE.to_owned(), dockerfile.clone()] {
            if path == dockerfile && self.dockerfile.is_none() {
                continue;
            }
            if patterns.excludes(&path) && self.entries.remove(&path).is_some() {
                self.dropped.push(path);
            }
        }
        Ok(())
    }

    /// The unpacked context, unpacking it the first time.
    pub fn unpacked(&self) -> Result<&Path, ImageError> {
        let mut done = self.unpacked.lock().unwrap_or_else(|p| p.into_inner());
        if !*done {
            let file = File::open(&self.tar).map_err(|e| ImageError::io("open", &self.tar, e))?;
            super::context::unpack(file, &self.dir)?;
            for path in &self.dropped {
                remove_in_root(&self.dir, path)?;
            }
            *done = true;
        }
        Ok(&self.dir)
    }

    /// The Dockerfile's text, from the index when the client sent it as a
    /// regular file, else read in the unpacked context.
    pub fn dockerfile(&self, name: &str) -> Result<String, String> {
        if let Some(bytes) = &self.dockerfile {
            return String::from_utf8(bytes.clone())
                .map_err(|_| format!("the Dockerfile ({name}) is not UTF-8 text"));
        }
        let dir = self
            .unpacked()
            .map_err(|e| format!("the build context is not a readable tar archive: {e}"))?;
        super::context::read_dockerfile(dir, name)
    }

    /// Whether `path` is a directory of the context (an entry, or implied
    /// by entries below it).
    fn is_dir(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        if let Some(entry) = self.entries.get(path) {
            return entry.kind == b'5';
        }
        let prefix = format!("{path}/");
        self.entries
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    /// Whether `path` or one of its parents is a symlink of the context.
    fn through_link(&self, path: &str) -> bool {
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if self.entries.get(&at).is_some_and(|e| e.kind == b'2') {
                return true;
            }
        }
        false
    }

    /// Every path of the context (entries and implied directories), sorted.
    fn all_paths(&self) -> Vec<String> {
        let mut paths: std::collections::BTreeSet<String> = self.entries.keys().cloned().collect();
        for key in self.entries.keys() {
            let mut at = key.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                paths.insert(parent.to_owned());
                at = parent;
            }
        }
        paths.into_iter().collect()
    }

    /// A COPY's sources and their hash, from the index: the same sources
    /// [`super::copy::expand_sources`] finds in the unpacked context.
    pub fn lookup(&self, patterns: &[String]) -> Result<Lookup, CopyError> {
        let mut sources = Vec::new();
        let mut all: Option<Vec<String>> = None;
        for pattern in patterns {
            let cleaned = clean_in_root(pattern);
            if has_wildcards(&cleaned) {
                let paths = all.get_or_insert_with(|| self.all_paths());
                sources.extend(
                    paths
                        .iter()
                        .filter(|p| wildcard_match(&cleaned, p))
                        .cloned(),
                );
            } else if self.entries.contains_key(&cleaned) || self.is_dir(&cleaned) {
                sources.push(cleaned);
            } else if self.through_link(&cleaned) {
                return Ok(Lookup::Unpack);
            } else {
                return Err(CopyError::NotFound(
                    pattern.trim_start_matches('/').to_owned(),
                ));
            }
        }
        if sources.is_empty() {
            return Err(CopyError::NoSources);
        }
        if sources.iter().any(|s| self.through_link(s)) {
            return Ok(Lookup::Unpack);
        }
        let mut all = Sha256::new();
        for source in &sources {
            all.update(source.as_bytes());
            all.update([0]);
            let prefix = if source.is_empty() {
                String::new()
            } else {
                format!("{source}/")
            };
            if let Some(entry) = self.entries.get(source) {
                hash_entry(&mut all, "", entry);
            }
            for (path, entry) in self.entries.range(prefix.clone()..) {
                if !path.starts_with(&prefix) {
                    break;
                }
                hash_entry(&mut all, &path[prefix.len()..], entry);
            }
        }
        let kind = match sources.as_slice() {
            [one] if self.is_dir(one) => "dir",
            [_] => "file",
            _ => "multi",
        };
        Ok(Lookup::Found(
            sources,
            format!("{kind}:{}", hex::encode(all.finalize())),
        ))
    }
}

/// The context's tar read through its index: the [`Source`] of a COPY that
/// needs nothing unpacked. A directory is its path in the context (`""`,
/// the root).
pub struct Tree<'a> {
    context: &'a Context,
    tar: File,
    /// The COPY's sources.
    items: Vec<Item<String>>,
}

impl Entry {
    /// The entry as the unpacked context would `lstat` it, when it is a
    /// regular file, directory or symlink (all a tree copy reads).
    fn stat(&self) -> Option<Stat> {
        let kind = match self.kind {
            b'0' => libc::S_IFREG,
            b'5' => libc::S_IFDIR,
            b'2' => libc::S_IFLNK,
            _ => return None,
        };
        let owner = (u32::try_from(self.uid).ok()?, u32::try_from(self.gid).ok()?);
        let mtime = (i64::try_from(self.mtime).ok()?, 0);
        Some(Stat::new(
            kind | (self.mode & 0o7777),
            owner,
            self.size,
            mtime,
        ))
    }

    /// Whether [`Tree`] can read it: a directory, a symlink, or a regular
    /// file whose bytes are where the index says.
    fn readable(&self) -> bool {
        match self.kind {
            b'0' => self.offset.is_some(),
            b'2' => self.link.is_some(),
            b'5' => true,
            _ => false,
        }
    }
}

impl Context {
    /// The sources (as [`Self::lookup`] found them) as items of the tar,
    /// when the index can serve the copy: each source the root or a
    /// directory or regular file entry, and everything below it a
    /// [`Entry::readable`] entry in a directory entry (no directory only
    /// implied, no path through a link, no hard link or device). `None`:
    /// unpack the context instead.
    pub fn tree(&self, sources: &[String]) -> Result<Option<Tree<'_>>, CopyError> {
        let mut items = Vec::new();
        for source in sources {
            if !source.is_empty() {
                let Some(entry) = self.entries.get(source) else {
                    return Ok(None);
                };
                match (entry.kind, entry.stat()) {
                    (b'5', Some(_)) => {}
                    (b'0', Some(st)) if entry.readable() => {
                        let (parent, name) = source.rsplit_once('/').unwrap_or(("", source));
                        items.push(Item::File {
                            parent: parent.to_owned(),
                            name: OsString::from(name),
                            st,
                        });
                        continue;
                    }
                    _ => return Ok(None),
                }
            }
            let prefix = if source.is_empty() {
                String::new()
            } else {
                format!("{source}/")
            };
            for (path, entry) in self.entries.range(prefix.clone()..) {
                if !path.starts_with(&prefix) {
                    break;
                }
                let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
                let in_dir = parent == source.as_str()
                    || self.entries.get(parent).is_some_and(|p| p.kind == b'5');
                if !in_dir || !entry.readable() || entry.stat().is_none() {
                    return Ok(None);
                }
            }
            items.push(Item::Dir(source.clone()));
        }
        let tar = File::open(&self.tar).map_err(|source| CopyError::Io {
            what: "open",
            path: self.tar.display().to_string(),
            source,
        })?;
        Ok(Some(Tree {
            context: self,
            tar,
            items,
        }))
    }
}

fn child_path(dir: &str, name: &OsStr) -> String {
    let name = name.to_string_lossy();
    if dir.is_empty() {
        name.into_owned()
    } else {
        format!("{dir}/{name}")
    }
}

impl Tree<'_> {
    /// The COPY's sources, as [`super::copy::copy_items`] takes them.
    pub fn items(&self) -> &[Item<String>] {
        &self.items
    }

    fn entry(&self, dir: &str, name: &OsStr) -> Result<&Entry, CopyError> {
        let path = child_path(dir, name);
        self.context
            .entries
            .get(&path)
            .ok_or(CopyError::NotFound(path))
    }
}

impl Source for Tree<'_> {
    type Dir = String;

    fn entries(&self, dir: &String) -> Result<Vec<(OsString, Stat)>, CopyError> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut out = Vec::new();
        for (path, entry) in self.context.entries.range(prefix.clone()..) {
            let Some(name) = path.strip_prefix(&prefix) else {
                break;
            };
            if name.contains('/') {
                continue;
            }
            let st = entry
                .stat()
                .ok_or_else(|| CopyError::Device(format!("/{path}")))?;
            out.push((OsString::from(name), st));
        }
        Ok(out)
    }

    fn child(&self, dir: &String, name: &OsStr) -> Result<String, CopyError> {
        Ok(child_path(dir, name))
    }

    fn open_file(&self, dir: &String, name: &OsStr) -> Result<Box<dyn Read + '_>, CopyError> {
        let entry = self.entry(dir, name)?;
        let at = entry
            .offset
            .ok_or_else(|| CopyError::Device(format!("/{}", child_path(dir, name))))?;
        Ok(Box::new(Region {
            file: &self.tar,
            at,
            left: entry.size,
        }))
    }

    fn read_link(&self, dir: &String, name: &OsStr) -> Result<OsString, CopyError> {
        let entry = self.entry(dir, name)?;
        Ok(OsString::from(entry.link.clone().unwrap_or_default()))
    }

    fn shown(&self, dir: &String, name: &OsStr) -> String {
        format!("/{}", child_path(dir, name))
    }
}

/// A file's bytes inside the kept tar.
struct Region<'a> {
    file: &'a File,
    at: u64,
    left: u64,
}

impl Read for Region<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.at += n as u64;
        self.left -= n as u64;
        Ok(n)
    }
}

/// What of an entry counts for the cache: not its times.
fn hash_entry(hasher: &mut Sha256, rel: &str, entry: &Entry) {
    hasher.update(format!(
        "{rel}\0{} {:o} {} {} {}\0",
        entry.kind, entry.mode, entry.uid, entry.gid, entry.size
    ));
    if let Some(link) = &entry.link {
        hasher.update(link.as_bytes());
    }
    if let Some(digest) = &entry.digest {
        hasher.update(digest);
    }
    hasher.update([0]);
}

#[cfg(test)]
mod tests {
    use super::super::copy::{self, Ownership};
    use super::*;

    fn context(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let specs: Vec<Spec<'_>> = entries
            .iter()
            .map(|(path, data)| (*path, tar::EntryType::Regular, 0o644, 0, *data))
            .chain(links.iter().map(|(path, target)| {
                (*path, tar::EntryType::Symlink, 0o777, 0, target.as_bytes())
            }))
            .collect();
        context_of(&specs)
    }

    fn found(lookup: Lookup) -> (Vec<String>, String) {
        match lookup {
            Lookup::Found(s, h) => (s, h),
            Lookup::Unpack => panic!("unexpected fallback"),
        }
    }

    #[test]
    fn the_index_finds_sources_and_hashes_contents_not_times() {
        let (_d, ctx) = context(
            &[
                ("Dockerfile", b"FROM x\n"),
                ("src/a.txt", b"a"),
                ("src/b.txt", b"b"),
                ("one.txt", b"1"),
            ],
            &[("link", "/etc/shadow")],
        );
        assert_eq!(ctx.dockerfile("Dockerfile").unwrap(), "FROM x\n");
        let (sources, dir_hash) = found(ctx.lookup(&["src/".to_owned()]).unwrap());
        assert_eq!(sources, ["src"]);
        assert!(dir_hash.starts_with("dir:"));
        let (sources, _) = found(ctx.lookup(&["*.txt".to_owned()]).unwrap());
        assert_eq!(sources, ["one.txt"]);
        let (sources, _) = found(ctx.lookup(&["src/*".to_owned()]).unwrap());
        assert_eq!(sources, ["src/a.txt", "src/b.txt"]);
        assert!(matches!(
            ctx.lookup(&["link".to_owned()]),
            Ok(Lookup::Unpack)
        ));
        assert!(matches!(
            ctx.lookup(&["nope".to_owned()]),
            Err(CopyError::NotFound(_))
        ));
        assert!(matches!(
            ctx.lookup(&["*.none".to_owned()]),
            Err(CopyError::NoSources)
        ));
        // A changed byte changes the hash of the directory holding it.
        let (_d2, other) = context(
            &[
                ("Dockerfile", b"FROM x\n"),
                ("src/a.txt", b"A"),
                ("src/b.txt", b"b"),
                ("one.txt", b"1"),
            ],
            &[],
        );
        let (_, changed) = found(other.lookup(&["src/".to_owned()]).unwrap());
        assert_ne!(changed, dir_hash);
        // The unpacked context holds what the tar held.
        let dir = ctx.unpacked().unwrap();
        assert_eq!(std::fs::read(dir.join("src/b.txt")).unwrap(), b"b");
    }

    #[test]
    fn a_dockerignore_naming_the_dockerfile_and_itself_drops_them() {
        let (_d, mut ctx) = context(
            &[
                ("Dockerfile", b"FROM x\n"),
                (".dockerignore", b"Dockerfile\n.dockerignore\n"),
                ("kept.txt", b"k"),
            ],
            &[],
        );
        ctx.drop_ignored("Dockerfile").unwrap();
        let (sources, _) = found(ctx.lookup(&[".".to_owned()]).unwrap());
        assert_eq!(sources, [""]);
        assert!(ctx.entries.contains_key("kept.txt"));
        assert!(!ctx.entries.contains_key("Dockerfile"));
        assert!(!ctx.entries.contains_key(".dockerignore"));
        // Its text was read before: the build still has it.
        assert_eq!(ctx.dockerfile("Dockerfile").unwrap(), "FROM x\n");
        let dir = ctx.unpacked().unwrap();
        assert!(dir.join("kept.txt").exists());
        assert!(!dir.join("Dockerfile").exists());
        assert!(!dir.join(".dockerignore").exists());

        // Not named: both stay.
        let (_d, mut ctx) = context(
            &[("Dockerfile", b"FROM x\n"), (".dockerignore", b"*.log\n")],
            &[],
        );
        ctx.drop_ignored("Dockerfile").unwrap();
        assert!(ctx.entries.contains_key("Dockerfile"));
        assert!(ctx.entries.contains_key(".dockerignore"));
    }

    /// One entry of a test context: path, type, mode, mtime, data or link.
    type Spec<'a> = (&'a str, tar::EntryType, u32, u64, &'a [u8]);

    /// A context as the docker CLI sends one: every directory an entry.
    fn context_of(specs: &[Spec<'_>]) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, mode, mtime, data) in specs {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(*mode);
            header.set_mtime(*mtime);
            header.set_uid(1000);
            header.set_gid(1000);
            match *kind {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    header.set_size(0);
                    let target = std::str::from_utf8(data).unwrap();
                    builder.append_link(&mut header, path, target).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, path, *data).unwrap();
                }
            }
        }
        let bytes = builder.into_inner().unwrap();
        std::fs::create_dir(dir.path().join("ctx")).unwrap();
        let ctx = Context::receive(
            &bytes[..],
            &dir.path().join("ctx.tar"),
            &dir.path().join("ctx"),
            "Dockerfile",
        )
        .unwrap();
        (dir, ctx)
    }

    /// An entry as a test sees it: path, type and mode, owner, mtime, and
    /// the bytes of a file or the target of a link.
    type Listed = (String, u32, (u32, u32), i64, Vec<u8>);

    /// Every entry below `root`.
    fn listing(root: &Path) -> Vec<Listed> {
        use std::os::unix::fs::MetadataExt;
        fn walk(root: &Path, rel: &str, out: &mut Vec<Listed>) {
            let mut names: Vec<_> = std::fs::read_dir(root.join(rel))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            for name in names {
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let full = root.join(&path);
                let meta = std::fs::symlink_metadata(&full).unwrap();
                let data = if meta.is_file() {
                    std::fs::read(&full).unwrap()
                } else if meta.file_type().is_symlink() {
                    std::fs::read_link(&full)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    Vec::new()
                };
                out.push((
                    path.clone(),
                    meta.mode(),
                    (meta.uid(), meta.gid()),
                    meta.mtime(),
                    data,
                ));
                if meta.is_dir() {
                    walk(root, &path, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(root, "", &mut out);
        out
    }

    #[test]
    fn a_copy_from_the_tar_makes_what_a_copy_from_the_unpacked_context_makes() {
        use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
        let big = vec![7u8; 200_000];
        let (_d, ctx) = context_of(&[
            ("Dockerfile", F, 0o644, 100, b"FROM x\n"),
            ("app", D, 0o750, 200, b""),
            ("app/run.sh", F, 0o4755, 300, b"#!/bin/sh\n"),
            ("app/big.bin", F, 0o600, 400, &big),
            ("app/empty", F, 0o644, 500, b""),
            ("app/lib", D, 0o755, 600, b""),
            ("app/lib/x.so", F, 0o644, 700, b"x"),
            ("app/lib/current", L, 0o777, 800, b"x.so"),
            ("app/lib/out", L, 0o777, 800, b"/etc/shadow"),
            ("top.txt", F, 0o640, 900, b"top"),
        ]);
        let cases: &[(&[&str], &str, Ownership)] = &[
            (&["app"], "/dst/", Ownership::default()),
            (&["app/"], "/dst", Ownership::default()),
            (&["."], "/", Ownership::default()),
            (&["top.txt"], "/renamed.txt", Ownership::default()),
            (&["top.txt"], "/into/", Ownership::default()),
            (&["top.txt", "app/lib"], "/many/", Ownership::default()),
            (&["app/*.sh", "app/big.bin"], "/glob/", Ownership::default()),
            (
                &["app"],
                "/owned",
                Ownership {
                    owner: Some((1234, 5678)),
                    mode: Some(0o700),
                },
            ),
        ];
        let unpacked = ctx.unpacked().unwrap().to_owned();
        for (patterns, dest, ownership) in cases {
            let patterns: Vec<String> = patterns.iter().map(|p| (*p).to_owned()).collect();
            let (sources, _) = found(ctx.lookup(&patterns).unwrap());
            let tree = ctx
                .tree(&sources)
                .unwrap()
                .unwrap_or_else(|| panic!("{patterns:?}: not served from the tar"));
            let from_tar = tempfile::tempdir().unwrap();
            copy::copy_items(&tree, tree.items(), from_tar.path(), dest, ownership).unwrap();
            let from_disk = tempfile::tempdir().unwrap();
            copy::copy(
                &unpacked,
                &sources,
                from_disk.path(),
                dest,
                ownership,
                false,
            )
            .unwrap();
            let (a, b) = (listing(from_tar.path()), listing(from_disk.path()));
            assert!(!a.is_empty(), "{patterns:?}: nothing copied");
            // Directories the copy made itself carry the time they were
            // made; everything copied carries its own.
            let times = |l: &[Listed]| -> Vec<_> {
                l.iter()
                    .map(|(p, m, o, t, d)| {
                        let made = *t > 1_000_000;
                        (p.clone(), *m, *o, if made { 0 } else { *t }, d.clone())
                    })
                    .collect()
            };
            assert_eq!(times(&a), times(&b), "{patterns:?} to {dest}");
        }
    }

    #[test]
    fn contexts_the_tar_cannot_serve_are_left_to_unpacking() {
        use tar::EntryType::{Directory as D, Link as H, Regular as F};
        // A hard link, a directory only implied by its files.
        let (_d, ctx) = context_of(&[
            ("a", D, 0o755, 1, b""),
            ("a/one", F, 0o644, 1, b"1"),
            ("a/two", H, 0o644, 1, b"a/one"),
            ("implied/file", F, 0o644, 1, b"f"),
            ("ok", D, 0o755, 1, b""),
            ("ok/file", F, 0o644, 1, b"f"),
        ]);
        assert!(ctx.tree(&["a".to_owned()]).unwrap().is_none());
        assert!(ctx.tree(&["implied".to_owned()]).unwrap().is_none());
        assert!(ctx.tree(&["".to_owned()]).unwrap().is_none());
        assert!(ctx.tree(&["ok".to_owned()]).unwrap().is_some());
        assert!(ctx.tree(&["a/one".to_owned()]).unwrap().is_some());
    }
}
