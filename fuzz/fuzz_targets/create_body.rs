//! `POST /containers/create`: the body as the API decodes it, then every
//! check and transformation `Engine::create` and `start` apply that needs no
//! engine state — the name, the restart policy and network mode, the
//! runtime's `HostConfig` rules, the merge with the image's config, the mount
//! plan, and the OCI spec build over a rootfs with the input's passwd and
//! group files.
//!
//! Input: `body [0xFF passwd [0xFF group [0xFF image-config [0xFF name]]]]`.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vmctl_fuzz::{parts, write_etc};
use vmctl_guest::engine::create::{merge_config, validate_host_config};
use vmctl_guest::engine::names;
use vmctl_guest::image::ImageConfig;
use vmctl_guest::model::{Config, CreateRequest, HostConfig};
use vmctl_guest::runtime::spec::{self, EtcFiles, NetNs, SpecInput};
use vmctl_guest::volume::resolve::plan_points;

fn rootfs() -> &'static PathBuf {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("vmctl-fuzz-create-")
            .tempdir()
            .expect("a rootfs dir");
        dir.keep()
    })
}

fuzz_target!(|data: &[u8]| {
    let [body, passwd, group, image, name] = parts::<5>(data);
    if let Some(name) = name.and_then(|n| std::str::from_utf8(n).ok()) {
        let _ = names::validate(name);
    }
    let Ok(request) = serde_json::from_slice::<CreateRequest>(body.unwrap_or_default()) else {
        return;
    };
    let CreateRequest {
        mut config,
        host_config,
        ..
    } = request;
    // The record `create` writes is read back at every engine start.
    let stored = serde_json::to_vec(&config).expect("Config serializes");
    serde_json::from_slice::<Config>(&stored).expect("a stored Config reads back");
    let stored = serde_json::to_vec(&host_config).expect("HostConfig serializes");
    serde_json::from_slice::<HostConfig>(&stored).expect("a stored HostConfig reads back");

    if validate_host_config(&host_config).is_err() || spec::validate(&host_config).is_err() {
        return;
    }
    let image: ImageConfig = image
        .and_then(|bytes| serde_json::from_slice(bytes).ok())
        .unwrap_or_default();
    merge_config(&mut config, &image);
    let mut args = config.entrypoint.clone().unwrap_or_default();
    args.extend(config.cmd.clone().unwrap_or_default());
    if args.is_empty() {
        return;
    }
    let image_volumes: Vec<String> = config.volumes.keys().cloned().collect();
    let Ok(mounts) = plan_points(&host_config, &image_volumes) else {
        return;
    };
    let rootfs = rootfs();
    write_etc(rootfs, passwd, group);
    let input = SpecInput {
        id: "fuzz",
        config: &config,
        host_config: &host_config,
        args,
        env: config.env.clone(),
        rootfs: rootfs.clone(),
        mounts: &mounts,
        etc_files: EtcFiles {
            hostname: "/run/fuzz/hostname".into(),
            hosts: "/run/fuzz/hosts".into(),
            resolv_conf: "/run/fuzz/resolv.conf".into(),
        },
        cgroups_path: "/vmctl/fuzz".into(),
        netns: NetNs::New,
        init_binary: Some("/var/lib/vmctl/vmctl-init".into()),
    };
    if let Ok(spec) = spec::build(&input) {
        // libcontainer reads the spec from config.json.
        let json = serde_json::to_vec(&spec).expect("the spec serializes");
        serde_json::from_slice::<oci_spec::runtime::Spec>(&json).expect("the spec reads back");
    }
});
