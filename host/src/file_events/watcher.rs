//! The desktop side of file-change events: a `notify` watcher (inotify on
//! Linux, FSEvents on macOS, ReadDirectoryChangesW on Windows) over the
//! [`Target`]s containers bind, which keeps only content changes.
//!
//! A directory target is watched recursively; a file target through its
//! parent directory, without recursion, so an editor's atomic save (write a
//! temporary file, rename it over the old one) is seen as the file's own
//! change, and the watch survives the old inode's death.
//!
//! Only content events are relayed: created, written (`IN_MODIFY`), moved
//! here (`IN_MOVED_TO`). Opens, closes and attribute changes never are:
//! raising an event in the VM opens the file through virtio-fs and sets its
//! mode again, which the desktop sees as `IN_OPEN`, `IN_ATTRIB` and
//! `IN_CLOSE_WRITE` — relaying those would loop. Deletions are not relayed
//! either: the guest can only raise an event on a file that exists.
//!
//! The event handler runs on `notify`'s thread and never blocks: a path is
//! offered to a bounded channel and dropped (counted) when it is full.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use super::FileEventsError;

/// What one container bind asks to watch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// A directory and everything under it.
    Tree(PathBuf),
    /// One file.
    File(PathBuf),
}

impl Target {
    /// Whether a change of `path` concerns this target.
    fn covers(&self, path: &Path) -> bool {
        match self {
            Target::Tree(root) => path.starts_with(root),
            Target::File(file) => path == file,
        }
    }
}

/// The `notify` watches that serve `targets`: a tree recursively, a file's
/// parent alone; a watch inside a recursive one is left out (`notify` keys
/// its watches by path, and two over one directory would share one).
pub fn watch_roots(targets: &BTreeSet<Target>) -> BTreeMap<PathBuf, bool> {
    let mut wanted: BTreeMap<PathBuf, bool> = BTreeMap::new();
    for target in targets {
        let (path, recursive) = match target {
            Target::Tree(root) => (root.clone(), true),
            Target::File(file) => match file.parent() {
                Some(parent) => (parent.to_owned(), false),
                None => continue,
            },
        };
        let entry = wanted.entry(path).or_insert(recursive);
        *entry |= recursive;
    }
    let recursive: Vec<PathBuf> = wanted
        .iter()
        .filter(|(_, recursive)| **recursive)
        .map(|(path, _)| path.clone())
        .collect();
    wanted.retain(|path, _| {
        !recursive
            .iter()
            .any(|outer| outer != path && path.starts_with(outer))
    });
    wanted
}

/// The paths of `event` whose content changed, if any.
pub fn content_paths(event: &notify::Event) -> &[PathBuf] {
    let content = match event.kind {
        EventKind::Create(_) => true,
        EventKind::Modify(ModifyKind::Data(_)) => true,
        // inotify's IN_MOVED_TO; FSEvents cannot tell from and to apart, and
        // ReadDirectoryChangesW says "modified" without saying how.
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => true,
        EventKind::Modify(ModifyKind::Any) => true,
        // The From half is gone; Both repeats the To that came just before.
        EventKind::Modify(ModifyKind::Name(_)) => false,
        EventKind::Modify(ModifyKind::Metadata(_) | ModifyKind::Other) => false,
        EventKind::Access(_) | EventKind::Remove(_) | EventKind::Any | EventKind::Other => false,
    };
    if content {
        &event.paths
    } else {
        &[]
    }
}

/// A `notify` watcher over a set of [`Target`]s.
pub struct Watcher {
    inner: notify::RecommendedWatcher,
    /// The watches in place: path → recursive.
    watched: BTreeMap<PathBuf, bool>,
    /// The targets, read by the event handler to drop siblings of a file.
    scope: Arc<RwLock<BTreeSet<Target>>>,
}

