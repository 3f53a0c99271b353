//! Docker's word lexer: the shell-like processing the classic builder applies
//! to the arguments of ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL, USER,
//! VOLUME, WORKDIR and ARG before it runs them (moby's
//! `frontend/dockerfile/shell`, as vendored by dockerd 20.10).
//!
//! It is not a shell. What it does, in one pass over the word:
//!
//! - `'...'` keeps everything literally (no escapes inside);
//! - `"..."` keeps everything but `$` expansions; the escape character only
//!   escapes `"`, `$` and itself there, elsewhere it stays;
//! - outside quotes the escape character (`\`, or `` ` `` after
//!   `# escape=`` ` ``) makes the next character literal and is dropped;
//! - `$name`, `${name}`, `${name:-word}`, `${name:+word}`, `${name?msg}` and
//!   `${name:?msg}` expand from the environment given (unset names expand to
//!   nothing; positional and special parameters such as `$1` or `$@` are never
//!   set). `${name-word}` and `${name+word}` are not supported by the classic
//!   builder: they fail with "missing ':' in substitution", as there.
//!
//! Splitting into words ([`Lexer::process_words`]) happens after expansion:
//! whitespace that came from a variable splits words, quoted whitespace and
//! escaped characters do not, and empty words are dropped.

/// The lexer for one Dockerfile: only the escape character varies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lexer {
    escape: char,
}

impl Lexer {
    /// A lexer using `escape` (`\` by default, `` ` `` after the directive).
    pub fn new(escape: char) -> Self {
        Self { escape }
    }

    /// The escape character this lexer uses.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// `word` with quotes removed and variables expanded from `env`
    /// (a later entry for the same name wins, as in docker's env list).
    /// Whitespace is kept as it is.
    pub fn process_word(&self, word: &str, env: &[(String, String)]) -> Result<String, String> {
        self.process(word, env).map(|(word, _)| word)
    }

    /// `text` expanded like [`Lexer::process_word`], then split on the
    /// whitespace that is neither quoted nor escaped.
    pub fn process_words(
        &self,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Vec<String>, String> {
        self.process(text, env).map(|(_, words)| words)
    }

    fn process(
        &self,
        source: &str,
        env: &[(String, String)],
    ) -> Result<(String, Vec<String>), String> {
        let mut scan = Scan {
            chars: source.chars().collect(),
            pos: 0,
            escape: self.escape,
            env,
        };
        scan.until(None)
            .map_err(|e| format!("failed to process {source:?}: {e}"))
    }
}

/// The words being built by [`Scan::until`].
#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    /// A character subject to splitting (plain text, or from an expansion).
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }

    fn add_str(&mut self, s: &str) {
        s.chars().for_each(|ch| self.add_char(ch));
    }

    fn add_raw_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

struct Scan<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a [(String, String)],
}

