//! How one logical line (continuations already joined) splits into the
//! keyword, the builder flags (`--from=...`) and the arguments, and the
//! argument shapes the instructions use: JSON string arrays, whitespace lists
//! and quote-aware words. Nothing here expands variables or removes quotes
//! from arguments; that is [`super::lex`]'s job at dispatch time.

/// The whitespace the classic parser splits keywords and lists on (moby's
/// `[\t\v\f\r ]+`; no Unicode spaces).
pub(super) const SPLIT_SPACES: [char; 5] = ['\t', '\u{b}', '\u{c}', '\r', ' '];

fn is_split_space(ch: char) -> bool {
    SPLIT_SPACES.contains(&ch)
}

/// `(keyword lowercased, flags, arguments)` of a logical line.
pub(super) fn split_command(line: &str) -> (String, Vec<String>, String) {
    let line = line.trim();
    let (keyword, args) = match line.find(is_split_space) {
        Some(at) => (&line[..at], line[at..].trim_start_matches(is_split_space)),
        None => (line, ""),
    };
    let (rest, flags) = extract_flags(args);
    (keyword.to_lowercase(), flags, rest.trim().to_string())
}

/// Splits leading `--name[=value]` words off `args`. Quotes inside a flag
/// word are removed and `\` escapes the next character there (always `\`,
/// whatever the escape directive says, as in moby). A lone `--` ends the
/// flags and is dropped.
fn extract_flags(args: &str) -> (&str, Vec<String>) {
    let mut flags = Vec::new();
    let mut rest = args;
    loop {
        let start = rest.trim_start();
        if !start.starts_with("--") {
            return (start, flags);
        }
        let (word, after) = flag_word(start);
        rest = after;
        match word {
            None => return (rest, flags), // the `--` terminator
            Some(word) => flags.push(word),
        }
        if rest.is_empty() {
            return (rest, flags);
        }
    }
}

/// The flag word at the start of `s` and the text after it; `None` for `--`.
fn flag_word(s: &str) -> (Option<String>, &str) {
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.char_indices().peekable();
    while let Some((at, ch)) = chars.next() {
        match quote {
            None if ch.is_whitespace() => {
                let rest = &s[at..];
                return (Some(word).filter(|w| w != "--"), rest);
            }
            None if ch == '\'' || ch == '"' => quote = Some(ch),
            Some(q) if ch == q => quote = None,
            _ if ch == '\\' => match chars.next() {
                Some((_, escaped)) => word.push(escaped),
                None => quote = None,
            },
            _ => word.push(ch),
        }
    }
    (Some(word).filter(|w| w != "--"), "")
}

/// Whitespace-separated list (no quote handling), as FROM, EXPOSE and the
/// non-JSON forms of ADD, COPY and VOLUME take it.
pub(super) fn split_list(rest: &str) -> Vec<String> {
    rest.split(is_split_space)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The outcome of reading the arguments as a JSON array.
pub(super) enum JsonArgs {
    /// A JSON array of strings (anything after the array is ignored, as the
    /// classic builder's JSON decoder reads one value).
    Strings(Vec<String>),
    /// A JSON array with a non-string element: an error wherever JSON is
    /// tried.
    NotStrings,
    /// Not a JSON array: the shell form.
    NotJson,
}

pub(super) fn json_array(rest: &str) -> JsonArgs {
    let rest = rest.trim_start();
    if !rest.starts_with('[') {
        return JsonArgs::NotJson;
    }
    let mut values = serde_json::Deserializer::from_str(rest).into_iter::<serde_json::Value>();
    match values.next() {
        Some(Ok(serde_json::Value::Array(items))) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    serde_json::Value::String(s) => out.push(s),
                    _ => return JsonArgs::NotStrings,
                }
            }
            JsonArgs::Strings(out)
        }
        _ => JsonArgs::NotJson,
    }
}

