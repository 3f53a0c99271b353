//! `rm` and `rename`.

use std::sync::Arc;

use super::{Engine, EngineError};
use crate::runtime::monitor::client;
use crate::runtime::monitor::protocol::Request;

impl Engine {
    /// Removes a container; `force` kills a running one first, `volumes`
    /// removes its anonymous volumes too.
    pub async fn remove(
        self: &Arc<Self>,
        key: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), EngineError> {
        let handle = self.container(key).await?;
        {
            let mut record = handle.record.lock().await;
            if record.state.status == "removing" {
                return Err(EngineError::Conflict(format!(
                    "removal of container {} is already in progress",
                    record.id
                )));
            }
            if record.state.running && !force {
                let what = if record.state.paused {
                    "paused"
                } else {
                    "running"
                };
                return Err(EngineError::Conflict(format!(
                    "cannot remove container \"/{}\": container is {what}: stop the container before removing or force remove",
                    record.name
                )));
            }
            let was_running = record.state.running && record.state.status != "restarting";
            record.set_status("removing");
            record.state.running = was_running;
            if was_running {
                let socket = self.layout.monitor_socket(&record.id);
                if record.state.paused {
                    let _ = client::call(&socket, &Request::Resume).await;
                }
                drop(record);
                let _ = client::call(&socket, &Request::Kill { signal: 9 }).await;
                handle.wait_stopped(None).await;
            }
        }
        let record = handle.record.lock().await.clone();
        let mut registry = self.containers.write().await;
        registry.by_id.remove(&record.id);
        registry.names.remove(&record.name);
        drop(registry);
        let dir = self.layout.container(&record.id);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(id = %record.short_id(), error = %e, "cannot remove the container directory");
        }
        if volumes {
            self.remove_anonymous_volumes(&record).await;
        }
        super::exec::forget_container(self, &record.id).await;
        let mut record = record;
        record.set_status("removed");
        *handle.record.lock().await = record.clone();
        handle.notify();
        self.publish_container(&record, "destroy", Default::default());
        Ok(())
    }

    /// `docker rename`.
    /// `docker rm --link PARENT/ALIAS`: the parent forgets that legacy link
    /// (from its next start on; both containers stay). Anything that is not
    /// one of its links is no such container, as for dockerd.
    pub async fn remove_link(&self, parent: &str, alias: &str) -> Result<(), EngineError> {
        let missing = || EngineError::NoSuchContainer(format!("{parent}/{alias}"));
        let handle = self.container(parent).await.map_err(|_| missing())?;
        let mut record = handle.record.lock().await;
        let before = record.host_config.links.clone();
        let mut links = before.clone().unwrap_or_default();
        let Some(at) = links
            .iter()
            .position(|l| super::network::parse_link(l).1 == alias)
        else {
            return Err(missing());
        };
        links.remove(at);
        record.host_config.links = (!links.is_empty()).then_some(links);
        if let Err(e) = self.save(&record) {
            record.host_config.links = before;
            return Err(e);
        }
        Ok(())
    }

    pub async fn rename(&self, key: &str, new_name: &str) -> Result<(), EngineError> {
        let new_name = super::names::validate(new_name)
            .map_err(EngineError::InvalidParameter)?
            .to_owned();
        let handle = self.container(key).await?;
        let mut registry = self.containers.write().await;
        let mut record = handle.record.lock().await;
        if record.name == new_name {
            return Err(EngineError::Conflict(
                "Renaming a container with the same name as its current name".to_owned(),
            ));
        }
        if let Some(id) = registry.names.get(&new_name) {
            let in_use = EngineError::NameInUse {
                name: new_name,
                id: id.clone(),
            };
            return Err(EngineError::Conflict(format!(
                "Error when allocating new name: {in_use}"
            )));
        }
        let old = std::mem::replace(&mut record.name, new_name.clone());
        if let Err(e) = self.save(&record) {
            record.name = old;
            return Err(e);
        }
        registry.names.remove(&old);
        registry.names.insert(new_name, record.id.clone());
        self.publish_container(
            &record,
            "rename",
            std::collections::BTreeMap::from([("oldName".to_owned(), format!("/{old}"))]),
        );
        Ok(())
    }

    /// Removes the anonymous volumes a removed container had.
    async fn remove_anonymous_volumes(&self, record: &super::ContainerRecord) {
        let users = self.volume_users().await;
        for mount in record.mounts.iter().filter(|m| m.kind == "volume") {
            let anonymous = self
                .volumes
                .get(&mount.name)
                .is_ok_and(|v| v.labels.contains_key(crate::volume::ANONYMOUS_LABEL));
            if !anonymous || users.contains_key(&mount.name) {
                continue;
            }
            match self.volumes.remove(&mount.name, false, &[]) {
                Ok(_) => crate::volume::publish(&self.events, "destroy", &mount.name, &[]),
                Err(e) => {
                    tracing::warn!(volume = %mount.name, error = %e, "cannot remove an anonymous volume")
                }
            }
        }
    }
}
