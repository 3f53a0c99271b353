//! Talking to registries: which endpoints a pull tries (mirrors, then the
//! registry itself), HTTPS or plain HTTP, credentials from `X-Registry-Auth`,
//! and registry errors turned into Docker's messages.
//!
//! Plain HTTP is used only for registries on loopback and those the engine
//! was started with in `--insecure-registry` (a `host[:port]` or a CIDR), as
//! Docker does. Mirrors (`--registry-mirror`) apply to Docker Hub only; when
//! every mirror fails the pull goes to Docker Hub itself.

use std::net::IpAddr;

use base64::Engine as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use super::reference::Named;
use super::ImageError;
use crate::state::ErrorKind;

const DOCKER_HUB: &str = "docker.io";

/// The engine's registry settings (dockerd's `registry-mirrors` and
/// `insecure-registries`).
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Mirror URLs of Docker Hub (`https://mirror.example`, `http://10.0.0.1:5000`).
    pub mirrors: Vec<String>,
    /// Registries reached over plain HTTP: `host`, `host:port` or a CIDR.
    pub insecure: Vec<String>,
}

/// One place an image can be fetched from.
pub struct Endpoint {
    pub client: Client,
    pub reference: Reference,
    /// `host[:port]` actually contacted (a mirror's, or the registry's).
    pub host: String,
}

impl RegistryOptions {
    /// Checks the settings, one line per problem.
    pub fn validate(&self) -> Result<(), String> {
        for mirror in &self.mirrors {
            mirror_host(mirror)?;
        }
        for entry in &self.insecure {
            if entry.is_empty() || entry.contains("://") {
                return Err(format!(
                    "invalid insecure registry {entry:?}: give host[:port] or a CIDR"
                ));
            }
            if entry.contains('/') && entry.parse::<ipnet::IpNet>().is_err() {
                return Err(format!("invalid insecure registry CIDR {entry:?}"));
            }
        }
        Ok(())
    }

    /// Whether `host` (`name[:port]`) may be spoken to over plain HTTP.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_name(host);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        let ip = name.parse::<IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_loopback()) {
            return true;
        }
        self.insecure.iter().any(|entry| {
            if entry == host || entry == name {
                return true;
            }
            match (entry.parse::<ipnet::IpNet>(), ip) {
                (Ok(net), Some(ip)) => net.contains(&ip),
                _ => false,
            }
        })
    }

    /// The endpoints to try for `named`, in order: Docker Hub's mirrors,
    /// then the registry itself.
    pub fn endpoints(&self, named: &Named) -> Vec<Endpoint> {
        let (domain, repository) = named
            .name
            .split_once('/')
            .unwrap_or((DOCKER_HUB, named.name.as_str()));
        let reference = match (&named.digest, &named.tag) {
            (Some(digest), _) => {
                Reference::with_digest(domain.to_owned(), repository.to_owned(), digest.clone())
            }
            (None, tag) => Reference::with_tag(
                domain.to_owned(),
                repository.to_owned(),
                tag.clone().unwrap_or_else(|| "latest".to_owned()),
            ),
        };
        let mut endpoints = Vec::new();
        if domain == DOCKER_HUB {
            for mirror in &self.mirrors {
                let Ok(host) = mirror_host(mirror) else {
                    continue;
                };
                let mut reference = reference.clone();
                reference.set_mirror_registry(host.clone());
                let http = mirror.starts_with("http://");
                endpoints.push(Endpoint {
                    client: client(&host, http),
                    reference,
                    host,
                });
            }
        }
        let host = reference.resolve_registry().to_owned();
        endpoints.push(Endpoint {
            client: client(&host, self.is_insecure(&host)),
            reference,
            host,
        });
        endpoints
    }
}

/// A client for one registry host, over HTTP when `http`.
fn client(host: &str, http: bool) -> Client {
    let protocol = if http {
        ClientProtocol::HttpsExcept(vec![host.to_owned()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        user_agent: concat!("vmctl/", env!("CARGO_PKG_VERSION")),
        connect_timeout: Some(std::time::Duration::from_secs(15)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    })
}

/// `host[:port]` of a mirror URL.
fn mirror_host(mirror: &str) -> Result<String, String> {
    let rest = mirror
        .strip_prefix("https://")
        .or_else(|| mirror.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("invalid registry mirror {mirror:?}: must start with http:// or https://")
        })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "invalid registry mirror {mirror:?}: give a URL without a path"
        ));
    }
    Ok(host.to_owned())
}

