//! `create`: validate the request, merge it with the image's config, resolve
//! mounts, and write the record. Nothing is left behind on failure.
//!
//! A create holds the container registry's write lock from checking its
//! image and resolving its volumes to recording the container. Image and
//! volume removal and prune decide what is unused under the same lock
//! ([`Engine::in_use`]) and keep it until they are done, so the two never
//! interleave: a prune either finishes first (the create then finds the
//! image gone and fails cleanly, or makes a named volume anew as Docker
//! would) or sees the new container as a user.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::record::{now_rfc3339, ContainerRecord, ZERO_TIME};
use super::{names, ContainerHandle, Engine, EngineError};
use crate::image::ImageConfig;
use crate::model::{Config, CreateRequest, HealthConfig, HostConfig};

/// What `create` answers.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

/// Image ids and volumes in use, with creates held off while it lives
/// (see [`Engine::in_use`]).
pub struct InUse<'a> {
    _registry: tokio::sync::RwLockReadGuard<'a, super::Registry>,
    pub images: std::collections::HashSet<String>,
    /// Volume names to the ids of the containers that mount them.
    pub volumes: BTreeMap<String, Vec<String>>,
}

/// Docker's rules for the environment: the request's entries first, in its
/// order, then the image's entries whose key the request does not set.
fn merge_env(image: &[String], request: &[String]) -> Vec<String> {
    let key = |e: &String| e.split('=').next().unwrap_or_default().to_owned();
    let mut merged: Vec<String> = request.to_vec();
    let overridden: Vec<String> = request.iter().map(key).collect();
    merged.extend(
        image
            .iter()
            .filter(|e| !overridden.contains(&key(e)))
            .cloned(),
    );
    merged
}

/// Fills what the request left empty from the image's config.
pub fn merge_config(config: &mut Config, image: &ImageConfig) {
    config.env = merge_env(image.env.as_deref().unwrap_or_default(), &config.env);
    if config.entrypoint.is_none() {
        config.entrypoint = image.entrypoint.clone();
        if config.cmd.is_none() {
            config.cmd = image.cmd.clone();
        }
    }
    if config.working_dir.is_empty() {
        config.working_dir = image.working_dir.clone();
    }
    if config.user.is_empty() {
        config.user = image.user.clone();
    }
    if config.stop_signal.is_empty() {
        config.stop_signal = image.stop_signal.clone();
    }
    if let Some(ports) = &image.exposed_ports {
        let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
        for (port, value) in ports {
            exposed.entry(port.clone()).or_insert_with(|| value.clone());
        }
    }
    if let Some(volumes) = &image.volumes {
        for (path, value) in volumes {
            config
                .volumes
                .entry(path.clone())
                .or_insert_with(|| value.clone());
        }
    }
    if let Some(labels) = &image.labels {
        for (key, value) in labels {
            config
                .labels
                .entry(key.clone())
                .or_insert_with(|| value.clone());
        }
    }
    merge_healthcheck(&mut config.healthcheck, image);
}

/// The image's `HEALTHCHECK` under the request's `--health-*`: each field the
/// request left empty (or zero) comes from the image, as Docker merges them.
fn merge_healthcheck(own: &mut Option<HealthConfig>, image: &ImageConfig) {
    let Some(from_image) = image
        .extra
        .get("Healthcheck")
        .and_then(|v| serde_json::from_value::<HealthConfig>(v.clone()).ok())
    else {
        return;
    };
    let Some(own) = own else {
        *own = Some(from_image);
        return;
    };
    if own.test.is_empty() {
        own.test = from_image.test;
    }
    for (mine, theirs) in [
        (&mut own.interval, from_image.interval),
        (&mut own.timeout, from_image.timeout),
        (&mut own.start_period, from_image.start_period),
        (&mut own.start_interval, from_image.start_interval),
        (&mut own.retries, from_image.retries),
    ] {
        if *mine == 0 {
            *mine = theirs;
        }
    }
}

