//! Mount resolution: a container's `HostConfig.Binds` (`-v`),
//! `HostConfig.Mounts` (`--mount`), `HostConfig.VolumesFrom` and its image's
//! `VOLUME`s become the [`MountPoint`]s that `inspect` shows and the runtime
//! mounts.
//!
//! Docker's rules, in its order:
//!
//! 1. `VolumesFrom`: the other container's mount points, read-only when asked
//!    (`ctr:ro`); later sources replace earlier ones at the same destination.
//! 2. `Binds`: `SRC:DST[:MODE]` is a bind when `SRC` is absolute, else a named
//!    volume (created when missing); `DST` alone is an anonymous volume. A
//!    missing bind source directory is created. Binds replace volumes-from.
//! 3. `Mounts`: `bind` (the source must exist), `volume` (named or
//!    anonymous), `tmpfs`. A destination given twice by 2–3 (or also in
//!    `HostConfig.Tmpfs`) is `Duplicate mount point`.
//! 4. Image volumes not covered by anything above get anonymous volumes.
//!
//! Everything is parsed and checked before anything is created; if creating
//! fails half-way, every volume and directory this call created is removed
//! again, so bad input leaves nothing behind.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::policy::BindPolicy;
use super::{VolumeError, VolumeStore, LOCAL_DRIVER};
use crate::model::{HostConfig, Mount, MountPoint};

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "slave", "rslave", "shared", "rshared",
];
const DEFAULT_PROPAGATION: &str = "rprivate";
const CONSISTENCIES: [&str; 3] = ["consistent", "cached", "delegated"];

/// The outcome of [`resolve`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// Sorted by destination, so parents are mounted before their children.
    pub mounts: Vec<MountPoint>,
    /// Volumes this call created (the engine publishes a `create` event for
    /// each, and removes them if the container create fails later on).
    pub created: Vec<String>,
    /// Volume mounts to fill from the image (copy-data on: not `nocopy`, not
    /// from `VolumesFrom`); see [`super::seed::seed_volume`].
    pub seeds: Vec<Seed>,
}

/// A volume mount that should get the image's content at its destination
/// when the volume is empty (Docker copies into any empty volume at create).
#[derive(Debug, Clone, PartialEq)]
pub struct Seed {
    pub volume: String,
    pub destination: String,
    /// The volume's `_data` directory.
    pub mountpoint: PathBuf,
    /// Whether the volume was created by this [`resolve`] call.
    pub new: bool,
}

/// What a destination gets, before anything is created.
#[derive(Debug)]
struct Plan {
    /// Complete except `name`/`source` of volumes not created yet.
    point: MountPoint,
    /// For volume mounts: the volume to get or create.
    volume: Option<VolumeSpec>,
    /// For `-v` binds: create the source directory when missing.
    create_source: bool,
}

/// A volume to get or create.
#[derive(Debug, Default)]
struct VolumeSpec {
    /// `None`: anonymous.
    name: Option<String>,
    driver: String,
    options: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    copy_data: bool,
}

/// `Mount.BindOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct BindOptions {
    propagation: String,
    create_mountpoint: bool,
}

/// `Mount.VolumeOptions`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeOptions {
    no_copy: bool,
    labels: Option<BTreeMap<String, String>>,
    driver_config: Option<DriverConfig>,
    subpath: String,
}

/// `Mount.VolumeOptions.DriverConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DriverConfig {
    name: String,
    options: Option<BTreeMap<String, String>>,
}

/// Resolves the mounts of a container being created. `image_volumes` are
/// the paths of the image's and `Config.Volumes`; `volumes_from` the mount
/// points of each `VolumesFrom` container with its read-only override (see
/// [`parse_volumes_from`]).
pub fn resolve(
    store: &VolumeStore,
    policy: &BindPolicy,
    host_config: &HostConfig,
    image_volumes: &[String],
    volumes_from: &[(String, Vec<MountPoint>, Option<bool>)],
) -> Result<Resolved, VolumeError> {
    let plans = plan(policy, host_config, image_volumes, volumes_from)?;
    let mut done = Undo::default();
    match carry_out(store, plans, &mut done) {
        Ok(resolved) => Ok(resolved),
        Err(e) => {
            done.roll_back(store);
            Err(e)
        }
    }
}