/// `name` of `name:port` (and `[v6]:port`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Credentials from an `X-Registry-Auth` header (base64url JSON). Like
/// Docker, a header that does not decode means anonymous.
pub fn credentials(header: Option<&str>) -> RegistryAuth {
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct AuthConfig {
        username: String,
        password: String,
        identitytoken: String,
        registrytoken: String,
    }
    let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else {
        return RegistryAuth::Anonymous;
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::STANDARD,
    ];
    let Some(config) = engines
        .iter()
        .find_map(|e| e.decode(header).ok())
        .and_then(|bytes| serde_json::from_slice::<AuthConfig>(&bytes).ok())
    else {
        return RegistryAuth::Anonymous;
    };
    if !config.registrytoken.is_empty() {
        RegistryAuth::Bearer(config.registrytoken)
    } else if !config.username.is_empty() {
        RegistryAuth::Basic(config.username, config.password)
    } else if !config.identitytoken.is_empty() {
        // An OAuth refresh token; registries that issue them accept it as
        // the password of the `<token>` user.
        RegistryAuth::Basic("<token>".to_owned(), config.identitytoken)
    } else {
        RegistryAuth::Anonymous
    }
}

/// A registry error as Docker words it. `what` is the reference
/// (`127.0.0.1:5000/app:1`), `repo` its repository (`127.0.0.1:5000/app`).
pub fn translate(err: OciDistributionError, what: &str, repo: &str, manifest: bool) -> ImageError {
    let registry = |kind, message: String| ImageError::Registry { kind, message };
    match err {
        OciDistributionError::RegistryError { envelope, .. } => {
            let detail: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| {
                    let code = serde_json::to_value(&e.code)
                        .ok()
                        .and_then(|v| v.as_str().map(|s| s.to_lowercase().replace('_', " ")))
                        .unwrap_or_else(|| "error".to_owned());
                    if e.message.is_empty() {
                        code
                    } else {
                        format!("{code}: {}", e.message)
                    }
                })
                .collect();
            let detail = detail.join(", ");
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(OciErrorCode::ManifestUnknown) if manifest => registry(
                    ErrorKind::NotFound,
                    format!("manifest for {what} not found: {detail}"),
                ),
                Some(OciErrorCode::NameUnknown) => registry(
                    ErrorKind::NotFound,
                    format!("repository {repo} not found: {detail}"),
                ),
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => registry(
                    ErrorKind::NotFound,
                    format!("pull access denied for {repo}, repository does not exist or may require 'docker login': {detail}"),
                ),
                Some(OciErrorCode::BlobUnknown) => {
                    registry(ErrorKind::NotFound, format!("{what}: {detail}"))
                }
                _ => registry(ErrorKind::Internal, format!("{what}: {detail}")),
            }
        }
        OciDistributionError::UnauthorizedError { .. } => registry(
            ErrorKind::NotFound,
            format!("pull access denied for {repo}, repository does not exist or may require 'docker login': denied: requested access to the resource is denied"),
        ),
        OciDistributionError::AuthenticationFailure(reason) => registry(
            ErrorKind::Unauthorized,
            format!("authentication to {} failed: {}", host_of(repo), reason.trim()),
        ),
        OciDistributionError::ServerError { code: 404, .. } if manifest => registry(
            ErrorKind::NotFound,
            format!("manifest for {what} not found: manifest unknown: manifest unknown"),
        ),
        OciDistributionError::ServerError { code, message, url } => registry(
            ErrorKind::Internal,
            format!("{url}: the registry answered {code}: {}", message.trim()),
        ),
        OciDistributionError::DigestError(e) => registry(
            ErrorKind::InvalidParameter,
            format!("{what}: digest mismatch: {e}"),
        ),
        OciDistributionError::RequestError(e) => registry(ErrorKind::Internal, causes(&e)),
        other => registry(ErrorKind::Internal, format!("{what}: {other}")),
    }
}

/// The registry host `docker login SERVER` means (`""` and Docker Hub's
/// index URL: Docker Hub).
pub fn login_host(server: &str) -> String {
    let server = server
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = server.split('/').next().unwrap_or_default();
    match host {
        "" | "index.docker.io" | "docker.io" | "registry-1.docker.io" => {
            "registry-1.docker.io".to_owned()
        }
        other => other.to_owned(),
    }
}

