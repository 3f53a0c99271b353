//! `docker commit`: a container's changes become a new image.
//!
//! A running container is paused (unless `pause=false`) while its upper
//! directory is read, so the layer is one consistent moment of it. The new
//! image's config is the container's (`Cmd`, `Env`, `Entrypoint`…), then the
//! `changes` (Dockerfile instructions: `CMD`, `ENTRYPOINT`, `ENV`, `EXPOSE`,
//! `LABEL`, `USER`, `VOLUME`, `WORKDIR`, `STOPSIGNAL`), as Docker applies
//! them. A change that does not parse is refused before anything is written.

use std::collections::BTreeMap;

use super::{Engine, EngineError};
use crate::image::reference::Named;
use crate::image::{ConfigFile, ImageConfig};
use crate::model::container::Config;
use crate::model::EmptyObject;

/// What `POST /commit` asks for.
#[derive(Debug, Default)]
pub struct CommitRequest {
    pub container: String,
    /// `repo[:tag]`, or empty for an untagged image.
    pub repo: String,
    pub tag: String,
    pub comment: String,
    pub author: String,
    pub changes: Vec<String>,
    pub pause: bool,
}

impl Engine {
    /// Commits a container; answers the new image id.
    pub async fn commit(&self, request: CommitRequest) -> Result<String, EngineError> {
        let tag = new_tag(&request.repo, &request.tag, "commit")?;
        let handle = self.container(&request.container).await?;
        let (id, image, container_config, running, paused, path, args) = {
            let record = handle.record.lock().await;
            (
                record.id.clone(),
                record.image.clone(),
                record.config.clone(),
                record.state.running,
                record.state.paused,
                record.path.clone(),
                record.args.clone(),
            )
        };
        let mut config = image_config(&container_config);
        for change in &request.changes {
            apply_change(&mut config, change)?;
        }
        let parent = self.images.config_file(&image)?;
        let now = super::record::now_rfc3339();
        let created_by = std::iter::once(path)
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ");
        let mut history = parent.history.clone();
        history.push(vmctl_oci::image::History {
            created: Some(now.clone()),
            created_by,
            author: request.author.clone(),
            comment: request.comment.clone(),
            empty_layer: false,
        });
        let file = ConfigFile {
            architecture: parent.architecture.clone(),
            os: parent.os.clone(),
            variant: parent.variant.clone(),
            created: Some(now),
            author: request.author,
            comment: request.comment,
            docker_version: String::new(),
            container: id.clone(),
            container_config: serde_json::to_value(&container_config).ok(),
            config: Some(config),
            rootfs: parent.rootfs.clone(),
            history,
        };
        let mut freeze = request.pause && running && !paused;
        if freeze {
            if let Err(e) = self.pause(&id, true).await {
                // A container exiting as the commit starts has nothing to
                // freeze (its monitor is gone): commit it stopped, as dockerd.
                let handle = self.container(&id).await?;
                if !handle
                    .wait_stopped(Some(std::time::Duration::from_secs(5)))
                    .await
                {
                    return Err(e);
                }
                freeze = false;
            }
        }
        let upper = self.layout.container(&id).join("upper");
        let images = self.images.clone();
        let committed = tokio::task::spawn_blocking(move || {
            images.commit_image(&upper, &image, file, tag.as_ref())
        })
        .await;
        if freeze {
            if let Err(e) = self.pause(&id, false).await {
                tracing::warn!(container = %id, error = %e, "cannot unpause after commit");
            }
        }
        let new_id =
            committed.map_err(|e| EngineError::Runtime(format!("commit stopped: {e}")))??;
        let record = handle.record.lock().await.clone();
        self.publish_container(&record, "commit", Default::default());
        Ok(new_id)
    }
}

/// `docker import`'s options (`POST /images/create?fromSrc=-`).
#[derive(Debug, Default)]
pub struct ImportRequest {
    /// `repo` (which may carry its tag) and `tag`.
    pub repo: String,
    pub tag: String,
    /// The history comment; empty: `Imported from -`.
    pub message: String,
    /// Dockerfile instructions for the config (`--change`).
    pub changes: Vec<String>,
}