/// The mount points [`resolve`] would set up for a container without
/// `VolumesFrom`, parsed and checked with nothing created: what the
/// `create_body` fuzz target (fuzz/) feeds the OCI spec with.
pub fn plan_points(
    host_config: &HostConfig,
    image_volumes: &[String],
) -> Result<Vec<MountPoint>, VolumeError> {
    Ok(plan(&BindPolicy::Any, host_config, image_volumes, &[])?
        .into_values()
        .map(|plan| plan.point)
        .collect())
}

/// Parses and checks everything; no side effects but reading the file system.
fn plan(
    policy: &BindPolicy,
    host_config: &HostConfig,
    image_volumes: &[String],
    volumes_from: &[(String, Vec<MountPoint>, Option<bool>)],
) -> Result<BTreeMap<String, Plan>, VolumeError> {
    let mut plans = BTreeMap::new();
    for (_, points, read_only) in volumes_from {
        for point in points {
            let mut point = point.clone();
            point.rw = point.rw && *read_only != Some(true);
            let plan = Plan {
                point,
                volume: None,
                create_source: false,
            };
            plans.insert(plan.point.destination.clone(), plan);
        }
    }
    let tmpfs: HashSet<String> = host_config
        .tmpfs
        .iter()
        .flatten()
        .map(|(dest, _)| clean(dest))
        .collect();
    let mut explicit = HashSet::new();
    let mut admit = |plan: Plan, shown: &str| {
        let destination = plan.point.destination.clone();
        if !explicit.insert(destination.clone()) || tmpfs.contains(&destination) {
            return Err(VolumeError::DuplicateMountPoint(shown.to_owned()));
        }
        plans.insert(destination, plan);
        Ok(())
    };
    for raw in host_config.binds.iter().flatten() {
        let plan = parse_bind(raw, &host_config.volume_driver)?;
        if plan.point.kind == "bind" {
            policy.check(&plan.point.source)?;
        }
        let shown = plan.point.destination.clone();
        admit(plan, &shown)?;
    }
    for mount in &host_config.mounts {
        let plan = parse_mount(mount)?;
        if plan.point.kind == "bind" {
            policy.check(&plan.point.source)?;
        }
        admit(plan, &mount.target)?;
    }
    for raw in image_volumes {
        if !raw.starts_with('/') {
            return Err(VolumeError::InvalidSpec {
                spec: raw.clone(),
                source: Some(Box::new(VolumeError::NotAbsolute(raw.clone()))),
            });
        }
        let destination = clean(raw);
        if plans.contains_key(&destination) || tmpfs.contains(&destination) {
            continue;
        }
        let point = MountPoint {
            kind: "volume".to_owned(),
            destination: destination.clone(),
            driver: LOCAL_DRIVER.to_owned(),
            rw: true,
            ..Default::default()
        };
        let volume = VolumeSpec {
            copy_data: true,
            ..Default::default()
        };
        plans.insert(
            destination,
            Plan {
                point,
                volume: Some(volume),
                create_source: false,
            },
        );
    }
    Ok(plans)
}

/// Creates the planned volumes and bind sources, noting each in `done`.
fn carry_out(
    store: &VolumeStore,
    plans: BTreeMap<String, Plan>,
    done: &mut Undo,
) -> Result<Resolved, VolumeError> {
    let mut resolved = Resolved::default();
    for (destination, plan) in plans {
        let mut point = plan.point;
        if let Some(spec) = plan.volume {
            let (volume, new) = store.get_or_create(
                spec.name.as_deref(),
                &spec.driver,
                &spec.options,
                &spec.labels,
            )?;
            if new {
                done.volumes.push(volume.name.clone());
                resolved.created.push(volume.name.clone());
            }
            point.name = volume.name.clone();
            point.source = volume.mountpoint.to_string_lossy().into_owned();
            point.driver = volume.driver.clone();
            if spec.copy_data {
                resolved.seeds.push(Seed {
                    volume: volume.name,
                    destination,
                    mountpoint: volume.mountpoint,
                    new,
                });
            }
        } else if plan.create_source {
            ensure_bind_source(Path::new(&point.source), &mut done.dirs)?;
        }
        resolved.mounts.push(point);
    }
    Ok(resolved)
}

/// What a [`resolve`] call created, to remove again when it fails.
#[derive(Debug, Default)]
struct Undo {
    volumes: Vec<String>,
    /// Directories created for bind sources, each before its children.
    dirs: Vec<PathBuf>,
}

