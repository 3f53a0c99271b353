//! `vmctl version`: this CLI's version and the engine's.

use crate::engine_client::{self, ClientError};

/// Prints both versions; an unreachable engine is an error naming the address.
pub fn run(host: Option<&str>) -> Result<(), ClientError> {
    println!("vmctl {}", env!("CARGO_PKG_VERSION"));
    let host = engine_client::resolve_host(host)?;
    let version = engine_client::get_json(&host, "/version")?;
    let field = |name: &str| {
        version
            .get(name)
            .and_then(|v| v.as_str())
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "engine {} (API {}, minimum {}) at {host}",
        field("Version"),
        field("ApiVersion"),
        field("MinAPIVersion")
    );
    Ok(())
}