impl Engine {
    /// `docker import -`: a filesystem tar (`body`, plain or compressed) as
    /// a new one-layer image, its config from `changes`.
    pub async fn import(
        &self,
        body: impl std::io::Read + Send + 'static,
        request: ImportRequest,
    ) -> Result<String, EngineError> {
        let tag = new_tag(&request.repo, &request.tag, "import")?;
        let mut config = ImageConfig::default();
        for change in &request.changes {
            apply_change(&mut config, change)?;
        }
        let comment = if request.message.is_empty() {
            "Imported from -".to_owned()
        } else {
            request.message
        };
        let now = super::record::now_rfc3339();
        let file = ConfigFile {
            architecture: vmctl_oci::image::go_arch().to_owned(),
            os: "linux".to_owned(),
            created: Some(now.clone()),
            comment: comment.clone(),
            config: Some(config),
            history: vec![vmctl_oci::image::History {
                created: Some(now),
                comment,
                ..Default::default()
            }],
            ..ConfigFile::default()
        };
        let images = self.images.clone();
        let id = tokio::task::spawn_blocking(move || images.import_image(body, file, tag.as_ref()))
            .await
            .map_err(|e| EngineError::Runtime(format!("import stopped: {e}")))??;
        self.events
            .publish("image", "import", &id, Default::default());
        Ok(id)
    }
}

/// The name a new image (`what`: commit, import) gets from `repo` (which
/// may carry its tag) and `tag`; none when both are empty.
fn new_tag(repo: &str, tag: &str, what: &str) -> Result<Option<Named>, EngineError> {
    let named = match (repo, tag) {
        ("", "") => return Ok(None),
        ("", _) => {
            return Err(EngineError::InvalidParameter(
                "a tag needs a repository".to_owned(),
            ))
        }
        (repo, "") => Named::parse(repo)?,
        (repo, tag) => Named::parse(&format!("{repo}:{tag}"))?,
    };
    if named.digest.is_some() {
        return Err(EngineError::InvalidParameter(format!(
            "cannot {what} to a digest reference"
        )));
    }
    Ok(Some(named))
}

/// The image config a container's config gives.
fn image_config(config: &Config) -> ImageConfig {
    ImageConfig {
        user: config.user.clone(),
        exposed_ports: config.exposed_ports.clone(),
        env: Some(config.env.clone()),
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        volumes: (!config.volumes.is_empty()).then(|| config.volumes.clone()),
        working_dir: config.working_dir.clone(),
        labels: (!config.labels.is_empty()).then(|| config.labels.clone()),
        stop_signal: config.stop_signal.clone(),
        extra: config
            .healthcheck
            .iter()
            .filter_map(|check| serde_json::to_value(check).ok())
            .map(|check| ("Healthcheck".to_owned(), check))
            .collect(),
    }
}

/// A JSON array (`["a","b"]`), or a shell form run by `/bin/sh -c`.
fn command(args: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(exec) => exec,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), args.to_owned()],
    }
}

/// `k=v k2="v 2"` pairs, or the old `k v` form.
fn pairs(args: &str, instruction: &str) -> Result<Vec<(String, String)>, EngineError> {
    let bad = || EngineError::InvalidParameter(format!("{instruction} needs key=value: {args}"));
    if !args.split_whitespace().next().unwrap_or("").contains('=') {
        let (key, value) = args.split_once(char::is_whitespace).ok_or_else(bad)?;
        return Ok(vec![(key.to_owned(), value.trim().to_owned())]);
    }
    let mut out = Vec::new();
    let mut rest = args.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(bad)?;
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').ok_or_else(bad)?;
            (quoted[..end].to_owned(), &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad());
        }
        out.push((key.to_owned(), value));
        rest = next.trim_start();
    }
    Ok(out)
}

/// Applies one Dockerfile instruction to `config`.
fn apply_change(config: &mut ImageConfig, change: &str) -> Result<(), EngineError> {
    let change = change.trim();
    let (instruction, args) = change
        .split_once(char::is_whitespace)
        .map_or((change, ""), |(i, a)| (i, a.trim()));
    let upper = instruction.to_ascii_uppercase();
    let empty = || EngineError::InvalidParameter(format!("{upper} requires at least one argument"));
    match upper.as_str() {
        "CMD" | "ENTRYPOINT" | "ENV" | "EXPOSE" | "LABEL" | "USER" | "VOLUME" | "WORKDIR"
        | "STOPSIGNAL" | "ONBUILD"
            if args.is_empty() =>
        {
            return Err(empty())
        }
        _ => {}
    }
    match upper.as_str() {
        "CMD" => config.cmd = Some(command(args)),
        "ENTRYPOINT" => config.entrypoint = Some(command(args)),
        "ENV" => {
            let env = config.env.get_or_insert_with(Vec::new);
            for (key, value) in pairs(args, "ENV")? {
                env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
                env.push(format!("{key}={value}"));
            }
        }
        "LABEL" => {
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            for (key, value) in pairs(args, "LABEL")? {
                labels.insert(key, value);
            }
        }
        "EXPOSE" => {
            let ports = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            for port in args.split_whitespace() {
                let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
                if number.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                    return Err(EngineError::InvalidParameter(format!(
                        "invalid port in EXPOSE: {port}"
                    )));
                }
                ports.insert(format!("{number}/{proto}"), EmptyObject::new());
            }
        }
        "USER" => config.user = args.to_owned(),
        "WORKDIR" => config.working_dir = args.to_owned(),
        "STOPSIGNAL" => config.stop_signal = args.to_owned(),
        "VOLUME" => {
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            let paths = serde_json::from_str::<Vec<String>>(args)
                .unwrap_or_else(|_| args.split_whitespace().map(str::to_owned).collect());
            for path in paths {
                volumes.insert(path, EmptyObject::new());
            }
        }
        "ONBUILD" => {
            let onbuild = config
                .extra
                .entry("OnBuild".to_owned())
                .or_insert_with(|| serde_json::json!([]));
            if let Some(list) = onbuild.as_array_mut() {
                list.push(serde_json::json!(args));
            }
        }
        _ => {
            return Err(EngineError::InvalidParameter(format!(
                "{instruction} is not a valid change command"
            )))
        }
    }
    Ok(())
}