impl Undo {
    /// Removes everything noted; logs what cannot be removed and goes on.
    fn roll_back(self, store: &VolumeStore) {
        for name in &self.volumes {
            if let Err(e) = store.remove(name, true, &[]) {
                tracing::warn!(volume = %name, error = %e, "cannot remove a volume on rollback");
            }
        }
        for dir in self.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(path = %dir.display(), error = %e, "cannot remove a directory on rollback");
            }
        }
    }
}

/// Creates the bind source `path` (and missing parents) when it does not
/// exist, like Docker does for `-v`; appends what it created to `created`.
pub fn ensure_bind_source(path: &Path, created: &mut Vec<PathBuf>) -> Result<(), VolumeError> {
    let mut missing: Vec<PathBuf> = path
        .ancestors()
        .take_while(|p| std::fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| VolumeError::CreateBindSource {
        path: path.to_owned(),
        source,
    })?;
    missing.reverse();
    created.extend(missing);
    Ok(())
}

/// Parses one `-v` spec: `DST`, `SRC:DST` or `SRC:DST:MODE`.
fn parse_bind(raw: &str, volume_driver: &str) -> Result<Plan, VolumeError> {
    let invalid = |source: Option<VolumeError>| VolumeError::InvalidSpec {
        spec: raw.to_owned(),
        source: source.map(Box::new),
    };
    let parts: Vec<&str> = raw.splitn(4, ':').collect();
    let (source, target, mode) = match parts.as_slice() {
        ["", ..] => return Err(invalid(None)),
        [target] => ("", *target, ""),
        [_, mode] if valid_mode(mode) => return Err(invalid(None)),
        [source, target] => (*source, *target, ""),
        [source, target, mode] => (*source, *target, *mode),
        _ => return Err(invalid(None)),
    };
    if !valid_mode(mode) {
        return Err(VolumeError::InvalidMode(mode.to_owned()));
    }
    let options: Vec<&str> = mode.split(',').collect();
    let rw = !options.contains(&"ro");
    let propagation = options.iter().find(|o| PROPAGATIONS.contains(o));
    let bind = source.starts_with('/');
    let kind = if bind { "bind" } else { "volume" };
    let config_error = |source| {
        invalid(Some(VolumeError::MountConfig {
            kind: kind.to_owned(),
            source: Box::new(source),
        }))
    };
    check_target(target).map_err(config_error)?;
    let mut point = MountPoint {
        kind: kind.to_owned(),
        destination: clean(target),
        mode: mode.to_owned(),
        rw,
        ..Default::default()
    };
    if bind {
        if options.contains(&"nocopy") {
            return Err(config_error(VolumeError::ExtraField("VolumeOptions")));
        }
        point.source = clean(source);
        point.propagation = propagation.unwrap_or(&DEFAULT_PROPAGATION).to_string();
        return Ok(Plan {
            point,
            volume: None,
            create_source: true,
        });
    }
    if propagation.is_some() {
        return Err(config_error(VolumeError::ExtraField("BindOptions")));
    }
    if point.mode.is_empty() {
        point.mode = "z".to_owned();
    }
    let volume = VolumeSpec {
        name: (!source.is_empty()).then(|| source.to_owned()),
        driver: volume_driver.to_owned(),
        copy_data: !options.contains(&"nocopy"),
        ..Default::default()
    };
    Ok(Plan {
        point,
        volume: Some(volume),
        create_source: false,
    })
}

/// Parses and checks one `--mount`.
fn parse_mount(mount: &Mount) -> Result<Plan, VolumeError> {
    let config_error = |source| VolumeError::MountConfig {
        kind: mount.kind.clone(),
        source: Box::new(source),
    };
    check_target(&mount.target).map_err(config_error)?;
    let mut point = MountPoint {
        kind: mount.kind.clone(),
        destination: clean(&mount.target),
        rw: !mount.read_only,
        ..Default::default()
    };
    let mut volume = None;
    match mount.kind.as_str() {
        "bind" => {
            let options: BindOptions = options("BindOptions", &mount.bind_options)
                .map_err(config_error)?
                .unwrap_or_default();
            check_bind_mount(mount, &options).map_err(config_error)?;
            point.source = clean(&mount.source);
            point.propagation = if options.propagation.is_empty() {
                DEFAULT_PROPAGATION.to_owned()
            } else {
                options.propagation
            };
        }
        "volume" => {
            volume = Some(volume_mount(mount).map_err(config_error)?);
            point.mode = "z".to_owned();
        }
        "tmpfs" => {
            if mount.bind_options.as_ref().is_some_and(|v| !v.is_null()) {
                return Err(config_error(VolumeError::ExtraField("BindOptions")));
            }
            if !mount.source.is_empty() {
                return Err(config_error(VolumeError::ExtraField("Source")));
            }
        }
        _ => return Err(config_error(VolumeError::UnknownMountType)),
    }
    Ok(Plan {
        point,
        volume,
        create_source: false,
    })
}