/// Quote-aware words for ENV, LABEL and ARG: whitespace splits words except
/// inside quotes or after the escape character; quotes and escapes are kept
/// in the word (the lexer removes them at dispatch).
pub(super) fn words(rest: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    // a word with quotes in it counts even when it is empty (`""`)
    let mut quoted = false;
    let mut chars = rest.chars().peekable();
    while let Some(ch) = chars.next() {
        match quote {
            None => {
                if ch.is_whitespace() {
                    if quoted || !word.is_empty() {
                        words.push(std::mem::take(&mut word));
                    }
                    quoted = false;
                    continue;
                }
                if ch == '\'' || ch == '"' {
                    quote = Some(ch);
                    quoted = true;
                }
                if ch == escape {
                    // keep the escape and the character after it, even a quote
                    // (an escape at the very end is dropped)
                    if let Some(next) = chars.next() {
                        word.push(ch);
                        word.push(next);
                    }
                    continue;
                }
                word.push(ch);
            }
            Some(q) => {
                if ch == q {
                    quote = None;
                }
                // inside '...' the escape is an ordinary character
                if ch == escape && q != '\'' {
                    match chars.next() {
                        Some(next) => {
                            word.push(ch);
                            word.push(next);
                        }
                        None => quote = None,
                    }
                    continue;
                }
                word.push(ch);
            }
        }
    }
    if quoted || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether a word of RUN, COPY or ADD opens a BuildKit heredoc
/// (`<<EOF`, `<<-EOF`, `<<"EOF"`, `2<<EOF`).
pub(super) fn is_heredoc(word: &str) -> bool {
    let word = word.trim_start_matches(|c: char| c.is_ascii_digit());
    let Some(name) = word.strip_prefix("<<") else {
        return false;
    };
    let name = name.strip_prefix('-').unwrap_or(name);
    let name = name.trim_matches(|c| c == '"' || c == '\'');
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str) -> (String, Vec<String>, String) {
        split_command(line)
    }

    #[test]
    fn keyword_is_lowercased_and_flags_come_off() {
        assert_eq!(
            split("  RUN   echo hi  "),
            ("run".into(), vec![], "echo hi".into())
        );
        assert_eq!(
            split("COPY --from=build --chown=a:b src /dst"),
            (
                "copy".into(),
                vec!["--from=build".into(), "--chown=a:b".into()],
                "src /dst".into()
            )
        );
        assert_eq!(
            split("COPY -- foo /tmp/"),
            ("copy".into(), vec![], "foo /tmp/".into())
        );
        assert_eq!(
            split("COPY --doit=true -- foo /tmp/"),
            (
                "copy".into(),
                vec!["--doit=true".into()],
                "foo /tmp/".into()
            )
        );
        assert_eq!(
            split("CMD --doit [ \"a\", \"b\" ]"),
            (
                "cmd".into(),
                vec!["--doit".into()],
                "[ \"a\", \"b\" ]".into()
            )
        );
        assert_eq!(split("FROM"), ("from".into(), vec![], "".into()));
        // flags only lead: a later `--x` is an argument
        assert_eq!(
            split("RUN ls --all"),
            ("run".into(), vec![], "ls --all".into())
        );
        // one dash is not a flag
        assert_eq!(split("RUN -x"), ("run".into(), vec![], "-x".into()));
    }

    #[test]
    fn flag_words_lose_quotes_and_escapes() {
        assert_eq!(
            split(r#"COPY --chown="a b" --x='c d' --y=e\ f s d"#).1,
            vec!["--chown=a b", "--x=c d", "--y=e f"]
        );
        assert_eq!(split("COPY --from=x").1, vec!["--from=x"]);
    }

    #[test]
    fn json_arrays() {
        let strings = |s: &str| match json_array(s) {
            JsonArgs::Strings(v) => Some(v),
            _ => None,
        };
        assert_eq!(strings("[]"), Some(vec![]));
        assert_eq!(strings("[\"\"]"), Some(vec!["".into()]));
        assert_eq!(
            strings("[ \"a\",\t\"b\" ]"),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            strings(r#"["abc 123", "♥", "\" \\ \/ \b \f \n \r \t \u0000"]"#),
            Some(vec![
                "abc 123".into(),
                "♥".into(),
                "\" \\ / \u{8} \u{c} \n \r \t \0".into()
            ])
        );
        // only the first value counts
        assert_eq!(strings("[\"a\"] && ls"), Some(vec!["a".into()]));
        assert!(matches!(json_array("[\"a\", 1]"), JsonArgs::NotStrings));
        assert!(matches!(json_array("[[\"a\"]]"), JsonArgs::NotStrings));
        assert!(matches!(json_array("['a']"), JsonArgs::NotJson));
        assert!(matches!(json_array("[\"a\""), JsonArgs::NotJson));
        assert!(matches!(json_array(r#"["c:\windows"]"#), JsonArgs::NotJson));
        assert!(matches!(json_array("echo [\"a\"]"), JsonArgs::NotJson));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        assert_eq!(
            words(r#"a=b c="d e" f='g h'"#, '\\'),
            vec!["a=b", "c=\"d e\"", "f='g h'"]
        );
        assert_eq!(words(r"a=b\ c d", '\\'), vec![r"a=b\ c", "d"]);
        assert_eq!(words(r#"n="a\"b""#, '\\'), vec![r#"n="a\"b""#]);
        assert_eq!(words(r"n='a\'b'", '\\'), vec![r"n='a\'b'"]);
        assert_eq!(words(r#"a="" b"#, '\\'), vec!["a=\"\"", "b"]);
        assert_eq!(words("x=1 \\", '\\'), vec!["x=1"]);
        assert_eq!(words("a=b` c", '`'), vec!["a=b` c"]);
        assert_eq!(words("  ", '\\'), Vec::<String>::new());
    }

    #[test]
    fn heredoc_words() {
        for word in ["<<EOF", "<<-EOF", "<<\"EOF\"", "<<'EOF'", "2<<EOF", "<<_x1"] {
            assert!(is_heredoc(word), "{word}");
        }
        for word in ["<<", "<<<", "<<<EOF", "$((1<<3))", "a<<EOF", "<<1"] {
            assert!(!is_heredoc(word), "{word}");
        }
    }
}
