//! Image references, normalised the way Docker does it.
//!
//! `busybox` → `docker.io/library/busybox:latest`; `me/app:1` →
//! `docker.io/me/app:1`; `localhost:5000/x:y` and `registry.example/x` keep
//! their domain; `name@sha256:…` names a digest. The store keys tags by the
//! full form and shows the familiar one (`busybox:latest`), like Docker.
//! Image ids (`sha256:<hex>` or a hex prefix) are told apart by [`id_prefix`].

use super::ImageError;

const DEFAULT_DOMAIN: &str = "docker.io";
const OFFICIAL_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";

/// A normalised image reference: `domain/path` with a tag and/or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// `docker.io/library/busybox`
    pub name: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl Named {
    /// Parses and normalises `reference`; a reference without tag or digest
    /// gets `latest`.
    pub fn parse(reference: &str) -> Result<Self, ImageError> {
        let mut named = Self::parse_name_only(reference)?;
        if named.tag.is_none() && named.digest.is_none() {
            named.tag = Some(DEFAULT_TAG.to_owned());
        }
        Ok(named)
    }

    /// Parses without adding a default tag.
    pub fn parse_name_only(reference: &str) -> Result<Self, ImageError> {
        let invalid = || ImageError::InvalidReference(reference.to_owned());
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if super::digest::hex_part(digest).is_none() {
                    return Err(invalid());
                }
                (rest, Some(digest.to_owned()))
            }
            None => (reference, None),
        };
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag {
            if !valid_tag(tag) {
                return Err(invalid());
            }
        }
        let name = normalise_name(name).ok_or_else(invalid)?;
        Ok(Self {
            name,
            tag: tag.map(str::to_owned),
            digest,
        })
    }

    /// `docker.io/library/busybox:latest` (tag, else digest).
    pub fn full(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{}:{tag}", self.name),
            (None, Some(digest)) => format!("{}@{digest}", self.name),
            (None, None) => self.name.clone(),
        }
    }

    /// `busybox:latest`, as Docker shows it.
    pub fn familiar(&self) -> String {
        familiar(&self.full())
    }
}

/// Drops `docker.io/` and `docker.io/library/` from a full reference.
pub fn familiar(full: &str) -> String {
    match full.strip_prefix("docker.io/") {
        Some(rest) => rest
            .strip_prefix(OFFICIAL_PREFIX)
            .unwrap_or(rest)
            .to_owned(),
        None => full.to_owned(),
    }
}

/// The repository part of a full `name:tag` (what precedes the tag).
pub fn repository(full: &str) -> &str {
    let slash = full.rfind('/').map_or(0, |i| i + 1);
    match full[slash..].rfind(':') {
        Some(i) => &full[..slash + i],
        None => full,
    }
}

/// The hex of an image id or id prefix (`sha256:` optional), if `reference`
/// looks like one.
pub fn id_prefix(reference: &str) -> Option<&str> {
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    let ok = !hex.is_empty()
        && hex.len() <= 64
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    ok.then_some(hex)
}

fn valid_tag(tag: &str) -> bool {
    let mut bytes = tag.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_');
    first_ok
        && tag.len() <= 128
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Adds the default domain and `library/`, and checks every component.
fn normalise_name(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > 255 {
        return None;
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    let domain = if domain == "index.docker.io" {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    if !valid_domain(domain) || !path.split('/').all(valid_path_component) {
        return None;
    }
    if domain == DEFAULT_DOMAIN && !path.contains('/') {
        Some(format!("{domain}/{OFFICIAL_PREFIX}{path}"))
    } else {
        Some(format!("{domain}/{path}"))
    }
}

fn valid_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && host.split('.').all(label_ok)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_path_component(part: &str) -> bool {
    let bytes = part.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if alnum(&bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(&bytes[i]) {
            i += 1;
        }
        let sep = &part[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(reference: &str) -> String {
        Named::parse(reference).unwrap().full()
    }

    #[test]
    fn docker_hub_names_are_normalised() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("hello"), "docker.io/library/hello:latest");
        assert_eq!(full("me/app:1.0"), "docker.io/me/app:1.0");
        assert_eq!(
            full("docker.io/library/busybox:1"),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            full("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn other_registries_keep_their_domain() {
        assert_eq!(full("localhost:5000/x:y"), "localhost:5000/x:y");
        assert_eq!(full("localhost/x"), "localhost/x:latest");
        assert_eq!(full("ghcr.io/o/r"), "ghcr.io/o/r:latest");
    }

    #[test]
    fn digests_are_parsed() {
        let digest = format!("sha256:{}", "a".repeat(64));
        let named = Named::parse(&format!("busybox@{digest}")).unwrap();
        assert_eq!(named.tag, None);
        assert_eq!(named.digest.as_deref(), Some(digest.as_str()));
        assert_eq!(named.familiar(), format!("busybox@{digest}"));
        assert!(Named::parse("busybox@sha256:abc").is_err());
    }

    #[test]
    fn familiar_names_drop_the_default_domain() {
        assert_eq!(Named::parse("hello").unwrap().familiar(), "hello:latest");
        assert_eq!(Named::parse("me/app").unwrap().familiar(), "me/app:latest");
        assert_eq!(
            Named::parse("localhost:5000/x:y").unwrap().familiar(),
            "localhost:5000/x:y"
        );
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "", "Busybox", "a//b", "-a", "a:", "a:-x", "a b", "a/", "x:y:z", "a@b",
        ] {
            let err = Named::parse(bad).unwrap_err();
            assert_eq!(err.to_string(), "invalid reference format", "{bad}");
        }
    }

    #[test]
    fn ids_are_recognised() {
        assert_eq!(id_prefix("sha256:abc"), Some("abc"));
        assert_eq!(id_prefix("0123ab"), Some("0123ab"));
        assert_eq!(id_prefix("busybox"), None);
        assert_eq!(repository("localhost:5000/x:y"), "localhost:5000/x");
    }
}
