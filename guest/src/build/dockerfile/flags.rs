//! Builder flags (`COPY --from=stage`, `FROM --platform=...`): each
//! instruction names the flags it takes; anything else is refused, the
//! BuildKit-only ones with a message that says so.

use super::error::ErrorKind;

/// Flags that exist only in BuildKit's Dockerfile frontend. The classic
/// builder refuses them; naming BuildKit tells the user why.
const BUILDKIT_ONLY: &[&str] = &[
    "mount",
    "network",
    "security",
    "link",
    "parents",
    "exclude",
    "checksum",
    "keep-git-dir",
];

/// The flag values of one instruction, by name.
#[derive(Debug, Default)]
pub(super) struct Flags {
    values: Vec<(&'static str, String)>,
}

impl Flags {
    /// Checks `raw` (`--name=value` words) against the `allowed` names of
    /// `instruction`: unknown, repeated or valueless flags are errors.
    pub(super) fn parse(
        instruction: &'static str,
        raw: &[String],
        allowed: &[&'static str],
    ) -> Result<Self, ErrorKind> {
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for word in raw {
            let body = word.strip_prefix("--").unwrap_or(word);
            let (name, value) = match body.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (body, None),
            };
            let Some(known) = allowed.iter().find(|a| **a == name) else {
                if BUILDKIT_ONLY.contains(&name) {
                    return Err(ErrorKind::NeedsBuildKit(format!("the --{name} option")));
                }
                return Err(ErrorKind::UnknownFlag {
                    flag: name.to_string(),
                    instruction,
                });
            };
            if values.iter().any(|(n, _)| n == known) {
                return Err(ErrorKind::DuplicateFlag(name.to_string()));
            }
            let Some(value) = value else {
                return Err(ErrorKind::FlagWithoutValue(name.to_string()));
            };
            values.push((known, value.to_string()));
        }
        Ok(Self { values })
    }

    /// The value of `--name`, if it was given (an empty value counts as not
    /// given, as in docker).
    pub(super) fn get(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn known_flags_are_read() {
        let flags = Flags::parse(
            "COPY",
            &raw(&["--from=build", "--chown="]),
            &["from", "chown"],
        )
        .unwrap();
        assert_eq!(flags.get("from").as_deref(), Some("build"));
        assert_eq!(flags.get("chown"), None);
        assert_eq!(flags.get("chmod"), None);
    }

    #[test]
    fn bad_flags_are_refused() {
        assert_eq!(
            Flags::parse("COPY", &raw(&["--foo=1"]), &["from"]).unwrap_err(),
            ErrorKind::UnknownFlag {
                flag: "foo".into(),
                instruction: "COPY"
            }
        );
        assert_eq!(
            Flags::parse("RUN", &raw(&["--mount=type=cache,target=/x"]), &[]).unwrap_err(),
            ErrorKind::NeedsBuildKit("the --mount option".into())
        );
        assert_eq!(
            Flags::parse("COPY", &raw(&["--from=a", "--from=b"]), &["from"]).unwrap_err(),
            ErrorKind::DuplicateFlag("from".into())
        );
        assert_eq!(
            Flags::parse("COPY", &raw(&["--from"]), &["from"]).unwrap_err(),
            ErrorKind::FlagWithoutValue("from".into())
        );
    }
}
