//! How the host names a share on the kernel command line, and how the guest
//! reads it back: `vmctl.share=<tag>:<path>[:ro]`
//! ([`crate::control::CMDLINE_SHARE`]). The tag is the virtio-fs tag (1 to
//! [`MAX_TAG`] bytes of `[A-Za-z0-9_-]`); the path is where the guest mounts
//! it — the desktop's own path — with every byte outside
//! `[A-Za-z0-9/._~+@,-]` percent-encoded (`%20` for a space, `%3A` for `:`),
//! so one share is one word whatever its path holds; `:ro` mounts it
//! read-only.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::control::CMDLINE_SHARE;

/// The longest virtio-fs tag (Linux's and VZ's limit).
pub const MAX_TAG: usize = 36;

/// One share as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareWord {
    pub tag: String,
    /// Where the guest mounts it.
    pub path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShareWordError {
    #[error("share {word:?} is not <tag>:<path>[:ro]")]
    Form { word: String },
    #[error("share tag {tag:?} is not 1 to {MAX_TAG} bytes of [A-Za-z0-9_-]")]
    Tag { tag: String },
    #[error("share path {path:?} has a bad %-escape")]
    Escape { path: String },
}

/// Whether `tag` can be a virtio-fs tag.
pub fn tag_ok(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= MAX_TAG
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ShareWord {
    /// The command-line word (`vmctl.share=…`).
    pub fn word(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!(
            "{CMDLINE_SHARE}={}:{}{ro}",
            self.tag,
            encode_path(&self.path)
        )
    }

    /// Parses a word's value (what follows `vmctl.share=`).
    pub fn parse(value: &str) -> Result<Self, ShareWordError> {
        let (tag, rest) = value.split_once(':').ok_or_else(|| ShareWordError::Form {
            word: value.to_owned(),
        })?;
        if !tag_ok(tag) {
            return Err(ShareWordError::Tag {
                tag: tag.to_owned(),
            });
        }
        // The path has no bare `:` (it is encoded), so a last `:` is a flag.
        let (encoded, read_only) = match rest.rsplit_once(':') {
            Some((path, "ro")) => (path, true),
            Some((path, "rw")) => (path, false),
            Some(_) => {
                return Err(ShareWordError::Form {
                    word: value.to_owned(),
                })
            }
            None => (rest, false),
        };
        Ok(Self {
            tag: tag.to_owned(),
            path: decode_path(encoded)?,
            read_only,
        })
    }
}

/// Every `vmctl.share=` word of `cmdline`, each parsed on its own.
pub fn parse_all(cmdline: &str) -> Vec<Result<ShareWord, ShareWordError>> {
    let key = format!("{CMDLINE_SHARE}=");
    cmdline
        .split_whitespace()
        .filter_map(|word| word.strip_prefix(&key))
        .map(ShareWord::parse)
        .collect()
}

/// A path as part of one command-line word.
pub fn encode_path(path: &Path) -> String {
    let mut out = String::new();
    for &byte in path.as_os_str().as_encoded_bytes() {
        if byte.is_ascii_alphanumeric() || b"/._~+@,-".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undoes [`encode_path`].
pub fn decode_path(encoded: &str) -> Result<PathBuf, ShareWordError> {
    let bad = || ShareWordError::Escape {
        path: encoded.to_owned(),
    };
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(PathBuf::from(os_string(out)))
}

#[cfg(unix)]
fn os_string(bytes: Vec<u8>) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    OsString::from_vec(bytes)
}

/// Share paths are the guest's (Linux) paths; a Windows desktop's are
/// UTF-8 once encoded.
#[cfg(not(unix))]
fn os_string(bytes: Vec<u8>) -> OsString {
    OsString::from(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for (path, read_only) in [
            ("/Users/ann", false),
            ("/Volumes/Big Disk/src%x:y", true),
            ("/home/ünï", false),
        ] {
            let share = ShareWord {
                tag: "vmctl-share-0".into(),
                path: path.into(),
                read_only,
            };
            let word = share.word();
            assert_eq!(word.split_whitespace().count(), 1, "{word}");
            let parsed = parse_all(&format!("quiet {word} x=y"));
            assert_eq!(parsed, vec![Ok(share)]);
        }
        assert_eq!(
            encode_path(Path::new("/Users/ann b/100%:x")),
            "/Users/ann%20b/100%25%3Ax"
        );
        assert!(parse_all("console=ttyS0 vmctl.shares=x:/y").is_empty());
    }

    #[test]
    fn bad_words_are_refused() {
        let refused = |value: &str| ShareWord::parse(value).unwrap_err();
        assert!(matches!(refused("no-colon"), ShareWordError::Form { .. }));
        assert!(matches!(refused("t:/x:rx"), ShareWordError::Form { .. }));
        assert!(matches!(refused(":/x"), ShareWordError::Tag { .. }));
        assert!(matches!(refused("a b:/x"), ShareWordError::Tag { .. }));
        let long = format!("{}:/x", "t".repeat(MAX_TAG + 1));
        assert!(matches!(refused(&long), ShareWordError::Tag { .. }));
        for escape in ["t:/x%", "t:/x%2", "t:/x%zz"] {
            assert!(
                matches!(refused(escape), ShareWordError::Escape { .. }),
                "{escape}"
            );
        }
        assert!(ShareWord::parse("t:/x:rw").is_ok_and(|s| !s.read_only));
    }
}
