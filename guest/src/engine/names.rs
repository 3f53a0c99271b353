//! Container names: validation, and Docker-style random names
//! (`adjective_surname`) for containers created without one.

use rand::seq::SliceRandom;

const LEFT: &[&str] = &[
    "admiring",
    "agitated",
    "amazing",
    "bold",
    "brave",
    "busy",
    "clever",
    "cool",
    "dazzling",
    "eager",
    "elastic",
    "epic",
    "focused",
    "friendly",
    "gallant",
    "gifted",
    "happy",
    "hopeful",
    "jolly",
    "keen",
    "kind",
    "loving",
    "lucid",
    "modest",
    "nifty",
    "nostalgic",
    "peaceful",
    "priceless",
    "quirky",
    "relaxed",
    "serene",
    "sharp",
    "stoic",
    "tender",
    "upbeat",
    "vibrant",
    "wizardly",
    "youthful",
    "zealous",
    "zen",
];

const RIGHT: &[&str] = &[
    "allen",
    "babbage",
    "bell",
    "curie",
    "darwin",
    "dijkstra",
    "einstein",
    "euler",
    "faraday",
    "fermi",
    "galileo",
    "gauss",
    "hamilton",
    "hopper",
    "hypatia",
    "joliot",
    "kepler",
    "knuth",
    "lamarr",
    "lovelace",
    "maxwell",
    "meitner",
    "mendel",
    "newton",
    "noether",
    "pascal",
    "perlman",
    "raman",
    "ritchie",
    "shannon",
    "sinoussi",
    "tesla",
    "thompson",
    "torvalds",
    "turing",
    "wilson",
    "wozniak",
    "yalow",
    "yonath",
    "zhukovsky",
];

/// A random `adjective_surname`.
pub fn random_name() -> String {
    let mut rng = rand::thread_rng();
    format!(
        "{}_{}",
        LEFT.choose(&mut rng).unwrap_or(&"quiet"),
        RIGHT.choose(&mut rng).unwrap_or(&"host")
    )
}

/// A random name that `taken` does not hold: a few draws, then (as Docker
/// does when the two lists run short) a draw with digits added.
pub fn unused_random_name(taken: impl Fn(&str) -> bool) -> String {
    for _ in 0..10 {
        let name = random_name();
        if !taken(&name) {
            return name;
        }
    }
    let mut rng = rand::thread_rng();
    loop {
        let name = format!(
            "{}{}",
            random_name(),
            rand::Rng::gen_range(&mut rng, 0..10_000)
        );
        if !taken(&name) {
            return name;
        }
    }
}

/// Docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, an optional leading `/`.
pub fn validate(name: &str) -> Result<&str, String> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if first_ok && rest_ok && bare.len() >= 2 {
        Ok(bare)
    } else {
        Err(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        ))
    }
}

/// A new 64-hex-digit id.
pub fn new_id() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_docker_rules() {
        assert_eq!(validate("/web").unwrap(), "web");
        assert_eq!(validate("a.b-c_d").unwrap(), "a.b-c_d");
        assert!(validate("-x").is_err());
        assert!(validate("a b").is_err());
        assert!(validate("x").is_err());
        assert!(validate(&random_name()).is_ok());
        // Every plain name taken: digits are added.
        let name = unused_random_name(|n| !n.chars().last().unwrap().is_ascii_digit());
        assert!(validate(&name).is_ok());
        assert!(name.chars().last().unwrap().is_ascii_digit(), "{name}");
        assert_eq!(new_id().len(), 64);
    }
}
