//! `docker save`: images of the store written as one tarball that is both a
//! docker-archive and an OCI layout (see `vmctl_oci::archive`).

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;

use vmctl_oci::archive::{write_archive, ArchiveImage, BlobSource, ImageName};
use vmctl_oci::image::{Descriptor, MEDIA_CONFIG};

use super::reference::{self, Named};
use super::store::lookup;
use super::{ImageError, ImageStore};

/// Opens blobs from the store's `blobs/sha256/`.
struct StoreBlobs {
    dir: PathBuf,
}

impl BlobSource for StoreBlobs {
    fn open(&mut self, digest: &str) -> io::Result<Box<dyn Read + '_>> {
        let hex = super::digest::hex_part(digest)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad digest"))?;
        Ok(Box::new(BufReader::new(File::open(self.dir.join(hex))?)))
    }
}

impl ImageStore {
    /// Writes the images `references` name to `out`. A tag saves that name,
    /// a bare repository name every tag of it in the store; an id saves the
    /// image without names, as dockerd does (a load then names nothing).
    pub fn save(&self, references: &[String], out: impl Write) -> Result<(), ImageError> {
        let images = self.archive_images(references)?;
        let mut blobs = StoreBlobs {
            dir: self.blobs_dir(),
        };
        write_archive(out, &images, &mut blobs).map_err(ImageError::Save)?;
        Ok(())
    }

    fn archive_images(&self, references: &[String]) -> Result<Vec<ArchiveImage>, ImageError> {
        let state = self.lock();
        let mut images: Vec<ArchiveImage> = Vec::new();
        for reference in references {
            // A bare repository name saves every tag of it; a tag saves that
            // name; an id (or what else names an image) saves it unnamed.
            let repository = Named::parse_name_only(reference)
                .ok()
                .filter(|n| n.tag.is_none() && n.digest.is_none())
                .map(|n| format!("{}:", n.name));
            let repository_tags: Vec<(String, String)> = repository
                .map(|prefix| {
                    state
                        .tags
                        .iter()
                        .filter(|(tag, _)| tag.starts_with(&prefix))
                        .map(|(tag, id)| (id.clone(), tag.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let entries: Vec<(String, Vec<String>)> = if repository_tags.is_empty() {
                let id = lookup(&state, reference)?;
                let tagged = Named::parse(reference)
                    .ok()
                    .map(|n| n.full())
                    .filter(|full| state.tags.get(full) == Some(&id));
                vec![(id, tagged.into_iter().collect())]
            } else {
                repository_tags
                    .into_iter()
                    .map(|(id, tag)| (id, vec![tag]))
                    .collect()
            };
            for (id, names) in entries {
                let names: Vec<ImageName> = names
                    .into_iter()
                    .map(|full| ImageName {
                        familiar: reference::familiar(&full),
                        full,
                    })
                    .collect();
                if let Some(existing) = images.iter_mut().find(|i| i.config.digest == id) {
                    for name in names {
                        if !existing.names.contains(&name) {
                            existing.names.push(name);
                        }
                    }
                    continue;
                }
                let image = &state.images[&id];
                let config_path = self.blob_path(&id);
                let config_size = std::fs::metadata(&config_path)
                    .map_err(|e| ImageError::io("stat", &config_path, e))?
                    .len();
                images.push(ArchiveImage {
                    config: Descriptor {
                        media_type: MEDIA_CONFIG.to_owned(),
                        digest: id.clone(),
                        size: config_size,
                        ..Descriptor::default()
                    },
                    layers: image
                        .meta
                        .layers
                        .iter()
                        .map(|l| Descriptor {
                            media_type: l.media_type.clone(),
                            digest: l.digest.clone(),
                            size: l.blob_size,
                            ..Descriptor::default()
                        })
                        .collect(),
                    names,
                });
            }
        }
        Ok(images)
    }
}
