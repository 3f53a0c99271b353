//! The store of `local` volumes under `<root>/volumes`.
//!
//! ```text
//! <root>/volumes/<name>/_data          the mount point containers get
//! <root>/volumes/<name>/volume.json    the record (written atomically)
//! <root>/volumes/.trash-<name>-<rand>  a volume being deleted
//! ```
//!
//! A volume exists once its `volume.json` is written; a directory without one
//! is a create cut short by a crash and is cleaned up at [`VolumeStore::open`]
//! (kept if its `_data` has anything in it). Removal first renames the
//! directory out of the namespace, so a name is free again at once and a
//! crash mid-delete leaves only trash that the next open clears.
//!
//! The store does not know which containers use which volume: `remove`,
//! `list` and `prune` take that from the caller. All methods do blocking file
//! system work; async callers run them in `spawn_blocking`.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{VolumeError, ANONYMOUS_LABEL, LOCAL_DRIVER};
use crate::state::files::write_atomic;

const DATA_DIR: &str = "_data";
const RECORD: &str = "volume.json";
const TRASH_PREFIX: &str = ".trash-";

/// Driver options the `local` driver knows (`docker volume create -o`).
const LOCAL_OPTIONS: [&str; 4] = ["type", "device", "o", "size"];

/// A volume, in the shape of the API's `Volume` object (also its record on disk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    pub name: String,
    pub driver: String,
    /// The `_data` directory; recomputed from the store root when loaded.
    #[serde(default)]
    pub mountpoint: PathBuf,
    /// RFC 3339, seconds precision, like Docker.
    pub created_at: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub scope: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Volume {
    /// Whether the volume was created without a name.
    pub fn is_anonymous(&self) -> bool {
        self.labels.contains_key(ANONYMOUS_LABEL)
    }

    /// Whether every `label` filter (`key` or `key=value`) matches.
    fn has_labels(&self, filters: &[String]) -> bool {
        filters.iter().all(|filter| match filter.split_once('=') {
            Some((key, value)) => self.labels.get(key).is_some_and(|v| v == value),
            None => self.labels.contains_key(filter),
        })
    }

    /// Whether no `label!` filter matches.
    fn lacks_labels(&self, filters: &[String]) -> bool {
        filters
            .iter()
            .all(|filter| !self.has_labels(std::slice::from_ref(filter)))
    }
}

/// Filters of `GET /volumes` and `POST /volumes/prune`, already parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    /// Substrings of the name; any may match.
    pub names: Vec<String>,
    /// `key` or `key=value`; all must match.
    pub labels: Vec<String>,
    /// `key` or `key=value`; none may match (prune only).
    pub labels_not: Vec<String>,
    /// Driver names; any may match.
    pub drivers: Vec<String>,
    /// `Some(true)`: only volumes no container uses; `Some(false)`: only used ones.
    pub dangling: Option<bool>,
    /// Prune named volumes too (by default prune takes anonymous ones only).
    pub all: bool,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PruneReport {
    pub deleted: Vec<String>,
    pub space_reclaimed: u64,
}

/// The volume store under `<root>/volumes`.
#[derive(Debug)]
pub struct VolumeStore {
    root: PathBuf,
    volumes: Mutex<BTreeMap<String, Volume>>,
}

