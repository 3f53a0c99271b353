//! From the text of a Dockerfile to its logical lines: parser directives at
//! the top, comments and blank lines dropped, continuations joined.
//!
//! The rules are those of the classic builder's parser:
//!
//! - Parser directives (`# escape=``, `# syntax=...`) are `# key=value`
//!   comment lines before anything else; the first line that is not one (a
//!   blank line, another comment, an instruction, an unknown key) ends them.
//!   A directive may appear once.
//! - A line whose first non-blank character is `#` is a comment, also in the
//!   middle of a continued instruction.
//! - A line ending in the escape character (trailing blanks allowed) goes on
//!   on the next line, unless that character is itself escaped (`\\`). The
//!   escape character is removed, the rest is joined as it stands: the next
//!   line keeps its leading whitespace, so `echo a && \` + `    echo b` reads
//!   `echo a &&     echo b`. Blank lines inside a continuation are skipped.

use super::error::{DockerfileError, ErrorKind};

/// One instruction's text, continuations joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Line {
    /// The 1-based line where the instruction starts.
    pub start: usize,
    pub text: String,
}

/// The parser directives found at the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Directives {
    pub escape: char,
    pub syntax: Option<String>,
    done: bool,
    seen_escape: bool,
}

impl Directives {
    fn new() -> Self {
        Self {
            escape: '\\',
            syntax: None,
            done: false,
            seen_escape: false,
        }
    }

    /// Looks at one physical line while directives may still come.
    fn check(&mut self, line: &str) -> Result<(), ErrorKind> {
        if self.done {
            return Ok(());
        }
        let Some((key, value)) = directive(line) else {
            self.done = true;
            return Ok(());
        };
        match key.to_ascii_lowercase().as_str() {
            "escape" => {
                if self.seen_escape {
                    return Err(ErrorKind::RepeatedDirective("escape".into()));
                }
                self.seen_escape = true;
                self.escape = match value {
                    "\\" => '\\',
                    "`" => '`',
                    other => return Err(ErrorKind::EscapeToken(other.into())),
                };
            }
            "syntax" => {
                if self.syntax.is_some() {
                    return Err(ErrorKind::RepeatedDirective("syntax".into()));
                }
                self.syntax = Some(value.to_string());
            }
            _ => self.done = true,
        }
        Ok(())
    }
}

/// `# key = value`, the shape of a parser directive (Go's `\s`: ASCII blanks).
fn directive(line: &str) -> Option<(&str, &str)> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\u{c}' | '\r');
    let rest = line.strip_prefix('#')?.trim_start_matches(blank);
    let key_len = rest
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(rest.len());
    let key = &rest[..key_len];
    if !key.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let value = rest[key_len..]
        .trim_start_matches(blank)
        .strip_prefix('=')?
        .trim_matches(blank);
    (!value.is_empty()).then_some((key, value))
}