impl Watcher {
    /// A watcher that offers each changed path to `sink`, counting in
    /// `dropped` those that found it full.
    pub fn new(
        sink: mpsc::Sender<PathBuf>,
        dropped: Arc<AtomicU64>,
    ) -> Result<Self, FileEventsError> {
        let scope: Arc<RwLock<BTreeSet<Target>>> = Arc::default();
        let handler_scope = scope.clone();
        let handler = move |event: notify::Result<notify::Event>| {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::debug!(error = %e, "file watch error");
                    return;
                }
            };
            let scope = handler_scope.read().unwrap_or_else(|e| e.into_inner());
            for path in content_paths(&event) {
                if !scope.iter().any(|target| target.covers(path)) {
                    continue;
                }
                if sink.try_send(path.clone()).is_err() {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let inner = notify::recommended_watcher(handler).map_err(FileEventsError::Watcher)?;
        Ok(Self {
            inner,
            watched: BTreeMap::new(),
            scope,
        })
    }

    /// Watches exactly `targets` from now on. Blocks while a new tree is
    /// walked (inotify watches each directory): call it off the async
    /// threads. Returns the watches that could not be added, each with why.
    pub fn set(&mut self, targets: BTreeSet<Target>) -> Vec<(PathBuf, notify::Error)> {
        let wanted = watch_roots(&targets);
        *self.scope.write().unwrap_or_else(|e| e.into_inner()) = targets;
        let mut failed = Vec::new();
        let stale: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|(path, recursive)| wanted.get(*path) != Some(*recursive))
            .map(|(path, _)| path.clone())
            .collect();
        for path in stale {
            self.watched.remove(&path);
            // A watch whose directory is gone is already gone.
            let _ = self.inner.unwatch(&path);
        }
        for (path, recursive) in wanted {
            if self.watched.contains_key(&path) {
                continue;
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match self.inner.watch(&path, mode) {
                Ok(()) => {
                    self.watched.insert(path, recursive);
                }
                Err(e) => {
                    // A tree half walked when a limit hit: leave none of it.
                    let _ = self.inner.unwatch(&path);
                    failed.push((path, e));
                }
            }
        }
        failed
    }

    /// The watches in place (path → recursive).
    pub fn watched(&self) -> &BTreeMap<PathBuf, bool> {
        &self.watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tree(path: &str) -> Target {
        Target::Tree(path.into())
    }

    #[test]
    fn roots_leave_out_what_a_recursive_watch_covers() {
        let targets = BTreeSet::from([
            tree("/u/app"),
            tree("/u/app/src"),
            Target::File("/u/app/.env".into()),
            Target::File("/u/cfg/a.toml".into()),
            Target::File("/u/cfg/b.toml".into()),
            tree("/u/cfg"),
            Target::File("/u/other/x".into()),
        ]);
        let roots = watch_roots(&targets);
        let expected = BTreeMap::from([
            (PathBuf::from("/u/app"), true),
            (PathBuf::from("/u/cfg"), true),
            (PathBuf::from("/u/other"), false),
        ]);
        assert_eq!(roots, expected);
    }

    /// Receives until `until` arrives, returning everything before it.
    async fn until(receiver: &mut mpsc::Receiver<PathBuf>, until: &Path) -> Vec<PathBuf> {
        let mut seen = Vec::new();
        loop {
            let path = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
                .await
                .unwrap_or_else(|_| panic!("no event for {} (saw {seen:?})", until.display()))
                .expect("the watcher stopped");
            if path == until {
                return seen;
            }
            seen.push(path);
        }
    }

    fn watcher(targets: BTreeSet<Target>) -> (Watcher, mpsc::Receiver<PathBuf>) {
        let (sink, receiver) = mpsc::channel(1024);
        let mut watcher = Watcher::new(sink, Arc::default()).unwrap();
        let failed = watcher.set(targets);
        assert!(failed.is_empty(), "{failed:?}");
        (watcher, receiver)
    }

    #[tokio::test]
    async fn saves_are_relayed_opens_closes_and_modes_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let file = root.join("app.js");
        let quiet = root.join("quiet.js");
        std::fs::write(&file, "one").unwrap();
        std::fs::write(&quiet, "q").unwrap();
        std::fs::create_dir(root.join("src")).unwrap();
        let (_watcher, mut events) = watcher(BTreeSet::from([Target::Tree(root.clone())]));

        // A write in place.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b" two"))
            .unwrap();
        until(&mut events, &file).await;

        // An atomic save: a temporary file renamed over the old one.
        let saved = root.join("src/main.rs");
        std::fs::write(&saved, "fn main() {}").unwrap();
        until(&mut events, &saved).await;
        let temporary = root.join("src/.main.rs.swp");
        std::fs::write(&temporary, "fn main() { run() }").unwrap();
        std::fs::rename(&temporary, &saved).unwrap();
        until(&mut events, &saved).await;

        // What raising an event in the VM does to the desktop's file: an
        // open for write, the same mode again, a close. Then a sentinel.
        let handle = std::fs::OpenOptions::new()
            .write(true)
            .open(&quiet)
            .unwrap();
        let mode = handle.metadata().unwrap().permissions();
        handle.set_permissions(mode).unwrap();
        drop(handle);
        let _ = std::fs::read(&quiet).unwrap();
        let sentinel = root.join("sentinel");
        std::fs::write(&sentinel, "s").unwrap();
        let before = until(&mut events, &sentinel).await;
        assert!(
            !before.contains(&quiet),
            "an open, a chmod or a close was relayed: {before:?}"
        );
    }

    #[tokio::test]
    async fn a_file_target_is_watched_through_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let file = root.join("config.yml");
        let sibling = root.join("other.yml");
        std::fs::write(&file, "a: 1").unwrap();
        let (watcher, mut events) = watcher(BTreeSet::from([Target::File(file.clone())]));
        assert_eq!(
            watcher.watched(),
            &BTreeMap::from([(root.clone(), false)]),
            "the parent, not recursively"
        );
        std::fs::write(&sibling, "b: 2").unwrap();
        std::fs::write(&file, "a: 2").unwrap();
        let before = until(&mut events, &file).await;
        assert!(!before.contains(&sibling), "a sibling was relayed");
        // Replaced by a rename: the watch is on the directory, so it holds.
        let temporary = root.join("config.yml.tmp");
        std::fs::write(&temporary, "a: 3").unwrap();
        std::fs::rename(&temporary, &file).unwrap();
        until(&mut events, &file).await;
        std::fs::write(&file, "a: 4").unwrap();
        until(&mut events, &file).await;
    }

