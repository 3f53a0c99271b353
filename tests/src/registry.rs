//! A real registry (Debian's `docker-registry`, the CNCF distribution) on
//! 127.0.0.1 inside an [`Engine`]'s network namespace, images put there with
//! `skopeo`, and a tiny token server for the registry's token auth.
//!
//! The token server runs on a thread of the test that entered the engine's
//! network namespace (its socket lives there). Its one token is a JWT signed
//! once with `openssl dgst -sha256 -sign` (RS256) by a key whose self-signed
//! certificate the registry trusts; it hands the token out only to the
//! right Basic credentials.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{eventually, Background, Engine};

/// The registry's port (each engine has its own loopback).
pub const PORT: u16 = 5000;
/// The token server's port.
pub const TOKEN_PORT: u16 = 5001;
/// Credentials the token server accepts.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret";

/// A registry serving from a directory of the engine's tempdir.
pub struct Registry {
    pub dir: PathBuf,
    _process: Background,
    _token: Option<TokenServer>,
}

impl Registry {
    /// Starts an open registry (anyone may pull and push).
    pub fn start(engine: &Engine) -> Registry {
        Registry::launch(engine, "open", None)
    }

    /// Starts a registry that wants a bearer token from the token server,
    /// which gives one only for [`USER`]/[`PASSWORD`].
    pub fn start_with_token_auth(engine: &Engine) -> Registry {
        let dir = engine.dir.path().join("registry-token");
        std::fs::create_dir_all(&dir).expect("registry dir");
        let token = TokenServer::start(engine, &dir);
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{TOKEN_PORT}/token\n    service: vmctl-test\n    issuer: vmctl-test-issuer\n    rootcertbundle: {}\n",
            dir.join("token.crt").display()
        );
        Registry::launch(engine, "token", Some((auth, token)))
    }

    fn launch(engine: &Engine, name: &str, auth: Option<(String, TokenServer)>) -> Registry {
        let dir = engine.dir.path().join(format!("registry-{name}"));
        std::fs::create_dir_all(dir.join("data")).expect("registry dir");
        let (auth_yaml, token) = match auth {
            Some((yaml, token)) => (yaml, Some(token)),
            None => (String::new(), None),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 0.0.0.0:{PORT}\n{auth_yaml}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let script = format!(
            "exec docker-registry serve {} >{} 2>&1",
            dir.join("config.yml").display(),
            dir.join("registry.log").display()
        );
        let process = engine.spawn_in_namespaces(&["sh", "-c", &script]);
        let registry = Registry {
            dir,
            _process: process,
            _token: token,
        };
        let probe = format!("echo > /dev/tcp/127.0.0.1/{PORT}");
        let up = eventually(Duration::from_secs(30), || {
            engine
                .in_namespaces(&["bash", "-c", &probe])
                .status
                .success()
        });
        assert!(up, "registry did not start:\n{}", registry.log());
        registry
    }

    /// Requests the token server answered (0 without token auth).
    pub fn token_requests(&self) -> usize {
        self._token
            .as_ref()
            .map_or(0, |t| t.requests.load(Ordering::Relaxed))
    }

    /// The registry's log (one access line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// How many times a blob was fetched (`GET …/blobs/<digest>`).
    pub fn blob_gets(&self, digest: &str) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest} ")))
            .count()
    }

    /// Where the registry keeps a blob's bytes (to corrupt it).
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

/// `127.0.0.1:5000/<name>`.
pub fn image(name: &str) -> String {
    format!("127.0.0.1:{PORT}/{name}")
}

/// Runs `skopeo ARGS` in the engine's namespaces (plain HTTP to the
/// registry); panics with its output when it fails.
pub fn skopeo(engine: &Engine, args: &[&str]) -> String {
    let mut all = vec!["skopeo"];
    all.extend_from_slice(args);
    let out = engine.in_namespaces(&all);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies `source` (`docker-archive:…`, `oci:…`) to the registry as `name`
/// with extra skopeo flags (`--format oci`, `--dest-compress-format zstd`).
pub fn push(engine: &Engine, source: &str, name: &str, flags: &[&str]) {
    let dest = format!("docker://{}", image(name));
    let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
    args.extend_from_slice(flags);
    args.push(source);
    args.push(&dest);
    skopeo(engine, &args);
}

/// The manifest digest the registry gives `name`.
pub fn manifest_digest(engine: &Engine, name: &str) -> String {
    let out = skopeo(
        engine,
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}", image(name)),
        ],
    );
    crate::oci_layout::sha256(out.as_bytes())
}