impl VolumeStore {
    /// Opens the store at `root` (created when missing) and loads every volume.
    pub fn open(root: &Path) -> Result<Self, VolumeError> {
        std::fs::create_dir_all(root).map_err(|e| VolumeError::io("create", root, e))?;
        let entries = std::fs::read_dir(root).map_err(|e| VolumeError::io("read", root, e))?;
        let mut volumes = BTreeMap::new();
        for entry in entries {
            let entry = entry.map_err(|e| VolumeError::io("read", root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if name.starts_with(TRASH_PREFIX) {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot clear volume trash");
                }
                continue;
            }
            if !dir.is_dir() || validate_name(&name).is_err() {
                continue;
            }
            if let Some(volume) = load(&dir, &name)? {
                volumes.insert(name, volume);
            }
        }
        Ok(Self {
            root: root.to_owned(),
            volumes: Mutex::new(volumes),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The data directory of the volume `name` (whether or not it exists).
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.join(name).join(DATA_DIR)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Volume>> {
        // A panic while holding the lock leaves the map consistent: every
        // change is a single insert or remove.
        self.volumes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Creates a volume; with no (or an empty) name an anonymous one. An
    /// existing name is returned unchanged, like Docker.
    pub fn create(
        &self,
        name: Option<&str>,
        driver: &str,
        options: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Volume, VolumeError> {
        self.get_or_create(name, driver, options, labels)
            .map(|(volume, _)| volume)
    }

    /// Like [`create`](Self::create), also saying whether the volume is new
    /// (so the caller knows to publish a `create` event).
    pub fn get_or_create(
        &self,
        name: Option<&str>,
        driver: &str,
        options: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Volume, bool), VolumeError> {
        let mut labels = labels.clone();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name.to_owned(),
            None => {
                labels.insert(ANONYMOUS_LABEL.to_owned(), String::new());
                random_name()
            }
        };
        if !driver.is_empty() && driver != LOCAL_DRIVER {
            return Err(VolumeError::UnknownDriver {
                name,
                driver: driver.to_owned(),
            });
        }
        validate_name(&name)?;
        if let Some(key) = options
            .keys()
            .find(|key| !LOCAL_OPTIONS.contains(&key.as_str()))
        {
            return Err(VolumeError::InvalidOption {
                name,
                key: key.clone(),
            });
        }
        let mut volumes = self.lock();
        if let Some(existing) = volumes.get(&name) {
            return Ok((existing.clone(), false));
        }
        let volume = Volume {
            mountpoint: self.mountpoint(&name),
            name: name.clone(),
            driver: LOCAL_DRIVER.to_owned(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            labels,
            scope: "local".to_owned(),
            options: options.clone(),
        };
        let dir = self.root.join(&name);
        if let Err(e) = write_new(&dir, &volume) {
            if let Err(cleanup) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(volume = %name, error = %cleanup, "cannot clean up a failed create");
            }
            return Err(e);
        }
        tracing::info!(volume = %name, "volume created");
        volumes.insert(name, volume.clone());
        Ok((volume, true))
    }

    /// The volume `name`.
    pub fn get(&self, name: &str) -> Result<Volume, VolumeError> {
        self.lock()
            .get(name)
            .cloned()
            .ok_or_else(|| VolumeError::NoSuchVolume(name.to_owned()))
    }

    /// Every volume matching `filters` (`names`, `labels`, `drivers`,
    /// `dangling`), by name; `in_use` holds the names of volumes some
    /// container mounts.
    pub fn list(&self, filters: &Filters, in_use: &HashSet<String>) -> Vec<Volume> {
        self.lock()
            .values()
            .filter(|v| {
                filters.names.is_empty() || filters.names.iter().any(|n| v.name.contains(n))
            })
            .filter(|v| filters.drivers.is_empty() || filters.drivers.contains(&v.driver))
            .filter(|v| v.has_labels(&filters.labels) && v.lacks_labels(&filters.labels_not))
            .filter(|v| {
                filters
                    .dangling
                    .is_none_or(|d| d != in_use.contains(&v.name))
            })
            .cloned()
            .collect()
    }

    /// Removes the volume `name` and its data. `users` are the ids of the
    /// containers that mount it: any makes this a conflict. With `force`, an
    /// unknown name is not an error. Returns whether a volume was removed.
    pub fn remove(&self, name: &str, force: bool, users: &[String]) -> Result<bool, VolumeError> {
        let trash = {
            let mut volumes = self.lock();
            if !volumes.contains_key(name) {
                return if force {
                    Ok(false)
                } else {
                    Err(VolumeError::NoSuchVolume(name.to_owned()))
                };
            }
            if !users.is_empty() {
                return Err(VolumeError::InUse {
                    name: name.to_owned(),
                    containers: users.to_vec(),
                });
            }
            let dir = self.root.join(name);
            let trash = self.root.join(format!(
                "{TRASH_PREFIX}{name}-{}",
                hex::encode(rand::random::<[u8; 4]>())
            ));
            std::fs::rename(&dir, &trash).map_err(|e| VolumeError::io("remove", &dir, e))?;
            volumes.remove(name);
            trash
        };
        if let Err(e) = std::fs::remove_dir_all(&trash) {
            // The volume is gone from the namespace; the next open clears the rest.
            tracing::warn!(volume = name, path = %trash.display(), error = %e, "cannot delete volume data");
        }
        tracing::info!(volume = name, "volume removed");
        Ok(true)
    }

    /// Removes every unused volume matching `filters`: anonymous ones only
    /// unless `filters.all` (API ≥ 1.42), narrowed by `labels`/`labels_not`.
    /// A volume that cannot be removed is logged and skipped.
    pub fn prune(&self, filters: &Filters, in_use: &HashSet<String>) -> PruneReport {
        let candidates: Vec<Volume> = self
            .lock()
            .values()
            .filter(|v| !in_use.contains(&v.name))
            .filter(|v| filters.all || v.is_anonymous())
            .filter(|v| v.has_labels(&filters.labels) && v.lacks_labels(&filters.labels_not))
            .cloned()
            .collect();
        let mut report = PruneReport::default();
        for volume in candidates {
            let size = crate::state::files::dir_size(&volume.mountpoint);
            match self.remove(&volume.name, false, &[]) {
                Ok(true) => {
                    report.space_reclaimed += size;
                    report.deleted.push(volume.name);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(volume = %volume.name, error = %e, "cannot prune volume"),
            }
        }
        report
    }
}

/// A random volume name: 64 hex digits, like Docker's.
pub fn random_name() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Checks a volume name against `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<(), VolumeError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest: Vec<char> = chars.collect();
    let rest_ok = !rest.is_empty()
        && rest
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.to_owned()))
    }
}

/// Creates `dir/_data` and writes `dir/volume.json`.
fn write_new(dir: &Path, volume: &Volume) -> Result<(), VolumeError> {
    let data = dir.join(DATA_DIR);
    std::fs::create_dir_all(&data).map_err(|e| VolumeError::io("create", &data, e))?;
    let bytes = serde_json::to_vec_pretty(volume).map_err(|source| VolumeError::Encode {
        name: volume.name.clone(),
        source,
    })?;
    let record = dir.join(RECORD);
    write_atomic(&record, &bytes).map_err(|e| VolumeError::io("write", &record, e))
}

/// Loads the volume in `dir`. A directory without a record is a create cut
/// short: removed when its data is empty, else adopted with a fresh record.
fn load(dir: &Path, name: &str) -> Result<Option<Volume>, VolumeError> {
    let record = dir.join(RECORD);
    let data = dir.join(DATA_DIR);
    match std::fs::read(&record) {
        Ok(bytes) => {
            let mut volume: Volume =
                serde_json::from_slice(&bytes).map_err(|source| VolumeError::Decode {
                    path: record.clone(),
                    source,
                })?;
            volume.name = name.to_owned();
            volume.mountpoint = data;
            Ok(Some(volume))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let empty = std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none());
            if empty {
                tracing::info!(
                    volume = name,
                    "removing a volume whose create did not finish"
                );
                std::fs::remove_dir_all(dir).map_err(|e| VolumeError::io("remove", dir, e))?;
                return Ok(None);
            }
            let created = std::fs::metadata(&data)
                .ok()
                .and_then(|m| chrono::DateTime::from_timestamp(m.mtime(), 0))
                .unwrap_or_else(chrono::Utc::now);
            let volume = Volume {
                name: name.to_owned(),
                driver: LOCAL_DRIVER.to_owned(),
                mountpoint: data,
                created_at: created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                labels: BTreeMap::new(),
                scope: "local".to_owned(),
                options: BTreeMap::new(),
            };
            tracing::warn!(volume = name, "adopting a volume without a record");
            write_new(dir, &volume)?;
            Ok(Some(volume))
        }
        Err(e) => Err(VolumeError::io("read", &record, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ErrorKind;

    fn store() -> (tempfile::TempDir, VolumeStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(&dir.path().join("volumes")).unwrap();
        (dir, store)
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn none() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    #[test]
    fn create_writes_record_and_data_dir() {
        let (_dir, store) = store();
        let opts = labels(&[("type", "tmpfs")]);
        let v = store
            .create(Some("data"), "local", &opts, &labels(&[("a", "1")]))
            .unwrap();
        assert_eq!(v.name, "data");
        assert_eq!(v.driver, "local");
        assert_eq!(v.scope, "local");
        assert_eq!(v.mountpoint, store.root().join("data/_data"));
        assert!(v.mountpoint.is_dir());
        assert!(chrono::DateTime::parse_from_rfc3339(&v.created_at).is_ok());
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.root().join("data/volume.json")).unwrap())
                .unwrap();
        assert_eq!(json["Name"], "data");
        assert_eq!(json["Labels"]["a"], "1");
        assert_eq!(json["Options"]["type"], "tmpfs");
        assert_eq!(store.get("data").unwrap(), v);
    }

    #[test]
    fn create_existing_returns_it_unchanged() {
        let (_dir, store) = store();
        let first = store
            .create(Some("data"), "", &none(), &labels(&[("a", "1")]))
            .unwrap();
        let (again, new) = store
            .get_or_create(Some("data"), "local", &none(), &labels(&[("b", "2")]))
            .unwrap();
        assert!(!new);
        assert_eq!(first, again);
    }

    #[test]
    fn anonymous_volumes_get_hex_names_and_the_label() {
        let (_dir, store) = store();
        let v = store.create(None, "", &none(), &none()).unwrap();
        assert_eq!(v.name.len(), 64);
        assert!(v.name.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(v.labels.get(ANONYMOUS_LABEL).map(String::as_str), Some(""));
        assert!(v.is_anonymous());
        let named = store.create(Some(""), "", &none(), &none()).unwrap();
        assert!(named.is_anonymous());
    }

    #[test]
    fn invalid_names_drivers_and_options_are_refused() {
        let (_dir, store) = store();
        for bad in ["a", "-x", ".x", "a/b", "a b", "./foo", "héllo"] {
            let err = store.create(Some(bad), "", &none(), &none()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParameter, "{bad}");
            assert_eq!(
                err.to_string(),
                format!("create {bad}: \"{bad}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")
            );
        }
        for good in ["ab", "a.b-c_d", "0x"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        let err = store
            .create(Some("ok"), "nfs", &none(), &none())
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParameter);
        let err = store
            .create(Some("ok"), "", &labels(&[("bogus", "1")]), &none())
            .unwrap_err();
        assert_eq!(err.to_string(), "create ok: invalid option key: \"bogus\"");
        assert!(store.list(&Filters::default(), &HashSet::new()).is_empty());
        assert_eq!(std::fs::read_dir(store.root()).unwrap().count(), 0);
    }

    #[test]
    fn remove_unknown_in_use_and_force() {
        let (_dir, store) = store();
        let err = store.remove("nope", false, &[]).unwrap_err();
        assert_eq!(err.to_string(), "get nope: no such volume");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(!store.remove("nope", true, &[]).unwrap());

        store.create(Some("data"), "", &none(), &none()).unwrap();
        let users = vec!["abc123".to_owned(), "def456".to_owned()];
        let err = store.remove("data", true, &users).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(
            err.to_string(),
            "remove data: volume is in use - [abc123, def456]"
        );
        assert!(store.get("data").is_ok());

        assert!(store.remove("data", false, &[]).unwrap());
        assert!(store.get("data").is_err());
        assert_eq!(std::fs::read_dir(store.root()).unwrap().count(), 0);
        // The name is free again.
        store.create(Some("data"), "", &none(), &none()).unwrap();
    }

    #[test]
    fn list_filters() {
        let (_dir, store) = store();
        store
            .create(Some("web-data"), "", &none(), &labels(&[("app", "web")]))
            .unwrap();
        store
            .create(Some("db-data"), "", &none(), &labels(&[("app", "db")]))
            .unwrap();
        let anon = store.create(None, "", &none(), &none()).unwrap();
        let in_use = HashSet::from(["db-data".to_owned()]);
        let names = |f: Filters| -> Vec<String> {
            store
                .list(&f, &in_use)
                .into_iter()
                .map(|v| v.name)
                .collect()
        };
        assert_eq!(names(Filters::default()).len(), 3);
        assert_eq!(
            names(Filters {
                names: vec!["data".into()],
                ..Default::default()
            }),
            ["db-data", "web-data"]
        );
        assert_eq!(
            names(Filters {
                labels: vec!["app=web".into()],
                ..Default::default()
            }),
            ["web-data"]
        );
        assert_eq!(
            names(Filters {
                labels: vec!["app".into()],
                ..Default::default()
            })
            .len(),
            2
        );
        assert_eq!(
            names(Filters {
                dangling: Some(false),
                ..Default::default()
            }),
            ["db-data"]
        );
        let mut dangling = names(Filters {
            dangling: Some(true),
            ..Default::default()
        });
        dangling.sort();
        let mut expected = vec![anon.name, "web-data".to_owned()];
        expected.sort();
        assert_eq!(dangling, expected);
        assert!(names(Filters {
            drivers: vec!["nfs".into()],
            ..Default::default()
        })
        .is_empty());
    }

    #[test]
    fn prune_takes_anonymous_unused_volumes_unless_all() {
        let (_dir, store) = store();
        store.create(Some("named"), "", &none(), &none()).unwrap();
        let anon = store.create(None, "", &none(), &none()).unwrap();
        let busy = store.create(None, "", &none(), &none()).unwrap();
        std::fs::write(anon.mountpoint.join("file"), b"12345").unwrap();
        let in_use = HashSet::from([busy.name.clone()]);

        let report = store.prune(&Filters::default(), &in_use);
        assert_eq!(report.deleted, vec![anon.name.clone()]);
        assert_eq!(report.space_reclaimed, 5);

        let filters = Filters {
            all: true,
            labels_not: vec!["keep".into()],
            ..Default::default()
        };
        let report = store.prune(&filters, &in_use);
        assert_eq!(report.deleted, vec!["named".to_owned()]);
        let left: Vec<String> = store
            .list(&Filters::default(), &in_use)
            .into_iter()
            .map(|v| v.name)
            .collect();
        assert_eq!(left, vec![busy.name]);
    }

    #[test]
    fn reopen_loads_volumes_and_clears_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("volumes");
        let created = {
            let store = VolumeStore::open(&root).unwrap();
            store
                .create(Some("keep"), "", &none(), &labels(&[("x", "y")]))
                .unwrap()
        };
        // A create cut short, one with data but no record, and trash.
        std::fs::create_dir_all(root.join("half/_data")).unwrap();
        std::fs::create_dir_all(root.join("orphan/_data")).unwrap();
        std::fs::write(root.join("orphan/_data/f"), b"x").unwrap();
        std::fs::create_dir_all(root.join(".trash-old-1234/_data")).unwrap();

        let store = VolumeStore::open(&root).unwrap();
        assert_eq!(store.get("keep").unwrap(), created);
        assert!(store.get("half").is_err());
        assert!(!root.join("half").exists());
        assert!(!root.join(".trash-old-1234").exists());
        let orphan = store.get("orphan").unwrap();
        assert!(root.join("orphan/volume.json").exists());
        assert!(orphan.mountpoint.join("f").exists());
    }
}