    #[tokio::test]
    async fn targets_come_and_go() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (one, two) = (root.join("one"), root.join("two"));
        for sub in [&one, &two] {
            std::fs::create_dir(sub).unwrap();
        }
        let (mut watcher, mut events) = watcher(BTreeSet::from([Target::Tree(one.clone())]));
        assert!(watcher
            .set(BTreeSet::from([Target::Tree(two.clone())]))
            .is_empty());
        assert_eq!(watcher.watched(), &BTreeMap::from([(two.clone(), true)]));
        std::fs::write(one.join("f"), "x").unwrap();
        let sentinel = two.join("f");
        std::fs::write(&sentinel, "x").unwrap();
        let before = until(&mut events, &sentinel).await;
        assert!(
            before.is_empty(),
            "an unwatched tree was relayed: {before:?}"
        );
        // A target that does not exist is reported, and the rest stand.
        let failed = watcher.set(BTreeSet::from([
            Target::Tree(two.clone()),
            Target::Tree(root.join("missing")),
        ]));
        assert_eq!(failed.len(), 1);
        assert_eq!(watcher.watched(), &BTreeMap::from([(two, true)]));
    }

    #[test]
    fn a_full_channel_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (sink, mut receiver) = mpsc::channel(1);
        let dropped: Arc<AtomicU64> = Arc::default();
        let mut watcher = Watcher::new(sink, dropped.clone()).unwrap();
        assert!(watcher
            .set(BTreeSet::from([Target::Tree(root.clone())]))
            .is_empty());
        for n in 0..50 {
            std::fs::write(root.join(format!("f{n}")), "x").unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while dropped.load(Ordering::Relaxed) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dropped.load(Ordering::Relaxed) > 0, "nothing was dropped");
        assert!(receiver.try_recv().is_ok(), "the one slot was used");
    }
}
