//! Atomic JSON files: written to a temp file beside the target, fsynced,
//! renamed over it, so a crash never leaves a half-written record.

use std::io::Write;
use std::path::Path;

use serde::{de::DeserializeOwned, Serialize};

use super::MachineError;

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), MachineError> {
    let io = |source| MachineError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let text = serde_json::to_vec_pretty(value).map_err(|e| io(std::io::Error::other(e)))?;
    tmp.write_all(&text).map_err(io)?;
    tmp.write_all(b"\n").map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// `None` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, MachineError> {
    match std::fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| MachineError::Corrupt {
                    path: path.to_owned(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(MachineError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}