/// Checks a `--mount type=bind`: absolute, existing source; known propagation.
fn check_bind_mount(mount: &Mount, options: &BindOptions) -> Result<(), VolumeError> {
    if mount.source.is_empty() {
        return Err(VolumeError::MissingField("Source"));
    }
    if !options.propagation.is_empty() && !PROPAGATIONS.contains(&options.propagation.as_str()) {
        return Err(VolumeError::InvalidPropagation(options.propagation.clone()));
    }
    if mount.volume_options.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(VolumeError::ExtraField("VolumeOptions"));
    }
    if !mount.source.starts_with('/') {
        return Err(VolumeError::NotAbsolute(mount.source.clone()));
    }
    let exists = std::fs::metadata(&mount.source).is_ok();
    if !exists && !options.create_mountpoint {
        return Err(VolumeError::BindSourceMissing(PathBuf::from(&mount.source)));
    }
    Ok(())
}

/// Checks a `--mount type=volume` and says which volume it wants.
fn volume_mount(mount: &Mount) -> Result<VolumeSpec, VolumeError> {
    if mount.bind_options.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(VolumeError::ExtraField("BindOptions"));
    }
    let options: VolumeOptions =
        options("VolumeOptions", &mount.volume_options)?.unwrap_or_default();
    let anonymous = mount.source.is_empty();
    if !options.subpath.is_empty() {
        return Err(VolumeError::ExtraField("VolumeOptions.Subpath"));
    }
    if mount.read_only && anonymous {
        return Err(VolumeError::AnonymousReadOnly);
    }
    let driver = options.driver_config.unwrap_or_default();
    Ok(VolumeSpec {
        name: (!anonymous).then(|| mount.source.clone()),
        driver: driver.name,
        options: driver.options.unwrap_or_default(),
        labels: options.labels.unwrap_or_default(),
        copy_data: !options.no_copy,
    })
}

/// Decodes an optional options object of a `Mount` (`null` is none).
fn options<T: serde::de::DeserializeOwned>(
    field: &'static str,
    value: &Option<serde_json::Value>,
) -> Result<Option<T>, VolumeError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => T::deserialize(value)
            .map(Some)
            .map_err(|source| VolumeError::InvalidOptions { field, source }),
    }
}

/// Checks a mount destination: given, absolute, not `/`.
fn check_target(target: &str) -> Result<(), VolumeError> {
    if target.is_empty() {
        return Err(VolumeError::MissingField("Target"));
    }
    if clean(target) == "/" {
        return Err(VolumeError::TargetIsRoot);
    }
    if !target.starts_with('/') {
        return Err(VolumeError::NotAbsolute(target.to_owned()));
    }
    Ok(())
}

/// Whether `mode` is a valid comma-separated mode list: at most one each of
/// `ro`/`rw`, `z`/`Z`, a propagation, `nocopy`, a consistency.
fn valid_mode(mode: &str) -> bool {
    if mode.is_empty() {
        return true;
    }
    let mut seen = [0u8; 5];
    for option in mode.split(',') {
        let class = match option {
            "ro" | "rw" => 0,
            "z" | "Z" => 1,
            o if PROPAGATIONS.contains(&o) => 2,
            "nocopy" => 3,
            o if CONSISTENCIES.contains(&o) => 4,
            _ => return false,
        };
        seen[class] += 1;
        if seen[class] > 1 {
            return false;
        }
    }
    true
}

/// Parses one `VolumesFrom` entry: `ctr`, `ctr:ro`, `ctr:rw` (also with
/// `z`/`Z`). Returns the container and the read-only override: `Some(true)`
/// for `ro`, `Some(false)` for `rw`, `None` when not given (keep each mount's).
pub fn parse_volumes_from(spec: &str) -> Result<(String, Option<bool>), VolumeError> {
    if spec.is_empty() {
        return Err(VolumeError::EmptyVolumesFrom);
    }
    let (container, mode) = spec.split_once(':').unwrap_or((spec, ""));
    if mode.is_empty() {
        return Ok((container.to_owned(), None));
    }
    let options: Vec<&str> = mode.split(',').collect();
    let allowed = |o: &&str| matches!(*o, "ro" | "rw" | "z" | "Z");
    if !valid_mode(mode) || !options.iter().all(allowed) {
        return Err(VolumeError::InvalidMode(mode.to_owned()));
    }
    let read_only = if options.contains(&"ro") {
        Some(true)
    } else if options.contains(&"rw") {
        Some(false)
    } else {
        None
    };
    Ok((container.to_owned(), read_only))
}

