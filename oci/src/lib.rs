//! `vmctl-oci`: the OCI image documents and the image tarball writer, in one
//! place for everything in vmctl that reads or writes images.
//!
//! [`image`] holds the JSON documents: OCI manifests, indexes, descriptors and
//! the image layout, the docker-archive `manifest.json`, the `rootfs` and
//! `history` of an image config, the media types and annotations.
//! [`archive`] writes tarballs that are at once a docker-archive and an OCI
//! image layout.
//!
//! Users: the guest engine (`vmctl-guest`: pull, load, commit, build, and
//! `docker save` through [`archive`]) and the image builder (`vmctl-image`,
//! whose built-in `hello` image is written by [`archive`]). Sharing one crate
//! keeps the writer and the engine's loader from drifting, without the engine
//! depending on the VM image builder.
//!
//! No I/O beyond the [`std::io::Write`] an archive goes to and the
//! [`archive::BlobSource`] its blobs come from.

pub mod archive;
pub mod image;
