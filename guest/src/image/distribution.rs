//! `GET /distribution/{name}/json`: what a registry holds under a name,
//! without pulling it — the descriptor of the manifest (or index) the name
//! points at and the platforms it serves, as dockerd answers (the SDKs'
//! `images.get_registry_data`, `docker buildx imagetools`-like clients).
//!
//! An index names its platforms itself; a single manifest's platform is its
//! config's, fetched (bounded like a pull's) and checked against its digest.

use oci_client::manifest::{OciDescriptor, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE};
use oci_client::secrets::RegistryAuth;
use serde_json::{json, Map, Value};

use super::pull::Puller;
use super::reference::{familiar, Named};
use super::ImageError;

/// The largest manifest or config read (as a pull's).
const MAX_DOCUMENT: usize = 4 << 20;

impl Puller {
    /// The descriptor and platforms of what `named` points at.
    pub async fn distribution(
        &self,
        named: &Named,
        auth: &RegistryAuth,
    ) -> Result<Value, ImageError> {
        let endpoint = self
            .options()
            .endpoints(named)
            .pop()
            .expect("the registry itself is always an endpoint");
        let shown = familiar(&named.full());
        let repo = familiar(&named.name);
        let (bytes, manifest_digest) =
            super::pull::top_manifest(named, &endpoint, auth, &shown).await?;
        let manifest = document(&bytes, &shown)?;
        let media_type = manifest["mediaType"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| {
                if manifest.get("manifests").is_some() {
                    OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()
                } else {
                    OCI_IMAGE_MEDIA_TYPE.to_owned()
                }
            });
        let platforms = match manifest.get("manifests").and_then(Value::as_array) {
            Some(entries) => entries
                .iter()
                .filter_map(|entry| entry.get("platform").cloned())
                .collect(),
            None => {
                let config: OciDescriptor = serde_json::from_value(manifest["config"].clone())
                    .map_err(|source| ImageError::BadJson {
                        file: format!("manifest of {shown}"),
                        source,
                    })?;
                let config_bytes =
                    super::pull::config_blob(&endpoint, &config, &shown, &repo).await?;
                vec![platform_of(&document(&config_bytes, &shown)?)]
            }
        };
        Ok(json!({
            "Descriptor": {
                "mediaType": media_type,
                "digest": manifest_digest,
                "size": bytes.len(),
            },
            "Platforms": platforms,
        }))
    }
}

/// A manifest or config, bounded and parsed.
fn document(bytes: &[u8], shown: &str) -> Result<Value, ImageError> {
    if bytes.len() > MAX_DOCUMENT {
        return Err(ImageError::Unsupported(format!(
            "{shown}: the manifest is too large"
        )));
    }
    serde_json::from_slice(bytes).map_err(|source| ImageError::BadJson {
        file: format!("manifest of {shown}"),
        source,
    })
}

/// An image config's platform, as an index entry would name it.
fn platform_of(config: &Value) -> Value {
    let mut platform = Map::new();
    for (from, to) in [
        ("architecture", "architecture"),
        ("os", "os"),
        ("os.version", "os.version"),
        ("variant", "variant"),
    ] {
        if let Some(value) = config.get(from).and_then(Value::as_str) {
            if !value.is_empty() {
                platform.insert(to.to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    Value::Object(platform)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configs_platform() {
        let config = json!({"architecture": "arm64", "os": "linux", "variant": "v8", "rootfs": {}});
        assert_eq!(
            platform_of(&config),
            json!({"architecture": "arm64", "os": "linux", "variant": "v8"})
        );
        assert_eq!(
            platform_of(&json!({"architecture": "amd64", "os": "linux", "variant": ""})),
            json!({"architecture": "amd64", "os": "linux"})
        );
    }

    #[test]
    fn documents_are_bounded() {
        let big = vec![b' '; MAX_DOCUMENT + 1];
        assert!(matches!(
            document(&big, "x"),
            Err(ImageError::Unsupported(_))
        ));
        assert!(document(b"{}", "x").is_ok());
    }
}