impl Scan<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let ch = self.peek();
        if ch.is_some() {
            self.pos += 1;
        }
        ch
    }

    fn lookup(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Processes up to `stop` (consumed) or the end of the text; returns the
    /// joined result and its words.
    fn until(&mut self, stop: Option<char>) -> Result<(String, Vec<String>), String> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if Some(ch) == stop {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '\'' => {
                    let s = self.single_quoted()?;
                    words.add_raw_str(&s);
                    result.push_str(&s);
                }
                '"' => {
                    let s = self.double_quoted()?;
                    words.add_raw_str(&s);
                    result.push_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    words.add_str(&s);
                    result.push_str(&s);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        // The escape character makes the next one literal; at
                        // the very end it is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some(stop) => Err(format!(
                "unexpected end of statement while looking for matching {stop}"
            )),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Result<String, String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(out),
                Some(ch) => out.push(ch),
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, String> {
        self.pos += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(ch) => {
                    self.pos += 1;
                    if ch == self.escape {
                        match self.peek() {
                            // an escape right before the end is dropped (the
                            // missing quote is reported next round)
                            None => continue,
                            Some(next) if next == '"' || next == '$' || next == self.escape => {
                                self.pos += 1;
                                out.push(next);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(ch);
                }
            }
        }
    }

    /// `$name` or `${...}`; the scanner is on the `$`.
    fn dollar(&mut self) -> Result<String, String> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default().to_string());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.name();
        match self.next() {
            Some('}') => Ok(self.lookup(&name).unwrap_or_default().to_string()),
            Some('?') => {
                let word = self.braced_word()?;
                match self.lookup(&name) {
                    Some(value) => Ok(value.to_string()),
                    None => Err(unset_message(&name, &word, "is not allowed to be unset")),
                }
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.braced_word()?;
                let value = self.lookup(&name);
                match modifier {
                    Some('+') => Ok(match value {
                        Some(v) if !v.is_empty() => word,
                        _ => String::new(),
                    }),
                    Some('-') => Ok(match value {
                        Some(v) if !v.is_empty() => v.to_string(),
                        _ => word,
                    }),
                    Some('?') => match value {
                        None => Err(unset_message(&name, &word, "is not allowed to be unset")),
                        Some("") => Err(unset_message(&name, &word, "is not allowed to be empty")),
                        Some(v) => Ok(v.to_string()),
                    },
                    other => Err(format!(
                        "unsupported modifier ({}) in substitution",
                        other.map(String::from).unwrap_or_default()
                    )),
                }
            }
            _ => Err("missing ':' in substitution".into()),
        }
    }

    /// The word of `${name:-word}` and friends, up to the closing brace.
    fn braced_word(&mut self) -> Result<String, String> {
        match self.until(Some('}')) {
            Ok((word, _)) => Ok(word),
            Err(_) if self.peek().is_none() => Err("syntax error: missing '}'".into()),
            Err(e) => Err(e),
        }
    }

    /// A variable name: letters, digits and `_`; or a run of digits
    /// (positional); or one special parameter character.
    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !ch.is_alphanumeric() && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

