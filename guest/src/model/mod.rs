//! Docker Engine API data types, as they travel on the wire and as the engine
//! stores them on disk.
//!
//! The field names are Docker's (PascalCase). Fields the engine does not act on
//! are still kept so that `inspect` gives back what the client sent, in the
//! shape the docker CLI and other clients expect. This module holds types and
//! their (de)serialisation quirks only: no behaviour.

pub mod container;

pub use container::*;

use serde::{Deserialize, Deserializer};

/// Accepts either a JSON string or a list of strings (old API versions send
/// `Cmd` and `Entrypoint` as one string); `null` stays `None`.
pub fn string_or_vec<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(deserializer)? {
        None => None,
        Some(OneOrMany::One(s)) if s.is_empty() => Some(Vec::new()),
        Some(OneOrMany::One(s)) => Some(vec![s]),
        Some(OneOrMany::Many(v)) => Some(v),
    })
}

/// `null` in JSON becomes the type's default (Docker clients send `null` for
/// empty maps and lists).
pub fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}