/// The layer digests of `name`'s manifest (for the engine's platform).
pub fn layer_digests(engine: &Engine, name: &str) -> Vec<String> {
    let out = skopeo(
        engine,
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{}", image(name)),
        ],
    );
    let value: serde_json::Value = serde_json::from_str(&out).expect("skopeo inspect json");
    value["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| l.as_str().expect("digest").to_owned())
        .collect()
}

/// Standard base64 (the CLI's `auths.*.auth`), without another crate.
mod base64_lite {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        encode_with(bytes, TABLE, true)
    }

    pub fn encode_url(bytes: &[u8]) -> String {
        const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        encode_with(bytes, URL, false)
    }

    fn encode_with(bytes: &[u8], table: &[u8; 64], pad: bool) -> String {
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else if pad {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// The token server: answers `GET /token` with the signed token for the
/// right Basic credentials, 401 otherwise.
struct TokenServer {
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    fn start(engine: &Engine, dir: &Path) -> TokenServer {
        let token = signed_token(dir);
        let netns = std::fs::File::open(engine.net_namespace()).expect("engine netns");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let thread = {
            let stop = stop.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                // SAFETY: setns on this thread only, with a valid namespace fd.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                let listener =
                    TcpListener::bind(("127.0.0.1", TOKEN_PORT)).expect("token server bind");
                listener.set_nonblocking(true).expect("nonblocking");
                ready_tx.send(()).expect("ready");
                let wanted = format!(
                    "Basic {}",
                    base64_lite::encode(format!("{USER}:{PASSWORD}").as_bytes())
                );
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            requests.fetch_add(1, Ordering::Relaxed);
                            let _ = stream.set_nonblocking(false);
                            answer(stream, &wanted, &token);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("token server up");
        TokenServer {
            stop,
            requests,
            thread: Some(thread),
        }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(stream: std::net::TcpStream, wanted: &str, token: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") && value.trim() == wanted {
                authorized = true;
            }
        }
    }
    let (status, body) = if authorized {
        (
            "200 OK",
            serde_json::json!({ "token": token, "access_token": token, "expires_in": 3600 })
                .to_string(),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#
                .to_owned(),
        )
    };
    let mut stream = reader.into_inner();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Makes a key and self-signed certificate in `dir` and returns an RS256
/// JWT granting pull and push on `private` for an hour.
fn signed_token(dir: &Path) -> String {
    let key = dir.join("token.key");
    let cert = dir.join("token.crt");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=vmctl-test-token",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl req");
    assert!(status.status.success(), "openssl req: {status:?}");
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    assert!(der.status.success(), "openssl x509: {der:?}");
    let x5c = base64_lite::encode(&der.stdout);
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [x5c] });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": "vmctl-test-issuer",
        "sub": USER,
        "aud": "vmctl-test",
        "exp": now + 3600,
        "nbf": now - 60,
        "iat": now - 60,
        "jti": format!("{now}"),
        "access": [{ "type": "repository", "name": "private", "actions": ["pull", "push"] }],
    });
    let signing_input = format!(
        "{}.{}",
        base64_lite::encode_url(header.to_string().as_bytes()),
        base64_lite::encode_url(claims.to_string().as_bytes())
    );
    let input_path = dir.join("token.input");
    std::fs::write(&input_path, &signing_input).expect("token input");
    let signature = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&key)
        .arg(&input_path)
        .output()
        .expect("openssl dgst");
    assert!(signature.status.success(), "openssl dgst: {signature:?}");
    format!(
        "{signing_input}.{}",
        base64_lite::encode_url(&signature.stdout)
    )
}
