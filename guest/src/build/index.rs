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
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use super::copy::{clean_in_root, has_wildcards, wildcard_match, CopyError};
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
    link: Option<String>,
    /// SHA-256 of a regular file's bytes.
    digest: Option<[u8; 32]>,
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
                    size: header.size().unwrap_or(0),
                    link: entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.to_string_lossy().into_owned()),
                    digest: None,
                };
                if entry.header().entry_type().is_file() {
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
        })
    }

    /// The unpacked context, unpacking it the first time.
    pub fn unpacked(&self) -> Result<&Path, ImageError> {
        let mut done = self.unpacked.lock().unwrap_or_else(|p| p.into_inner());
        if !*done {
            let file = File::open(&self.tar).map_err(|e| ImageError::io("open", &self.tar, e))?;
            super::context::unpack(file, &self.dir)?;
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
    use super::*;

    fn context(entries: &[(&str, &[u8])], links: &[(&str, &str)]) -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        for (path, target) in links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target).unwrap();
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
}
