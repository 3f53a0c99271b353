//! `.dockerignore` as dockerd's classic builder reads it once the context
//! has arrived: the client has already left out what it names, but sends
//! the Dockerfile and `.dockerignore` itself whatever the file says; the
//! builder then drops those two from the context when the file names them
//! (so `COPY . /app` does not carry them). The Python SDK relies on it for
//! a Dockerfile from outside the context, which it adds under a random name
//! and names in the `.dockerignore` it sends.
//!
//! The syntax is dockerd's: `#` comments, blank lines, surrounding spaces
//! trimmed, `!` exceptions, paths cleaned and relative to the context,
//! `*`, `?`, `[…]` within one path element, `**` across any number of them;
//! the last pattern that matches a path (or one of its parents) decides.

use super::copy::wildcard_match;

/// The patterns of one `.dockerignore`, in order.
#[derive(Debug, Default)]
pub struct Patterns(Vec<Pattern>);

#[derive(Debug)]
struct Pattern {
    exception: bool,
    segments: Vec<String>,
}

impl Patterns {
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.trim_start_matches('\u{feff}').lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
            }
            let cleaned = super::copy::clean_in_root(pattern);
            let segments = if cleaned.is_empty() {
                Vec::new()
            } else {
                cleaned.split('/').map(str::to_owned).collect()
            };
            patterns.push(Pattern {
                exception,
                segments,
            });
        }
        Self(patterns)
    }

    /// Whether `path` (relative to the context) is excluded.
    pub fn excludes(&self, path: &str) -> bool {
        let path: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut matched = false;
        for pattern in &self.0 {
            // An exception only matters once something matched, and a
            // pattern only once nothing did.
            if pattern.exception != matched {
                continue;
            }
            let hit = (1..=path.len())
                .rev()
                .any(|n| segments_match(&pattern.segments, &path[..n]));
            if hit {
                matched = !pattern.exception;
            }
        }
        matched
    }
}

fn segments_match(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| segments_match(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((name, tail)) => wildcard_match(first, name) && segments_match(rest, tail),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerds_reading() {
        let ignore = Patterns::parse(
            "# comment\nignored\n Dockerfile \n.dockerignore\n!ignored/subdir/excepted-file\n\n#*\n",
        );
        assert!(ignore.excludes("Dockerfile"));
        assert!(ignore.excludes(".dockerignore"));
        assert!(ignore.excludes("ignored/subdir/file"));
        assert!(!ignore.excludes("ignored/subdir/excepted-file"));
        assert!(!ignore.excludes("#file.txt"));
        assert!(!ignore.excludes("not-ignored"));

        let globs = Patterns::parse("**/*.md\n/docs/*\n!docs/keep\n.dockerfile.*\n");
        assert!(globs.excludes("README.md"));
        assert!(globs.excludes("a/b/c.md"));
        assert!(globs.excludes("docs/x"));
        assert!(!globs.excludes("docs/keep"));
        assert!(globs.excludes(".dockerfile.5f3a"));
        assert!(!globs.excludes("Dockerfile"));
        assert!(!Patterns::parse("").excludes("Dockerfile"));
    }
}
