//! `docker push`: send an image's blobs and a manifest to a registry.
//!
//! [`ImageStore::push_plan`] gathers, under the store's lock, what a push
//! sends: the config and each layer's stored blob (the one it was pulled,
//! loaded or committed with; a layer whose own blob is gone is sent as
//! another blob of the same diff-id). [`push`] then uploads the layers the
//! registry lacks (streamed from disk, three at a time), the config, and a
//! manifest: Docker's schema 2 when every layer has a Docker media type,
//! else OCI (zstd layers have no Docker type). The manifest's digest is
//! recorded as the image's repo digest, as Docker does.

use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use super::pull::Progress;
use super::reference::{self, Named};
use super::registry::{self, RegistryOptions};
use super::store::lookup;
use super::{digest, ImageError, ImageStore};
use crate::state::ErrorKind;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// One blob a push sends.
#[derive(Debug, Clone)]
struct Blob {
    digest: String,
    media_type: String,
    size: u64,
    path: PathBuf,
}

/// One tag to push: the name and what it points at.
pub struct PushPlan {
    pub named: Named,
    id: String,
    config: Vec<u8>,
    /// Lowest first.
    layers: Vec<Blob>,
}

/// The OCI media type of a Docker layer type (and OCI types unchanged).
fn oci_type(media_type: &str) -> &str {
    match media_type {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        }
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        other => other,
    }
}

impl ImageStore {
    /// The tags `name` (`repo` or `repo:tag`) and `tag` name together: one
    /// tag, or with neither every tag of the repository (`docker push -a`).
    pub fn push_plan(&self, name: &str, tag: &str) -> Result<Vec<PushPlan>, ImageError> {
        let full = if tag.is_empty() {
            name.to_owned()
        } else {
            format!("{name}:{tag}")
        };
        let named = Named::parse_name_only(&full)?;
        let state = self.lock();
        let mut names = Vec::new();
        match (&named.tag, &named.digest) {
            (None, None) => {
                for full in state.tags.keys() {
                    if reference::repository(full) == named.name {
                        names.push(Named::parse(full)?);
                    }
                }
                if names.is_empty() {
                    return Err(ImageError::Registry {
                        kind: ErrorKind::NotFound,
                        message: format!(
                            "An image does not exist locally with the tag: {}",
                            named.familiar()
                        ),
                    });
                }
            }
            (Some(_), _) => {
                if !state.tags.contains_key(&named.full()) {
                    return Err(ImageError::Registry {
                        kind: ErrorKind::NotFound,
                        message: format!(
                            "An image does not exist locally with the tag: {}",
                            named.familiar()
                        ),
                    });
                }
                names.push(named.clone());
            }
            (None, Some(_)) => {
                return Err(ImageError::Registry {
                    kind: ErrorKind::InvalidParameter,
                    message: "cannot push a digest reference".to_owned(),
                })
            }
        }
        let mut plans = Vec::new();
        for named in names {
            let id = lookup(&state, &named.full())?;
            let image = &state.images[&id];
            let mut layers = Vec::new();
            for layer in &image.meta.layers {
                let own = self.blob_path(&layer.digest);
                let blob = if own.exists() {
                    Some(Blob {
                        digest: layer.digest.clone(),
                        media_type: layer.media_type.clone(),
                        size: layer.blob_size,
                        path: own,
                    })
                } else {
                    state
                        .images
                        .values()
                        .flat_map(|i| i.meta.layers.iter())
                        .filter(|l| l.diff_id == layer.diff_id)
                        .map(|l| (l, self.blob_path(&l.digest)))
                        .find(|(_, path)| path.exists())
                        .map(|(l, path)| Blob {
                            digest: l.digest.clone(),
                            media_type: l.media_type.clone(),
                            size: l.blob_size,
                            path,
                        })
                };
                let blob = blob.ok_or_else(|| {
                    ImageError::Unsupported(format!(
                        "layer {} of {} has no stored blob to push",
                        layer.diff_id,
                        named.familiar()
                    ))
                })?;
                layers.push(blob);
            }
            let config_path = self.blob_path(&id);
            let config =
                std::fs::read(&config_path).map_err(|e| ImageError::io("read", &config_path, e))?;
            plans.push(PushPlan {
                named,
                id,
                config,
                layers,
            });
        }
        Ok(plans)
    }

    /// Adds `name@digest` to an image's repo digests after a push.
    fn record_pushed(&self, id: &str, repo_digest: String) -> Result<(), ImageError> {
        let mut state = self.lock();
        let Some(image) = state.images.get_mut(id) else {
            return Ok(());
        };
        if image.meta.repo_digests.contains(&repo_digest) {
            return Ok(());
        }
        image.meta.repo_digests.push(repo_digest);
        let meta = image.meta.clone();
        self.write_meta(id, &meta)
    }
}

/// Pushes every plan, reporting progress like dockerd.
pub async fn push(
    store: &Arc<ImageStore>,
    options: &RegistryOptions,
    plans: Vec<PushPlan>,
    auth: &RegistryAuth,
    progress: mpsc::Sender<Progress>,
) -> Result<(), ImageError> {
    let Some(first) = plans.first() else {
        return Ok(());
    };
    let send = |line: Progress| {
        let progress = progress.clone();
        async move {
            let _ = progress.send(line).await;
        }
    };
    send(Progress::message(format!(
        "The push refers to repository [{}]",
        reference::familiar(&first.named.name)
    )))
    .await;
    for plan in plans {
        push_one(store, options, plan, auth, &progress).await?;
    }
    Ok(())
}