/// Removes a trailing continuation (the escape character, then only blanks);
/// says whether the line goes on.
fn strip_continuation(line: &str, escape: char) -> (&str, bool) {
    let trimmed = line.trim_end_matches([' ', '\t']);
    match trimmed.strip_suffix(escape) {
        Some(before) if before.is_empty() || !before.ends_with(escape) => (before, true),
        _ => (line, false),
    }
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// The directives and the logical lines of `text`.
pub(super) fn read(text: &str) -> Result<(Directives, Vec<Line>), DockerfileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pieces: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') {
        pieces.pop(); // the empty piece after the final newline
    }
    let total = pieces.len();
    let mut physical = pieces
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .enumerate()
        .map(|(i, l)| (i + 1, l));
    let mut directives = Directives::new();
    let mut lines = Vec::new();

    while let Some((number, raw)) = physical.next() {
        let first = raw.trim_start();
        directives
            .check(first)
            .map_err(|kind| DockerfileError::new(number, kind))?;
        let first = if first.starts_with('#') { "" } else { first };
        let (start_text, mut continues) = strip_continuation(first, directives.escape);
        if !continues && start_text.is_empty() {
            continue;
        }
        let mut joined = start_text.to_string();
        while continues {
            let Some((next_number, next)) = physical.next() else {
                break;
            };
            directives
                .check(next)
                .map_err(|kind| DockerfileError::new(next_number, kind))?;
            if is_comment(next) || next.trim().is_empty() {
                continue;
            }
            let (part, more) = strip_continuation(next, directives.escape);
            joined.push_str(part);
            continues = more;
        }
        lines.push(Line {
            start: number,
            text: joined,
        });
    }

    if lines.is_empty() {
        return Err(DockerfileError::new(
            total.max(1),
            ErrorKind::NoInstructions,
        ));
    }
    Ok((directives, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(dockerfile: &str) -> Vec<(usize, String)> {
        read(dockerfile)
            .unwrap()
            .1
            .into_iter()
            .map(|l| (l.start, l.text))
            .collect()
    }

    fn joined(dockerfile: &str) -> Vec<String> {
        texts(dockerfile).into_iter().map(|(_, t)| t).collect()
    }

    #[test]
    fn comments_blank_lines_and_line_numbers() {
        let file = "# a comment\n\nFROM x\n   # indented comment\n  RUN a\r\n\nCMD b";
        assert_eq!(
            texts(file),
            vec![
                (3, "FROM x".into()),
                (5, "RUN a".into()),
                (7, "CMD b".into())
            ]
        );
    }

    #[test]
    fn continuations_keep_the_next_lines_indentation() {
        let file = "RUN echo '1234' && \\\n    echo \"456\" && \\\n    echo 789\n";
        assert_eq!(
            joined(file),
            vec!["RUN echo '1234' &&     echo \"456\" &&     echo 789"]
        );
        assert_eq!(
            joined("RUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning"),
            vec!["RUN echo hello  world  goodnight    moon  lightning"]
        );
        assert_eq!(
            joined("RUN echo hello  \\  \nworld"),
            vec!["RUN echo hello  world"]
        );
        assert_eq!(
            joined("RUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight"),
            vec!["RUN echo hi   world  goodnight"]
        );
    }

    #[test]
    fn comments_and_blank_lines_inside_a_continuation_are_skipped() {
        let file = "RUN echo hello \\\n# this is a comment\n\n# another\n\nthis is more\nCMD x";
        assert_eq!(
            texts(file),
            vec![
                (1, "RUN echo hello this is more".into()),
                (7, "CMD x".into())
            ]
        );
        assert_eq!(
            joined("RUN foo \\\n\nbar \\\n\nbaz"),
            vec!["RUN foo bar baz"]
        );
    }

    #[test]
    fn an_escaped_escape_does_not_continue() {
        let file = "ENV C trailing\\\\backslash\\\\\nENV D not appended\nENV E hello\\\n\\\nworld";
        assert_eq!(
            joined(file),
            vec![
                "ENV C trailing\\\\backslash\\\\",
                "ENV D not appended",
                "ENV E helloworld"
            ]
        );
    }

    #[test]
    fn continuation_at_the_end_of_the_file() {
        assert_eq!(joined("FROM x\nRUN a \\"), vec!["FROM x", "RUN a "]);
        assert_eq!(joined("FROM x\nRUN a \\\n"), vec!["FROM x", "RUN a "]);
    }

    #[test]
    fn directives() {
        let (d, lines) =
            read("# escape=`\n# syntax=docker/dockerfile:1\n\nFROM x\nRUN a `\n b").unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(lines[1].text, "RUN a  b");

        // all spellings the reference lists are the same directive
        for spelling in [
            "#escape=`",
            "# escape =`",
            "#\tescape= `",
            "# escape = `",
            "#\t  eScApE=`",
        ] {
            let (d, _) = read(&format!("{spelling}\nFROM x")).unwrap();
            assert_eq!(d.escape, '`', "{spelling}");
        }
    }

    #[test]
    fn directives_only_at_the_very_top() {
        // after a comment, an instruction or a blank line it is a comment
        for file in [
            "# about this file\n# escape=`\nFROM x",
            "FROM x\n# escape=`",
            "\n# escape=`\nFROM x",
            "# unknowndirective=value\n# escape=`\nFROM x",
        ] {
            let (d, _) = read(file).unwrap();
            assert_eq!(d.escape, '\\', "{file:?}");
        }
        // a directive cannot be continued: the next line is an instruction
        let (_, lines) = read("# direc \\\ntive=value\nFROM x").unwrap();
        assert_eq!(lines[0].text, "tive=value");
    }

    #[test]
    fn bad_directives() {
        assert_eq!(
            read("# escape=`\n# escape=\\\nFROM x").unwrap_err(),
            DockerfileError::new(2, ErrorKind::RepeatedDirective("escape".into()))
        );
        assert_eq!(
            read("# escape=x\nFROM x").unwrap_err().to_string(),
            "Dockerfile:1: invalid escape token 'x' does not match ` or \\"
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let (d, lines) = read("\u{feff}# escape=`\nFROM x").unwrap();
        assert_eq!(d.escape, '`');
        assert_eq!(lines[0].text, "FROM x");
    }

    #[test]
    fn no_instructions() {
        assert_eq!(
            read("# just\n\n# comments\n").unwrap_err(),
            DockerfileError::new(3, ErrorKind::NoInstructions)
        );
        assert_eq!(read("").unwrap_err().line, 1);
    }
}