fn unset_message(name: &str, word: &str, default: &str) -> String {
    format!("{name}: {}", if word.is_empty() { default } else { word })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One case per line: `input | expected`, `error` for a failure. The
    /// environment is PWD=/home, SHELL=bash, KOREAN=한국어, NULL= (set, empty).
    #[test]
    fn process_word_follows_docker() {
        let env = env(&[
            ("PWD", "/home"),
            ("SHELL", "bash"),
            ("KOREAN", "한국어"),
            ("NULL", ""),
        ]);
        let cases = r#"
            hello | hello
            he'll'o | hello
            he'llo | error
            he\'llo | he'llo
            he\\'llo | error
            abc\tdef | abctdef
            "abc\tdef" | abc\tdef
            "abc\\tdef" | abc\tdef
            'abc\tdef' | abc\tdef
            hello\ | hello
            hello\\ | hello\
            "hello | error
            "hello\" | error
            "hel'lo" | hel'lo
            'hello | error
            'hello\' | hello\
            "''" | ''
            $. | $.
            he$1x | hex
            he$.x | he$.x
            he$pwd. | he.
            he$PWD | he/home
            he\$PWD | he$PWD
            he\\$PWD | he\/home
            "he\$PWD" | he$PWD
            "he\\$PWD" | he\/home
            \${} | ${}
            ${} | error
            he${} | error
            he${hi}xx | hexx
            he${PWD} | he/home
            he${.} | error
            he${XXX:-000}xx | he000xx
            he${PWD:-000}xx | he/homexx
            he${XXX:-$PWD}xx | he/homexx
            he${XXX:-${PWD:-yyy}}xx | he/homexx
            he${XXX:-${YYY:-yyy}}xx | heyyyxx
            he${XXX:YYY} | error
            he${XXX?} | error
            he${XXX:?} | error
            he${PWD?} | he/home
            he${NULL?} | he
            he${NULL:?} | error
            he${XXX:+${PWD}}xx | hexx
            he${PWD:+${SHELL}}xx | hebashxx
            he${PWD:+000}xx | he000xx
            he${NULL:+000}xx | hexx
            he${NULL:-000}xx | he000xx
            'he${XX}' | he${XX}
            "he'$PWD'" | he'/home'
            '\$PWD' | \$PWD
            '"hello"' | "hello"
            he${PWD | error
            he${PWD:=000}xx | error
            he${PWD-000}xx | error
            he${PWD+000}xx | error
            he${PWD:+${PWD}:}xx | he/home:xx
            he${XXX:-\$PWD:}xx | he$PWD:xx
            he${XXX:-\${PWD}z}xx | he${PWDz}xx
            안'녕'하세요 | 안녕하세요
            안녕$KOREAN | 안녕한국어
            ${aaa}} | }
            ${aaa:-bbb ${foo} | error
            ${aaa:-bbb {foo} | bbb {foo
            ${:-bbb} | error
            ${999:-bbb}aaa | bbbaaa
            $@aaa | aaa
            ${$:-bbb} | bbb
        "#;
        let lexer = Lexer::new('\\');
        for line in cases.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (input, want) = line.split_once(" | ").unwrap();
            let got = lexer.process_word(input, &env);
            if want == "error" {
                assert!(got.is_err(), "{input}: want an error, got {got:?}");
            } else {
                assert_eq!(got.as_deref(), Ok(want), "{input}");
            }
        }
    }

    #[test]
    fn errors_name_the_word_and_the_cause() {
        let lexer = Lexer::new('\\');
        assert_eq!(
            lexer.process_word("a\"b", &[]),
            Err(
                "failed to process \"a\\\"b\": unexpected end of statement while looking for matching double-quote"
                    .to_string()
            )
        );
        assert_eq!(
            lexer.process_word("${x-y}", &[]),
            Err("failed to process \"${x-y}\": missing ':' in substitution".to_string())
        );
        assert_eq!(
            lexer.process_word("${x:?must be set}", &[]),
            Err("failed to process \"${x:?must be set}\": x: must be set".to_string())
        );
    }

    #[test]
    fn process_words_splits_after_expansion() {
        let lexer = Lexer::new('\\');
        let env = env(&[
            ("hi", "hi"),
            ("space", "abc  def"),
            ("leading", "  ab c"),
            ("trailing", "ab c   "),
        ]);
        let cases: &[(&str, &[&str])] = &[
            ("hello", &["hello"]),
            ("hello${hi}bye", &["hellohibye"]),
            ("hello${space}bye", &["helloabc", "defbye"]),
            ("hello\"${space}\"bye", &["helloabc  defbye"]),
            ("hello \"${space}\"bye", &["hello", "abc  defbye"]),
            ("hello${leading}def", &["hello", "ab", "cdef"]),
            ("hello\"${leading}\" def", &["hello  ab c", "def"]),
            ("hello${trailing}d", &["helloab", "c", "d"]),
            ("hel\"lo${trailing}\"", &["helloab c   "]),
            ("hello\" there  \"", &["hello there  "]),
            ("hello there     ", &["hello", "there"]),
            ("hello\\ there", &["hello there"]),
            ("hello\\\" there", &["hello\"", "there"]),
            ("hello'$there'", &["hello$there"]),
            ("\"\" a", &["a"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                lexer.process_words(input, &env).unwrap(),
                want.to_vec(),
                "{input}"
            );
        }
        assert!(lexer.process_words("hello\" there", &env).is_err());
    }

    #[test]
    fn later_env_entries_win() {
        let lexer = Lexer::new('\\');
        let env = env(&[("a", "first"), ("a", "second")]);
        assert_eq!(lexer.process_word("$a", &env).unwrap(), "second");
    }

    #[test]
    fn backtick_escape() {
        let lexer = Lexer::new('`');
        assert_eq!(
            lexer.process_word(r"c:\windows", &[]).unwrap(),
            r"c:\windows"
        );
        assert_eq!(lexer.process_word("a` b", &[]).unwrap(), "a b");
        assert_eq!(lexer.process_word("`$x", &[]).unwrap(), "$x");
        assert_eq!(lexer.process_word(r#""a\b`"c""#, &[]).unwrap(), r#"a\b"c"#);
    }
}