/// Hands what a tar writer writes to an async reader, in chunks.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<bytes::Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(bytes::Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Engine {
    /// `GET /containers/{id}/export` (`docker export`): the container's
    /// root filesystem (its image and its changes, not its volumes) as a
    /// tar stream. A running container's mounted root is read as it is; a
    /// stopped one's layers and upper directory are mounted read-only for
    /// the walk, and unmounted after it. The stream ends early (and the
    /// mount goes) if the client goes away.
    pub async fn export(
        &self,
        key: &str,
    ) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>, EngineError> {
        let handle = self.container(key).await?;
        let (id, mut layers, running) = {
            let record = handle.record.lock().await;
            (
                record.id.clone(),
                record.layers.clone(),
                record.state.running || record.state.paused,
            )
        };
        let dir = self.layout.container(&id);
        let (root, scratch) = if running {
            (dir.join("rootfs"), None)
        } else {
            let scratch = dir.join(format!("export-{:016x}", rand::random::<u64>()));
            let upper = dir.join("upper");
            if upper.is_dir() {
                layers.push(upper);
            }
            while layers.len() < 2 {
                let empty = scratch.join(format!("empty{}", layers.len()));
                std::fs::create_dir_all(&empty)
                    .map_err(|e| EngineError::io("create", &empty, e))?;
                layers.insert(0, empty);
            }
            let root = scratch.join("root");
            if let Err(e) = crate::runtime::rootfs::mount_overlay_readonly(&layers, &root) {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(EngineError::Runtime(crate::state::error_chain(&e)));
            }
            (root, Some(scratch))
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::task::spawn_blocking(move || {
            let out = std::io::BufWriter::with_capacity(64 << 10, ChannelWriter { tx: tx.clone() });
            if let Err(e) = crate::image::ImageStore::export_tree(&root, out) {
                tracing::info!(error = %e, "export ended");
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            if let Some(scratch) = scratch {
                let _ = crate::runtime::rootfs::unmount(&root);
                let _ = std::fs::remove_dir_all(&scratch);
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply_like_dockerfile_instructions() {
        let mut config = ImageConfig::default();
        apply_change(&mut config, r#"CMD ["echo", "hi"]"#).unwrap();
        assert_eq!(config.cmd, Some(vec!["echo".to_owned(), "hi".to_owned()]));
        apply_change(&mut config, "ENTRYPOINT top -b").unwrap();
        assert_eq!(
            config.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "top -b".into()])
        );
        apply_change(&mut config, r#"ENV A=1 B="two words""#).unwrap();
        apply_change(&mut config, "ENV A 3").unwrap();
        assert_eq!(
            config.env,
            Some(vec!["B=two words".to_owned(), "A=3".to_owned()])
        );
        apply_change(&mut config, "expose 80 53/udp").unwrap();
        let ports = config.exposed_ports.as_ref().unwrap();
        assert!(ports.contains_key("80/tcp") && ports.contains_key("53/udp"));
        apply_change(&mut config, "LABEL a=b").unwrap();
        apply_change(&mut config, "WORKDIR /srv").unwrap();
        apply_change(&mut config, "USER 1000").unwrap();
        apply_change(&mut config, r#"VOLUME ["/data"]"#).unwrap();
        assert_eq!(config.working_dir, "/srv");
        assert!(config.volumes.as_ref().unwrap().contains_key("/data"));
        assert!(apply_change(&mut config, "RUN make").is_err());
        assert!(apply_change(&mut config, "CMD").is_err());
        assert!(apply_change(&mut config, "EXPOSE http").is_err());
        assert!(apply_change(&mut config, "ENV novalue").is_err());
    }
}
