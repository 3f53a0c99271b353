//! The `/v1.NN` path prefix: accepted for every version from
//! [`MIN_API_VERSION`] to [`API_VERSION`], stripped before routing, refused with
//! Docker's messages outside that range.

use axum::body::Body;
use axum::http::{Request, Uri};

use super::error::ApiError;
use vmctl_proto::{parse_api_version, API_VERSION, MIN_API_VERSION};

/// Splits `/v1.44/containers/json` into `(Some("1.44"), "/containers/json")`.
fn split_version(path: &str) -> (Option<&str>, &str) {
    let Some(rest) = path.strip_prefix("/v") else {
        return (None, path);
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let candidate = &rest[..end];
    if parse_api_version(candidate).is_some() {
        let tail = &rest[end..];
        (Some(candidate), if tail.is_empty() { "/" } else { tail })
    } else {
        (None, path)
    }
}

/// The API version a request named in its path, for the few answers that
/// changed between versions (absent: the newest).
#[derive(Debug, Clone, Copy)]
pub struct RequestedVersion(pub (u32, u32));

impl RequestedVersion {
    /// Whether the request named a version before `major.minor`.
    pub fn before(version: Option<&Self>, major: u32, minor: u32) -> bool {
        version.is_some_and(|v| v.0 < (major, minor))
    }
}

/// Checks the version prefix of a request and removes it from the path.
pub fn strip_version(mut request: Request<Body>) -> Result<Request<Body>, ApiError> {
    let path = request.uri().path().to_owned();
    let (version, tail) = split_version(&path);
    let Some(version) = version else {
        return Ok(request);
    };
    let wanted = parse_api_version(version).unwrap_or_default();
    let max = parse_api_version(API_VERSION).unwrap_or_default();
    let min = parse_api_version(MIN_API_VERSION).unwrap_or_default();
    if wanted > max {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if wanted < min {
        return Err(ApiError::bad_request(format!(
            "client version {version} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    let mut uri = tail.to_owned();
    if let Some(query) = request.uri().query() {
        uri.push('?');
        uri.push_str(query);
    }
    *request.uri_mut() = uri
        .parse::<Uri>()
        .map_err(|_| ApiError::bad_request(format!("invalid request path {path}")))?;
    request.extensions_mut().insert(RequestedVersion(wanted));
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped(path: &str) -> Result<String, String> {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        strip_version(request)
            .map(|r| r.uri().to_string())
            .map_err(|e| e.message)
    }

    #[test]
    fn prefix_is_stripped_in_range() {
        assert_eq!(
            stripped("/v1.44/containers/json?all=1").unwrap(),
            "/containers/json?all=1"
        );
        assert_eq!(stripped("/v1.24/_ping").unwrap(), "/_ping");
        assert_eq!(stripped("/_ping").unwrap(), "/_ping");
        assert_eq!(stripped("/v1.47").unwrap(), "/");
    }

    #[test]
    fn out_of_range_is_refused() {
        assert!(stripped("/v1.99/info").unwrap_err().contains("too new"));
        assert!(stripped("/v1.12/info").unwrap_err().contains("too old"));
    }

    #[test]
    fn names_that_look_like_versions_are_left_alone() {
        assert_eq!(stripped("/volumes/v1").unwrap(), "/volumes/v1");
        assert_eq!(stripped("/vx/info").unwrap(), "/vx/info");
    }
}
