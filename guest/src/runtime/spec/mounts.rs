//! The mounts of a container: Docker's defaults (`/proc`, `/dev`, `/sys`,
//! …), the engine's `/etc` files, binds and volumes, and tmpfs.

use super::*;

/// A mount of `typ` from `source` at `destination`.
pub(super) fn mount(destination: &str, typ: &str, source: &Path, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(destination));
    m.set_typ(Some(typ.to_string()));
    m.set_source(Some(source.to_path_buf()));
    m.set_options(Some(options));
    m
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Tmpfs options: Docker's defaults, then the user's; a later flag or
/// `key=value` overrides an earlier one (`exec` beats `noexec`).
pub(super) fn tmpfs_options(user: &[String]) -> Vec<String> {
    let mut out: Vec<String> = strings(&["noexec", "nosuid", "nodev", "rprivate"]);
    for opt in user.iter().filter(|o| !o.is_empty()) {
        let key = |o: &str| {
            o.split_once('=')
                .map_or(o.to_string(), |(k, _)| k.to_string())
        };
        let base = |o: &str| o.strip_prefix("no").unwrap_or(o).to_string();
        let k = key(opt);
        out.retain(|o| {
            if opt.contains('=') {
                key(o) != k
            } else {
                base(o) != base(opt)
                    && !(matches!(opt.as_str(), "ro" | "rw") && matches!(o.as_str(), "ro" | "rw"))
            }
        });
        out.push(opt.clone());
    }
    out
}

/// All mounts: the system ones, the `/etc` files, binds, volumes and tmpfs.
/// A user mount replaces a system one at the same place.
pub(super) fn mounts(input: &SpecInput, opts: &SecurityOpts) -> Result<Vec<Mount>, SpecError> {
    let hc = input.host_config;
    let confined = !hc.privileged;
    let sys_ro = if confined { "ro" } else { "rw" };
    let cgroup_ro = if confined && !opts.writable_cgroups {
        "ro"
    } else {
        "rw"
    };
    let shm_size = if hc.shm_size > 0 {
        hc.shm_size
    } else {
        DEFAULT_SHM_SIZE
    };
    let p = Path::new;
    let mut system = vec![
        mount(
            "/proc",
            "proc",
            p("proc"),
            strings(&["nosuid", "noexec", "nodev"]),
        ),
        mount(
            "/dev",
            "tmpfs",
            p("tmpfs"),
            strings(&["nosuid", "strictatime", "mode=755", "size=65536k"]),
        ),
        mount(
            "/dev/pts",
            "devpts",
            p("devpts"),
            strings(&[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ]),
        ),
        mount(
            "/sys",
            "sysfs",
            p("sysfs"),
            strings(&[sys_ro, "nosuid", "noexec", "nodev"]),
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            p("cgroup"),
            strings(&[cgroup_ro, "nosuid", "noexec", "nodev"]),
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            p("mqueue"),
            strings(&["nosuid", "noexec", "nodev"]),
        ),
    ];
    match hc.ipc_mode.as_str() {
        "host" => system.push(mount(
            "/dev/shm",
            "bind",
            p("/dev/shm"),
            strings(&["rbind", "rprivate"]),
        )),
        "none" => {}
        _ => system.push(mount(
            "/dev/shm",
            "tmpfs",
            p("shm"),
            vec![
                "nosuid".into(),
                "noexec".into(),
                "nodev".into(),
                "mode=1777".into(),
                format!("size={shm_size}"),
            ],
        )),
    }

    let mut user: Vec<Mount> = Vec::new();
    let etc_rw = if hc.readonly_rootfs { "ro" } else { "rw" };
    for (dest, src) in [
        ("/etc/resolv.conf", &input.etc_files.resolv_conf),
        ("/etc/hostname", &input.etc_files.hostname),
        ("/etc/hosts", &input.etc_files.hosts),
    ] {
        user.push(mount(
            dest,
            "bind",
            src,
            strings(&["rbind", "rprivate", etc_rw]),
        ));
    }
    for m in input.mounts.iter().filter(|m| m.kind != "tmpfs") {
        let propagation = if m.propagation.is_empty() {
            "rprivate"
        } else {
            m.propagation.as_str()
        };
        let mut options = strings(&["rbind", propagation]);
        if !m.rw {
            options.push("ro".into());
        }
        user.push(mount(&m.destination, "bind", p(&m.source), options));
    }
    let mut tmpfs: Vec<(String, Vec<String>)> = Vec::new();
    for (dest, data) in hc.tmpfs.iter().flatten() {
        tmpfs.push((dest.clone(), data.split(',').map(str::to_string).collect()));
    }
    for m in hc.mounts.iter().filter(|m| m.kind == "tmpfs") {
        let mut data = Vec::new();
        if let Some(t) = &m.tmpfs_options {
            if t.size_bytes > 0 {
                data.push(format!("size={}", t.size_bytes));
            }
            if t.mode != 0 {
                data.push(format!("mode={:o}", t.mode));
            }
        }
        if m.read_only {
            data.push("ro".into());
        }
        tmpfs.push((m.target.clone(), data));
    }
    for m in input.mounts.iter().filter(|m| m.kind == "tmpfs") {
        if !tmpfs.iter().any(|(dest, _)| *dest == m.destination) {
            tmpfs.push((
                m.destination.clone(),
                if m.rw { vec![] } else { vec!["ro".into()] },
            ));
        }
    }
    for (dest, data) in tmpfs {
        user.push(mount(&dest, "tmpfs", p("tmpfs"), tmpfs_options(&data)));
    }
    if let (Some(true), Some(binary)) = (hc.init, &input.init_binary) {
        user.push(mount(
            init::CONTAINER_PATH,
            "bind",
            binary,
            strings(&["rbind", "rprivate", "ro"]),
        ));
    }

    // A user mount wins over a system mount at the same place; parents are
    // mounted before their children.
    system.retain(|s| !user.iter().any(|u| u.destination() == s.destination()));
    user.sort_by_key(|m| m.destination().components().count());
    system.extend(user);
    Ok(system)
}