async fn push_one(
    store: &Arc<ImageStore>,
    options: &RegistryOptions,
    plan: PushPlan,
    auth: &RegistryAuth,
    progress: &mpsc::Sender<Progress>,
) -> Result<(), ImageError> {
    let endpoint = options
        .endpoints(&plan.named)
        .pop()
        .expect("the registry itself is always an endpoint");
    let client = endpoint.client.clone();
    let reference = endpoint.reference.clone();
    let shown = plan.named.familiar();
    let repo = reference::familiar(&plan.named.name);
    let translate = move |e| registry::translate(e, &shown, &repo, false);
    client
        .auth(&reference, auth, RegistryOperation::Push)
        .await
        .map_err(&translate)?;
    for layer in plan.layers.iter().rev() {
        let _ = progress
            .send(Progress::layer(&short(&layer.digest), "Preparing", None))
            .await;
    }
    let slots = Arc::new(Semaphore::new(3));
    let mut uploads = futures::stream::FuturesUnordered::new();
    let mut seen = std::collections::HashSet::new();
    for layer in plan.layers.iter().rev() {
        if !seen.insert(layer.digest.clone()) {
            continue;
        }
        let client = client.clone();
        let reference = reference.clone();
        let layer = layer.clone();
        let slots = slots.clone();
        let progress = progress.clone();
        let translate = translate.clone();
        uploads.push(async move {
            let _slot = slots.acquire().await.expect("never closed");
            let id = short(&layer.digest);
            if client
                .blob_exists(&reference, &layer.digest)
                .await
                .map_err(&translate)?
            {
                let _ = progress
                    .send(Progress::layer(&id, "Layer already exists", None))
                    .await;
                return Ok::<(), ImageError>(());
            }
            upload(&client, &reference, &layer, &id, &progress)
                .await
                .map_err(&translate)?;
            let _ = progress.send(Progress::layer(&id, "Pushed", None)).await;
            Ok(())
        });
    }
    while let Some(result) = uploads.next().await {
        result?;
    }
    let config_digest = digest::of_bytes(&plan.config);
    if !client
        .blob_exists(&reference, &config_digest)
        .await
        .map_err(&translate)?
    {
        client
            .push_blob(&reference, plan.config.clone(), &config_digest)
            .await
            .map_err(&translate)?;
    }
    let docker = plan
        .layers
        .iter()
        .all(|l| l.media_type.starts_with("application/vnd.docker."));
    let (manifest_type, config_type) = if docker {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let layers: Vec<_> = plan
        .layers
        .iter()
        .map(|l| {
            let media_type = if docker {
                l.media_type.as_str()
            } else {
                oci_type(&l.media_type)
            };
            json!({ "mediaType": media_type, "size": l.size, "digest": l.digest })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "size": plan.config.len(), "digest": config_digest },
        "layers": layers,
    });
    let body = serde_json::to_vec_pretty(&manifest).map_err(|source| ImageError::Encode {
        what: "manifest",
        source,
    })?;
    let manifest_digest = digest::of_bytes(&body);
    let size = body.len();
    let content_type = axum::http::HeaderValue::from_static(manifest_type);
    client
        .push_manifest_raw(&reference, body, content_type)
        .await
        .map_err(&translate)?;
    let tag = plan.named.tag.clone().unwrap_or_default();
    let _ = progress
        .send(Progress::message(format!(
            "{tag}: digest: {manifest_digest} size: {size}"
        )))
        .await;
    let _ = progress
        .send(Progress {
            aux: Some(json!({ "Tag": tag, "Digest": manifest_digest, "Size": size })),
            ..Progress::message("")
        })
        .await;
    let store = store.clone();
    let repo_digest = format!("{}@{manifest_digest}", plan.named.name);
    let id = plan.id.clone();
    tokio::task::spawn_blocking(move || store.record_pushed(&id, repo_digest))
        .await
        .map_err(|e| ImageError::Registry {
            kind: ErrorKind::Internal,
            message: format!("recording the push failed: {e}"),
        })??;
    Ok(())
}

/// Streams one blob from disk to the registry, reporting bytes sent.
async fn upload(
    client: &oci_client::Client,
    reference: &oci_client::Reference,
    layer: &Blob,
    id: &str,
    progress: &mpsc::Sender<Progress>,
) -> Result<(), oci_client::errors::OciDistributionError> {
    let file = tokio::fs::File::open(&layer.path).await?;
    let total = layer.size;
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reporter = {
        let sent = sent.clone();
        let progress = progress.clone();
        let id = id.to_owned();
        tokio::spawn(async move {
            let mut last = u64::MAX;
            loop {
                let now = sent.load(std::sync::atomic::Ordering::Relaxed);
                if now != last {
                    last = now;
                    let line = Progress::layer(&id, "Pushing", Some((now, total)));
                    if progress.send(line).await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let counted = sent.clone();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(move |chunk| {
        let chunk = chunk.map_err(oci_client::errors::OciDistributionError::from)?;
        counted.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(chunk)
    });
    let result = client
        .push_blob_stream(reference, stream, &layer.digest, Some(total))
        .await;
    reporter.abort();
    result.map(|_| ())
}

fn short(digest: &str) -> String {
    digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .chars()
        .take(12)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_layer_types_have_oci_twins() {
        assert_eq!(
            oci_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(
            oci_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }
}