/// Cleans an absolute path lexically (`//a/./b/../c/` → `/a/c`); a relative
/// one stays relative.
pub fn clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::error_chain;
    use crate::state::ErrorKind;
    use crate::volume::ANONYMOUS_LABEL;

    struct Fixture {
        dir: tempfile::TempDir,
        store: VolumeStore,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(&dir.path().join("volumes")).unwrap();
        Fixture { dir, store }
    }

    impl Fixture {
        /// A host directory that exists, as a string.
        fn host(&self, name: &str) -> String {
            let path = self.dir.path().join("host").join(name);
            std::fs::create_dir_all(&path).unwrap();
            path.to_string_lossy().into_owned()
        }

        fn binds(&self, binds: &[&str]) -> Result<Resolved, VolumeError> {
            let hc = HostConfig {
                binds: Some(binds.iter().map(|b| (*b).to_owned()).collect()),
                ..Default::default()
            };
            resolve(&self.store, &BindPolicy::Any, &hc, &[], &[])
        }

        fn mounts(&self, mounts: serde_json::Value) -> Result<Resolved, VolumeError> {
            let hc = HostConfig {
                mounts: serde_json::from_value(mounts).unwrap(),
                ..Default::default()
            };
            resolve(&self.store, &BindPolicy::Any, &hc, &[], &[])
        }

        fn names(&self) -> Vec<String> {
            let all = self.store.list(&Default::default(), &Default::default());
            all.into_iter().map(|v| v.name).collect()
        }
    }

    fn message(err: VolumeError) -> String {
        error_chain(&err)
    }

    #[test]
    fn bind_forms() {
        let f = fixture();
        let host = f.host("src");
        let r = f.binds(&[&format!("{host}/:/ctr/")]).unwrap();
        assert_eq!(
            r.mounts,
            vec![MountPoint {
                kind: "bind".into(),
                source: host.clone(),
                destination: "/ctr".into(),
                rw: true,
                propagation: "rprivate".into(),
                ..Default::default()
            }]
        );
        assert!(r.created.is_empty() && r.seeds.is_empty());

        let r = f.binds(&[&format!("{host}:/ctr:ro,rshared,Z")]).unwrap();
        let m = &r.mounts[0];
        assert!(!m.rw);
        assert_eq!(m.mode, "ro,rshared,Z");
        assert_eq!(m.propagation, "rshared");
    }

    #[test]
    fn bind_creates_missing_source() {
        let f = fixture();
        let missing = f.dir.path().join("host/a/b");
        let r = f
            .binds(&[&format!("{}:/data:rw", missing.display())])
            .unwrap();
        assert!(missing.is_dir());
        assert!(r.mounts[0].rw);
        assert_eq!(r.mounts[0].mode, "rw");
    }

    #[test]
    fn named_and_anonymous_volume_binds() {
        let f = fixture();
        let r = f
            .binds(&["data:/data", "cache:/cache:ro,nocopy", "/anon"])
            .unwrap();
        assert_eq!(r.created.len(), 3);
        let data = r.mounts.iter().find(|m| m.destination == "/data").unwrap();
        let volume = f.store.get("data").unwrap();
        assert_eq!(
            data,
            &MountPoint {
                kind: "volume".into(),
                name: "data".into(),
                source: volume.mountpoint.to_string_lossy().into_owned(),
                destination: "/data".into(),
                driver: "local".into(),
                mode: "z".into(),
                rw: true,
                propagation: String::new(),
            }
        );
        let cache = r.mounts.iter().find(|m| m.destination == "/cache").unwrap();
        assert!(!cache.rw);
        assert_eq!(cache.mode, "ro,nocopy");
        let anon = r.mounts.iter().find(|m| m.destination == "/anon").unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(f.store.get(&anon.name).unwrap().is_anonymous());
        // nocopy: no seed.
        let seeded: Vec<&str> = r.seeds.iter().map(|s| s.destination.as_str()).collect();
        assert_eq!(seeded, ["/anon", "/data"]);
        assert!(r.seeds.iter().all(|s| s.new));

        // An existing volume is reused, not created again.
        let again = f.binds(&["data:/other"]).unwrap();
        assert!(again.created.is_empty());
        assert!(!again.seeds[0].new);
    }

    #[test]
    fn bind_spec_errors() {
        let f = fixture();
        let cases = [
            ("x:y", "invalid volume specification: 'x:y': invalid mount config for type \"volume\": invalid mount path: 'y' mount path must be absolute"),
            ("/foo:rw", "invalid volume specification: '/foo:rw'"),
            (":/x", "invalid volume specification: ':/x'"),
            ("a:/b:c:d", "invalid volume specification: 'a:/b:c:d'"),
            ("a:/b:xyz", "invalid mode: xyz"),
            ("a:/b:ro,rw", "invalid mode: ro,rw"),
            ("/h:/", "invalid volume specification: '/h:/': invalid mount config for type \"bind\": invalid specification: destination can't be '/'"),
            ("vol:/x:rshared", "invalid volume specification: 'vol:/x:rshared': invalid mount config for type \"volume\": field BindOptions must not be specified"),
            ("/h:/x:nocopy", "invalid volume specification: '/h:/x:nocopy': invalid mount config for type \"bind\": field VolumeOptions must not be specified"),
            ("./rel:/x", "create ./rel: \"./rel\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"),
        ];
        for (spec, expected) in cases {
            let err = f.binds(&[spec]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParameter, "{spec}");
            assert_eq!(message(err), expected, "{spec}");
        }
        assert!(f.names().is_empty());
    }

    #[test]
    fn mount_forms() {
        let f = fixture();
        let host = f.host("cfg");
        let r = f
            .mounts(serde_json::json!([
                {"Type": "bind", "Source": host, "Target": "/cfg", "ReadOnly": true,
                 "BindOptions": {"Propagation": "rslave"}},
                {"Type": "volume", "Source": "named", "Target": "/named",
                 "VolumeOptions": {"NoCopy": true, "Labels": {"a": "b"},
                                   "DriverConfig": {"Name": "local", "Options": {"type": "tmpfs"}}}},
                {"Type": "volume", "Target": "/anon"},
                {"Type": "tmpfs", "Target": "/tmp", "TmpfsOptions": {"SizeBytes": 1024}},
            ]))
            .unwrap();
        let by_dest = |d: &str| {
            r.mounts
                .iter()
                .find(|m| m.destination == d)
                .unwrap()
                .clone()
        };
        let cfg = by_dest("/cfg");
        assert_eq!(
            (cfg.kind.as_str(), cfg.rw, cfg.mode.as_str()),
            ("bind", false, "")
        );
        assert_eq!(cfg.propagation, "rslave");
        assert_eq!(cfg.source, host);

        let named = by_dest("/named");
        assert_eq!((named.kind.as_str(), named.mode.as_str()), ("volume", "z"));
        let volume = f.store.get("named").unwrap();
        assert_eq!(volume.labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(
            volume.options.get("type").map(String::as_str),
            Some("tmpfs")
        );

        let anon = by_dest("/anon");
        assert!(f
            .store
            .get(&anon.name)
            .unwrap()
            .labels
            .contains_key(ANONYMOUS_LABEL));

        let tmp = by_dest("/tmp");
        assert_eq!(
            tmp,
            MountPoint {
                kind: "tmpfs".into(),
                destination: "/tmp".into(),
                rw: true,
                ..Default::default()
            }
        );
        // NoCopy: only the anonymous volume is seeded.
        assert_eq!(r.seeds.len(), 1);
        assert_eq!(r.seeds[0].destination, "/anon");
        // Sorted by destination.
        let dests: Vec<&str> = r.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dests, ["/anon", "/cfg", "/named", "/tmp"]);
    }

    #[test]
    fn mount_errors() {
        let f = fixture();
        let missing = f.dir.path().join("nope");
        let cases = [
            (
                serde_json::json!({"Type": "bind", "Source": missing, "Target": "/x"}),
                format!("invalid mount config for type \"bind\": bind source path does not exist: {}", missing.display()),
            ),
            (
                serde_json::json!({"Type": "volume", "Source": "v1", "Target": "rel"}),
                "invalid mount config for type \"volume\": invalid mount path: 'rel' mount path must be absolute".to_owned(),
            ),
            (
                serde_json::json!({"Type": "volume", "Target": "/x", "ReadOnly": true}),
                "invalid mount config for type \"volume\": must not set ReadOnly mode when using anonymous volumes".to_owned(),
            ),
            (
                serde_json::json!({"Type": "tmpfs", "Source": "x", "Target": "/x"}),
                "invalid mount config for type \"tmpfs\": field Source must not be specified".to_owned(),
            ),
            (
                serde_json::json!({"Type": "npipe", "Target": "/x"}),
                "invalid mount config for type \"npipe\": mount type unknown".to_owned(),
            ),
            (
                serde_json::json!({"Type": "volume", "Source": "v1"}),
                "invalid mount config for type \"volume\": field Target must not be empty".to_owned(),
            ),
            (
                serde_json::json!({"Type": "bind", "Source": "/", "Target": "/x",
                                   "BindOptions": {"Propagation": "bogus"}}),
                "invalid mount config for type \"bind\": invalid propagation mode: bogus".to_owned(),
            ),
        ];
        for (mount, expected) in cases {
            let err = f.mounts(serde_json::json!([mount])).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidParameter);
            assert_eq!(message(err), expected);
        }
        assert!(f.names().is_empty());
    }

    #[test]
    fn duplicate_destinations() {
        let f = fixture();
        let host = f.host("h");
        let err = f
            .binds(&[&format!("{host}:/data"), "v1:/data/"])
            .unwrap_err();
        assert_eq!(err.to_string(), "Duplicate mount point: /data");

        let hc = HostConfig {
            binds: Some(vec!["v1:/data".into()]),
            mounts: serde_json::from_value(serde_json::json!([
                {"Type": "volume", "Source": "v2", "Target": "/data"}
            ]))
            .unwrap(),
            ..Default::default()
        };
        let err = resolve(&f.store, &BindPolicy::Any, &hc, &[], &[]).unwrap_err();
        assert_eq!(err.to_string(), "Duplicate mount point: /data");

        let hc = HostConfig {
            binds: Some(vec!["v1:/run".into()]),
            tmpfs: Some(BTreeMap::from([("/run".into(), String::new())])),
            ..Default::default()
        };
        let err = resolve(&f.store, &BindPolicy::Any, &hc, &[], &[]).unwrap_err();
        assert_eq!(err.to_string(), "Duplicate mount point: /run");
        assert!(f.names().is_empty());
    }

    #[test]
    fn failure_removes_what_the_call_created() {
        let f = fixture();
        f.store
            .create(Some("existing"), "", &BTreeMap::new(), &BTreeMap::new())
            .unwrap();
        // The bad name is only found when creating, after `fresh` exists.
        let err = f
            .binds(&["existing:/a", "fresh:/b", "/anon", "./bad:/c"])
            .unwrap_err();
        assert!(matches!(err, VolumeError::InvalidName(_)));
        assert_eq!(f.names(), ["existing"]);

        // A bind source that cannot be created, after volumes were made.
        let file = f.dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = f
            .binds(&["fresh:/a", &format!("{}/sub:/z", file.display())])
            .unwrap_err();
        assert!(message(err).starts_with(&format!(
            "error while creating mount source path '{}/sub'",
            file.display()
        )));
        assert_eq!(f.names(), ["existing"]);
        assert_eq!(
            std::fs::read_dir(f.store.root()).unwrap().count(),
            1,
            "no trash or half-made volume left"
        );
    }

    #[test]
    fn failure_removes_created_bind_sources() {
        let f = fixture();
        let made = f.dir.path().join("made/deep");
        let hc = HostConfig {
            binds: Some(vec![format!("{}:/a", made.display())]),
            mounts: serde_json::from_value(serde_json::json!([
                {"Type": "volume", "Source": "./bad", "Target": "/b"}
            ]))
            .unwrap(),
            ..Default::default()
        };
        // Volumes are created in destination order: the bind at /a first.
        assert!(resolve(&f.store, &BindPolicy::Any, &hc, &[], &[]).is_err());
        assert!(!f.dir.path().join("made").exists());
    }

    #[test]
    fn volumes_from_with_read_only_override() {
        let f = fixture();
        let points = vec![
            MountPoint {
                kind: "volume".into(),
                name: "shared".into(),
                source: "/v/shared/_data".into(),
                destination: "/shared".into(),
                driver: "local".into(),
                mode: "z".into(),
                rw: true,
                ..Default::default()
            },
            MountPoint {
                kind: "bind".into(),
                source: "/etc/cfg".into(),
                destination: "/cfg".into(),
                rw: false,
                propagation: "rprivate".into(),
                ..Default::default()
            },
        ];
        let from = |ro| vec![("abc".to_owned(), points.clone(), ro)];
        let rw_of = |r: &Resolved| -> Vec<bool> { r.mounts.iter().map(|m| m.rw).collect() };

        let hc = HostConfig::default();
        let keep = resolve(&f.store, &BindPolicy::Any, &hc, &[], &from(None)).unwrap();
        // Sorted: /cfg, /shared.
        assert_eq!(rw_of(&keep), [false, true]);
        assert_eq!(keep.mounts[1], points[0]);
        assert!(keep.created.is_empty() && keep.seeds.is_empty());
        let ro = resolve(&f.store, &BindPolicy::Any, &hc, &[], &from(Some(true))).unwrap();
        assert_eq!(rw_of(&ro), [false, false]);
        let rw = resolve(&f.store, &BindPolicy::Any, &hc, &[], &from(Some(false))).unwrap();
        assert_eq!(
            rw_of(&rw),
            [false, true],
            "rw never upgrades a read-only mount"
        );

        // A bind at the same destination replaces the volumes-from mount.
        let hc = HostConfig {
            binds: Some(vec!["own:/shared".into()]),
            ..Default::default()
        };
        let r = resolve(&f.store, &BindPolicy::Any, &hc, &[], &from(None)).unwrap();
        assert_eq!(r.mounts[1].name, "own");
    }

    #[test]
    fn image_volumes_fill_uncovered_paths() {
        let f = fixture();
        let hc = HostConfig {
            binds: Some(vec!["named:/data".into()]),
            tmpfs: Some(BTreeMap::from([("/scratch".into(), String::new())])),
            ..Default::default()
        };
        let image = [
            "/data/".to_owned(),
            "/var/lib/db".to_owned(),
            "/scratch".to_owned(),
            "/var/lib/db".to_owned(),
        ];
        let r = resolve(&f.store, &BindPolicy::Any, &hc, &image, &[]).unwrap();
        let dests: Vec<&str> = r.mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(dests, ["/data", "/var/lib/db"]);
        let db = &r.mounts[1];
        assert_eq!(
            (db.kind.as_str(), db.mode.as_str(), db.rw),
            ("volume", "", true)
        );
        assert!(f.store.get(&db.name).unwrap().is_anonymous());
        assert_eq!(r.created.len(), 2);
        assert_eq!(r.seeds.len(), 2);

        let err = resolve(
            &f.store,
            &BindPolicy::Any,
            &HostConfig::default(),
            &["rel".to_owned()],
            &[],
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidParameter);
    }

    #[test]
    fn unknown_volume_driver() {
        let f = fixture();
        let hc = HostConfig {
            binds: Some(vec!["v1:/x".into()]),
            volume_driver: "nfs".into(),
            ..Default::default()
        };
        let err = resolve(&f.store, &BindPolicy::Any, &hc, &[], &[]).unwrap_err();
        assert!(matches!(err, VolumeError::UnknownDriver { .. }));
        assert!(f.names().is_empty());
    }

    #[test]
    fn volumes_from_specs() {
        assert_eq!(parse_volumes_from("ctr").unwrap(), ("ctr".into(), None));
        assert_eq!(
            parse_volumes_from("ctr:ro").unwrap(),
            ("ctr".into(), Some(true))
        );
        assert_eq!(
            parse_volumes_from("ctr:rw").unwrap(),
            ("ctr".into(), Some(false))
        );
        assert_eq!(
            parse_volumes_from("ctr:ro,z").unwrap(),
            ("ctr".into(), Some(true))
        );
        assert_eq!(parse_volumes_from("ctr:z").unwrap(), ("ctr".into(), None));
        assert_eq!(
            parse_volumes_from("").unwrap_err().to_string(),
            "volumes-from specification cannot be an empty string"
        );
        for bad in ["ctr:rshared", "ctr:nocopy", "ctr:xyz", "ctr:ro,rw"] {
            let err = parse_volumes_from(bad).unwrap_err();
            assert!(err.to_string().starts_with("invalid mode: "), "{bad}");
        }
    }

    #[test]
    fn clean_paths() {
        assert_eq!(clean("/a/./b/../c/"), "/a/c");
        assert_eq!(clean("//x//y"), "/x/y");
        assert_eq!(clean("/.."), "/");
        assert_eq!(clean("/"), "/");
    }
}