/// Checks what the runtime cannot know: restart policy, network mode. Public
/// for the `create_body` fuzz target (fuzz/), which runs it as `create` does.
pub fn validate_host_config(host_config: &HostConfig) -> Result<(), EngineError> {
    let policy = host_config.restart_policy.name.as_str();
    if !matches!(
        policy,
        "" | "no" | "always" | "unless-stopped" | "on-failure"
    ) {
        return Err(EngineError::InvalidParameter(format!(
            "invalid restart policy '{policy}'"
        )));
    }
    if policy != "on-failure" && host_config.restart_policy.maximum_retry_count != 0 {
        return Err(EngineError::InvalidParameter(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                .to_owned(),
        ));
    }
    if host_config.restart_policy.maximum_retry_count < 0 {
        return Err(EngineError::InvalidParameter(
            "invalid restart policy: maximum retry count cannot be negative".to_owned(),
        ));
    }
    if host_config.auto_remove && !matches!(policy, "" | "no") {
        return Err(EngineError::InvalidParameter(
            "can't create 'AutoRemove' container with restart policy".to_owned(),
        ));
    }
    if host_config.network_mode == "container:" {
        return Err(EngineError::NotFoundNetwork("container:".to_owned()));
    }
    if !matches!(host_config.runtime.as_str(), "" | "runc") {
        return Err(EngineError::InvalidParameter(format!(
            "unknown or invalid runtime name: {}",
            host_config.runtime
        )));
    }
    // Docker's built-in log drivers; any other name is a plugin, and this
    // engine has none.
    let driver = host_config.log_config.kind.as_str();
    if !matches!(
        driver,
        "" | "json-file"
            | "local"
            | "none"
            | "journald"
            | "syslog"
            | "gelf"
            | "fluentd"
            | "awslogs"
            | "splunk"
            | "etwlogs"
            | "gcplogs"
            | "logentries"
    ) {
        return Err(EngineError::InvalidParameter(format!(
            "logger: no log driver named '{driver}' is registered"
        )));
    }
    Ok(())
}