/// `docker login`: checks `user`/`password` against `server` the way
/// dockerd does: `GET /v2/`; on a Bearer challenge, the token endpoint with
/// the credentials (no scope); on a Basic one, `/v2/` with them.
pub async fn login(
    options: &RegistryOptions,
    server: &str,
    user: &str,
    password: &str,
) -> Result<(), ImageError> {
    let host = login_host(server);
    let scheme = if options.is_insecure(&host) {
        "http"
    } else {
        "https"
    };
    let url = format!("{scheme}://{host}/v2/");
    let failed = |message: String| ImageError::Registry {
        kind: ErrorKind::Unauthorized,
        message,
    };
    let unreachable = |e: reqwest::Error| ImageError::Registry {
        kind: ErrorKind::Internal,
        message: format!("Get \"{url}\": {}", causes(&e)),
    };
    let client = reqwest::Client::builder()
        .user_agent(concat!("vmctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(15))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(unreachable)?;
    let ping = client.get(&url).send().await.map_err(unreachable)?;
    if ping.status().is_success() {
        return Ok(());
    }
    let challenge = ping
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if ping.status() != reqwest::StatusCode::UNAUTHORIZED || challenge.is_empty() {
        return Err(failed(format!(
            "login attempt to {url} failed with status: {}",
            ping.status()
        )));
    }
    let (kind, params) = challenge
        .split_once(' ')
        .unwrap_or((challenge.as_str(), ""));
    let answer = if kind.eq_ignore_ascii_case("bearer") {
        let params = challenge_params(params);
        let realm = params
            .get("realm")
            .ok_or_else(|| failed(format!("{url}: the registry's challenge has no realm")))?;
        let mut request = client.get(realm).basic_auth(user, Some(password));
        let mut query = vec![
            ("account", user.to_owned()),
            ("client_id", "vmctl".to_owned()),
        ];
        if let Some(service) = params.get("service") {
            query.push(("service", service.clone()));
        }
        request = request.query(&query);
        request.send().await.map_err(unreachable)?
    } else {
        client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .map_err(unreachable)?
    };
    if answer.status().is_success() {
        Ok(())
    } else if answer.status() == reqwest::StatusCode::UNAUTHORIZED {
        Err(failed(format!(
            "Get \"{url}\": unauthorized: incorrect username or password"
        )))
    } else {
        Err(failed(format!(
            "login attempt to {url} failed with status: {}",
            answer.status()
        )))
    }
}

/// `realm="…",service="…"` → a map.
fn challenge_params(text: &str) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    let mut rest = text.trim();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.insert(key, value.to_owned());
        rest = next.trim_start_matches(',').trim();
    }
    out
}

/// An error and its causes on one line (`error sending request: connection
/// refused`), each cause once.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

fn host_of(repo: &str) -> &str {
    repo.split('/').next().unwrap_or(repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        let options = RegistryOptions {
            mirrors: Vec::new(),
            insecure: vec!["reg.lan:5000".into(), "10.1.0.0/16".into()],
        };
        assert!(options.is_insecure("127.0.0.1:5000"));
        assert!(options.is_insecure("localhost:5000"));
        assert!(options.is_insecure("[::1]:5000"));
        assert!(options.is_insecure("reg.lan:5000"));
        assert!(options.is_insecure("10.1.2.3:443"));
        assert!(!options.is_insecure("reg.lan:5001"));
        assert!(!options.is_insecure("index.docker.io"));
        assert!(!options.is_insecure("10.2.0.1"));
    }

    #[test]
    fn mirrors_come_first_for_docker_hub_only() {
        let options = RegistryOptions {
            mirrors: vec!["http://127.0.0.1:5001".into()],
            insecure: Vec::new(),
        };
        let hub = options.endpoints(&Named::parse("busybox").unwrap());
        let hosts: Vec<&str> = hub.iter().map(|e| e.host.as_str()).collect();
        assert_eq!(hosts, ["127.0.0.1:5001", "index.docker.io"]);
        assert_eq!(hub[0].reference.repository(), "library/busybox");
        let other = options.endpoints(&Named::parse("127.0.0.1:5000/app:1").unwrap());
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].host, "127.0.0.1:5000");
        assert_eq!(other[0].reference.tag(), Some("1"));
    }

    #[test]
    fn settings_are_checked() {
        let bad_mirror = RegistryOptions {
            mirrors: vec!["mirror.example".into()],
            insecure: Vec::new(),
        };
        assert!(bad_mirror.validate().unwrap_err().contains("http://"));
        let bad_cidr = RegistryOptions {
            mirrors: Vec::new(),
            insecure: vec!["10.0.0.0/99".into()],
        };
        assert!(bad_cidr.validate().is_err());
    }

    #[test]
    fn login_servers_and_challenges_parse() {
        assert_eq!(login_host(""), "registry-1.docker.io");
        assert_eq!(
            login_host("https://index.docker.io/v1/"),
            "registry-1.docker.io"
        );
        assert_eq!(login_host("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(login_host("http://reg.lan:5000/"), "reg.lan:5000");
        let params = challenge_params(
            r#"realm="https://auth.example/token",service="registry.example",scope="a:b:c""#,
        );
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "a:b:c");
    }

    #[test]
    fn credentials_decode_like_docker() {
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE.encode(json);
        assert!(matches!(credentials(None), RegistryAuth::Anonymous));
        assert!(matches!(credentials(Some("e30=")), RegistryAuth::Anonymous));
        assert!(matches!(credentials(Some("%%%")), RegistryAuth::Anonymous));
        match credentials(Some(&encode(r#"{"username":"u","password":"p"}"#))) {
            RegistryAuth::Basic(u, p) => assert_eq!((u.as_str(), p.as_str()), ("u", "p")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            credentials(Some(&encode(r#"{"registrytoken":"t"}"#))),
            RegistryAuth::Bearer(_)
        ));
    }
}