impl Engine {
    /// Creates a container from `request`, named `name` (random when `None`).
    pub async fn create(
        self: &Arc<Self>,
        name: Option<&str>,
        request: CreateRequest,
    ) -> Result<Created, EngineError> {
        let CreateRequest {
            mut config,
            mut host_config,
            networking_config,
        } = request;
        let given = match name.filter(|n| !n.is_empty()) {
            Some(name) => Some(
                names::validate(name)
                    .map_err(EngineError::InvalidParameter)?
                    .to_owned(),
            ),
            None => None,
        };
        if config.image.is_empty() {
            return Err(EngineError::InvalidParameter(
                "config cannot be empty in order to create a container".to_owned(),
            ));
        }
        validate_host_config(&host_config)?;
        if let Some(check) = &config.healthcheck {
            super::health::validate(check)?;
        }
        crate::runtime::spec::validate(&host_config)
            .map_err(|e| EngineError::InvalidParameter(e.to_string()))?;
        let image = self.images.resolve(&config.image)?;
        merge_config(&mut config, &image.config);
        let mut command: Vec<String> = config.entrypoint.clone().unwrap_or_default();
        command.extend(config.cmd.clone().unwrap_or_default());
        if command.is_empty() {
            return Err(EngineError::InvalidParameter(
                "no command specified".to_owned(),
            ));
        }
        if host_config.network_mode.is_empty() {
            host_config.network_mode = "default".to_owned();
        }
        // dockerd records its default driver, and clients read it back:
        // the Python SDK's `containers.run` returns the output only for
        // json-file and journald.
        if host_config.log_config.kind.is_empty() {
            host_config.log_config.kind = "json-file".to_owned();
        }
        // The one runtime, under dockerd's default name (clients read it).
        if host_config.runtime.is_empty() {
            host_config.runtime = "runc".to_owned();
        }
        let mut warnings = Vec::new();
        let networking = self
            .plan_networking(&config, &host_config, networking_config.as_ref())
            .await?;
        if host_config.network_mode == "host"
            && (!host_config.port_bindings.is_empty() || host_config.publish_all_ports)
        {
            warnings.push("Published ports are discarded when using host network mode".to_owned());
        }
        let id = names::new_id();
        if config.hostname.is_empty() && host_config.network_mode != "host" {
            config.hostname = id[..12].to_owned();
        }

        let volumes_from = self.volumes_from(&host_config).await?;
        let image_volumes: Vec<String> = config.volumes.keys().cloned().collect();
        // The registry stays locked from here to the insert, so the name and
        // the volumes' users cannot change under us.
        let mut registry = self.containers.write().await;
        // A generated name never collides: another is drawn, as by Docker.
        let name =
            given.unwrap_or_else(|| names::unused_random_name(|n| registry.names.contains_key(n)));
        if let Some(existing) = registry.names.get(&name) {
            return Err(EngineError::NameInUse {
                name,
                id: existing.clone(),
            });
        }
        // A prune or rmi that finished since the image was resolved above
        // has taken it: fail now rather than record a container without it.
        self.images.resolve(&image.id)?;
        let engine = self.clone();
        let host_config_for_mounts = host_config.clone();
        let resolved = tokio::task::spawn_blocking(move || {
            crate::volume::resolve::resolve(
                &engine.volumes,
                &engine.options.binds,
                &host_config_for_mounts,
                &image_volumes,
                &volumes_from,
            )
        })
        .await
        .map_err(|e| EngineError::Runtime(format!("mount resolution failed: {e}")))??;
        let record = ContainerRecord {
            id: id.clone(),
            name: name.clone(),
            created: now_rfc3339(),
            path: command[0].clone(),
            args: command[1..].to_vec(),
            config,
            host_config,
            state: crate::model::State {
                status: "created".to_owned(),
                started_at: ZERO_TIME.to_owned(),
                finished_at: ZERO_TIME.to_owned(),
                ..Default::default()
            },
            image: image.id.clone(),
            layers: image.layers.clone(),
            mounts: resolved.mounts.clone(),
            networking,
            ..Default::default()
        };
        let dir = self.layout.container(&id);
        let written = std::fs::create_dir_all(&dir)
            .map_err(|e| EngineError::io("create", &dir, e))
            .and_then(|()| self.seed_volumes(&record, &resolved.seeds))
            .and_then(|()| self.save(&record));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&dir);
            for volume in &resolved.created {
                let _ = self.volumes.remove(volume, true, &[]);
            }
            return Err(e);
        }
        for volume in &resolved.created {
            crate::volume::publish(&self.events, "create", volume, &[]);
        }
        let image_name = record.config.image.clone();
        registry.names.insert(name.clone(), id.clone());
        registry
            .by_id
            .insert(id.clone(), ContainerHandle::new(record));
        drop(registry);
        self.events.publish(
            "container",
            "create",
            &id,
            BTreeMap::from([("image".to_owned(), image_name), ("name".to_owned(), name)]),
        );
        Ok(Created { id, warnings })
    }

    /// What containers use (image ids, volume names), as of now and for as
    /// long as the answer lives: it holds creates off, so a removal decided
    /// on it cannot race a create about to use what it removes. Keep it
    /// only for the removal itself.
    pub async fn in_use(&self) -> InUse<'_> {
        let registry = self.containers.read().await;
        let mut images = std::collections::HashSet::new();
        let mut volumes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for handle in registry.by_id.values() {
            let record = handle.record.lock().await;
            images.insert(record.image.clone());
            for mount in record.mounts.iter().filter(|m| m.kind == "volume") {
                volumes
                    .entry(mount.name.clone())
                    .or_default()
                    .push(record.id.clone());
            }
        }
        InUse {
            _registry: registry,
            images,
            volumes,
        }
    }

    /// The mount points of the containers named in `VolumesFrom`.
    async fn volumes_from(
        &self,
        host_config: &HostConfig,
    ) -> Result<Vec<(String, Vec<crate::model::MountPoint>, Option<bool>)>, EngineError> {
        let mut sources = Vec::new();
        for spec in host_config.volumes_from.iter().flatten() {
            let (key, read_only) = crate::volume::resolve::parse_volumes_from(spec)?;
            let handle = self.container(&key).await?;
            let record = handle.record.lock().await;
            sources.push((record.id.clone(), record.mounts.clone(), read_only));
        }
        Ok(sources)
    }

    /// Fills new empty volumes with what the image has at their destination
    /// (Docker's copy-up), reading the image through a temporary overlay.
    fn seed_volumes(
        &self,
        record: &ContainerRecord,
        seeds: &[crate::volume::resolve::Seed],
    ) -> Result<(), EngineError> {
        if seeds.is_empty() {
            return Ok(());
        }
        let dir = self.layout.container(&record.id);
        let view = dir.join("rootfs");
        crate::runtime::rootfs::mount_overlay(
            &record.layers,
            &dir.join("upper"),
            &dir.join("work"),
            &view,
        )
        .map_err(|e| EngineError::Runtime(format!("cannot read the image to seed volumes: {e}")))?;
        let result = seeds
            .iter()
            .try_for_each(|seed| crate::volume::seed::seed_volume(&view, seed).map(|_| ()));
        if let Err(e) = crate::runtime::rootfs::unmount(&view) {
            tracing::warn!(id = %record.short_id(), error = %e, "cannot unmount the seeding view");
        }
        result.map_err(EngineError::from)
    }

    /// Writes a container's record atomically.
    pub fn save(&self, record: &ContainerRecord) -> Result<(), EngineError> {
        let path = self.layout.container(&record.id).join("container.json");
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| EngineError::Runtime(format!("cannot encode record: {e}")))?;
        super::layout::write_atomic(&path, &bytes).map_err(|e| EngineError::io("write", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_from_request_overrides_the_image() {
        let merged = merge_env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=3".into()],
        );
        assert_eq!(merged, vec!["A=2", "B=3", "PATH=/bin"]);
    }

    #[test]
    fn entrypoint_from_request_drops_the_image_cmd() {
        let image = ImageConfig {
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        };
        let mut config = Config {
            entrypoint: Some(vec!["sh".into()]),
            ..Default::default()
        };
        merge_config(&mut config, &image);
        assert_eq!(config.cmd, None);
        let mut config = Config::default();
        merge_config(&mut config, &image);
        assert_eq!(config.entrypoint.unwrap(), vec!["/entry"]);
        assert_eq!(config.cmd.unwrap(), vec!["serve"]);
    }
}
