//! One logical line to one [`Instruction`]: the keyword picks the argument
//! shape (JSON or shell form, whitespace list, `name=value` words, a single
//! string) and the flags the instruction takes. Arguments stay as written —
//! quotes and `$VAR`s included — until [`Instruction::expand`] runs at
//! dispatch, as in the classic builder.

use super::duration::parse_go_duration;
use super::error::ErrorKind;
use super::flags::Flags;
use super::split::{
    is_heredoc, json_array, split_command, split_list, words, JsonArgs, SPLIT_SPACES,
};
use super::{Command, CopySpec, Healthcheck, Instruction};

/// Parses one logical line (continuations joined, comments gone).
pub(super) fn parse_instruction(text: &str, escape: char) -> Result<Instruction, ErrorKind> {
    let (keyword, raw_flags, rest) = split_command(text);
    let flags =
        |name: &'static str, allowed: &[&'static str]| Flags::parse(name, &raw_flags, allowed);
    let instruction = match keyword.as_str() {
        "from" => {
            let args = split_list(&rest);
            let name = stage_name(&args)?;
            let flags = flags("FROM", &["platform"])?;
            Instruction::From {
                image: args[0].clone(),
                platform: flags.get("platform"),
                name,
            }
        }
        "run" => {
            flags("RUN", &[])?;
            Instruction::Run(run(&rest)?)
        }
        "cmd" => {
            flags("CMD", &[])?;
            Instruction::Cmd(command(&rest)?)
        }
        "entrypoint" => {
            flags("ENTRYPOINT", &[])?;
            Instruction::Entrypoint(command(&rest)?)
        }
        "shell" => {
            flags("SHELL", &[])?;
            Instruction::Shell(shell(&rest)?)
        }
        "env" => {
            flags("ENV", &[])?;
            Instruction::Env(name_values(&rest, escape, "ENV")?)
        }
        "label" => {
            flags("LABEL", &[])?;
            Instruction::Label(name_values(&rest, escape, "LABEL")?)
        }
        "arg" => {
            flags("ARG", &[])?;
            Instruction::Arg(args(&rest, escape)?)
        }
        "expose" => {
            flags("EXPOSE", &[])?;
            let mut ports = split_list(&rest);
            if ports.is_empty() {
                return Err(ErrorKind::AtLeastOneArgument("EXPOSE"));
            }
            ports.sort(); // docker sorts them at parse time
            Instruction::Expose(ports)
        }
        "user" => Instruction::User(one_string("USER", &rest, flags("USER", &[]))?),
        "workdir" => Instruction::Workdir(one_string("WORKDIR", &rest, flags("WORKDIR", &[]))?),
        "stopsignal" => {
            Instruction::Stopsignal(one_string("STOPSIGNAL", &rest, flags("STOPSIGNAL", &[]))?)
        }
        "maintainer" => {
            Instruction::Maintainer(one_string("MAINTAINER", &rest, flags("MAINTAINER", &[]))?)
        }
        "volume" => {
            flags("VOLUME", &[])?;
            Instruction::Volume(volumes(&rest)?)
        }
        "copy" => Instruction::Copy(copy_spec(
            "COPY",
            &rest,
            flags("COPY", &["from", "chown", "chmod"])?,
        )?),
        "add" => Instruction::Add(copy_spec("ADD", &rest, flags("ADD", &["chown", "chmod"])?)?),
        "healthcheck" => Instruction::Healthcheck(healthcheck(&rest, &raw_flags)?),
        "onbuild" => {
            flags("ONBUILD", &[])?;
            Instruction::Onbuild(onbuild(text, &rest)?)
        }
        _ => return Err(ErrorKind::UnknownInstruction(keyword.to_uppercase())),
    };
    Ok(instruction)
}

/// `FROM image [AS name]`: the stage name, lowercased and checked.
fn stage_name(args: &[String]) -> Result<Option<String>, ErrorKind> {
    match args {
        [_] => Ok(None),
        [_, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let valid = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !valid {
                return Err(ErrorKind::StageName(name.clone()));
            }
            Ok(Some(lower))
        }
        _ => Err(ErrorKind::FromArguments),
    }
}

/// RUN, CMD and ENTRYPOINT: a JSON string array is the exec form, anything
/// else the shell form, kept as written.
fn command(rest: &str) -> Result<Command, ErrorKind> {
    match json_array(rest) {
        JsonArgs::Strings(args) => Ok(Command::Exec(args)),
        JsonArgs::NotStrings => Err(ErrorKind::NotStringArray),
        JsonArgs::NotJson => Ok(Command::Shell(rest.to_string())),
    }
}

/// RUN: a command, and no BuildKit heredoc in the shell form.
fn run(rest: &str) -> Result<Command, ErrorKind> {
    let command = command(rest)?;
    match &command {
        Command::Shell(text) if text.is_empty() => {
            return Err(ErrorKind::AtLeastOneArgument("RUN"))
        }
        Command::Shell(text) => refuse_heredoc(text)?,
        Command::Exec(_) => {}
    }
    Ok(command)
}

/// SHELL: a non-empty JSON string array, nothing else.
fn shell(rest: &str) -> Result<Vec<String>, ErrorKind> {
    match json_array(rest) {
        JsonArgs::Strings(shell) if !shell.is_empty() => Ok(shell),
        JsonArgs::Strings(_) => Err(ErrorKind::AtLeastOneArgument("SHELL")),
        JsonArgs::NotStrings => Err(ErrorKind::NotStringArray),
        JsonArgs::NotJson if rest.is_empty() => Err(ErrorKind::AtLeastOneArgument("SHELL")),
        JsonArgs::NotJson => Err(ErrorKind::NotJson("SHELL")),
    }
}

fn refuse_heredoc(shell_text: &str) -> Result<(), ErrorKind> {
    if split_list(shell_text).iter().any(|w| is_heredoc(w)) {
        return Err(ErrorKind::NeedsBuildKit("a heredoc (<<EOF)".into()));
    }
    Ok(())
}

/// ENV and LABEL: `name=value ...`, or the legacy `name value words` (one
/// pair; the value is the rest of the line).
fn name_values(
    rest: &str,
    escape: char,
    instruction: &'static str,
) -> Result<Vec<(String, String)>, ErrorKind> {
    let words = words(rest, escape);
    let Some(first) = words.first() else {
        return Err(ErrorKind::AtLeastOneArgument(instruction));
    };
    let pairs = if !first.contains('=') {
        let split = rest.split_once(SPLIT_SPACES);
        let Some((name, value)) = split else {
            return Err(ErrorKind::TwoArguments(instruction));
        };
        let value = value.trim_start_matches(SPLIT_SPACES);
        vec![(name.to_string(), value.to_string())]
    } else {
        let mut pairs = Vec::with_capacity(words.len());
        for word in &words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(ErrorKind::MissingEquals(word.clone()));
            };
            pairs.push((name.to_string(), value.to_string()));
        }
        pairs
    };
    if pairs.iter().any(|(name, _)| name.is_empty()) {
        return Err(ErrorKind::BlankName(instruction));
    }
    Ok(pairs)
}

/// ARG `name[=default] ...`.
fn args(rest: &str, escape: char) -> Result<Vec<(String, Option<String>)>, ErrorKind> {
    let words = words(rest, escape);
    if words.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument("ARG"));
    }
    words
        .into_iter()
        .map(|word| match word.split_once('=') {
            Some(("", _)) => Err(ErrorKind::BlankName("ARG")),
            Some((name, value)) => Ok((name.to_string(), Some(value.to_string()))),
            None => Ok((word, None)),
        })
        .collect()
}

/// USER, WORKDIR, STOPSIGNAL, MAINTAINER: the rest of the line is the value.
fn one_string(
    instruction: &'static str,
    rest: &str,
    flags: Result<Flags, ErrorKind>,
) -> Result<String, ErrorKind> {
    flags?;
    if rest.is_empty() {
        return Err(ErrorKind::ExactlyOneArgument(instruction));
    }
    Ok(rest.to_string())
}

/// The JSON form, or else the whitespace-separated one.
fn list(rest: &str) -> Result<Vec<String>, ErrorKind> {
    match json_array(rest) {
        JsonArgs::Strings(items) => Ok(items),
        JsonArgs::NotStrings => Err(ErrorKind::NotStringArray),
        JsonArgs::NotJson => Ok(split_list(rest)),
    }
}

fn volumes(rest: &str) -> Result<Vec<String>, ErrorKind> {
    let items = list(rest)?;
    if items.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument("VOLUME"));
    }
    items
        .into_iter()
        .map(|v| {
            let v = v.trim();
            if v.is_empty() {
                Err(ErrorKind::EmptyVolume)
            } else {
                Ok(v.to_string())
            }
        })
        .collect()
}

fn copy_spec(instruction: &'static str, rest: &str, flags: Flags) -> Result<CopySpec, ErrorKind> {
    if matches!(json_array(rest), JsonArgs::NotJson) {
        refuse_heredoc(rest)?;
    }
    let mut sources = list(rest)?;
    if sources.len() < 2 {
        return Err(ErrorKind::NoDestination(instruction));
    }
    let dest = sources.pop().unwrap_or_default();
    Ok(CopySpec {
        from: flags.get("from"),
        chown: flags.get("chown"),
        chmod: flags.get("chmod"),
        sources,
        dest,
    })
}

/// `HEALTHCHECK [flags] CMD command` or `HEALTHCHECK NONE`.
fn healthcheck(rest: &str, raw_flags: &[String]) -> Result<Option<Healthcheck>, ErrorKind> {
    let (kind, command_text) = match rest.find(char::is_whitespace) {
        Some(at) => (&rest[..at], rest[at..].trim_start()),
        None => (rest, ""),
    };
    if kind.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument("HEALTHCHECK"));
    }
    let flags = Flags::parse(
        "HEALTHCHECK",
        raw_flags,
        &["interval", "timeout", "start-period", "retries"],
    )?;
    let kind = kind.to_uppercase();
    let test = match kind.as_str() {
        "NONE" if command_text.is_empty() => return Ok(None),
        "NONE" => return Err(ErrorKind::HealthcheckNoneArguments),
        "CMD" => match command(command_text)? {
            Command::Exec(args) if !args.is_empty() => {
                std::iter::once("CMD".to_string()).chain(args).collect()
            }
            Command::Shell(text) if !text.is_empty() => vec!["CMD-SHELL".to_string(), text],
            _ => return Err(ErrorKind::HealthcheckNoCommand),
        },
        _ => return Err(ErrorKind::HealthcheckType(kind)),
    };
    let retries = match flags.get("retries") {
        None => None,
        Some(value) => match value.parse::<u32>() {
            Ok(n) if n >= 1 && n <= i32::MAX as u32 => Some(n),
            _ => return Err(ErrorKind::Retries(value)),
        },
    };
    Ok(Some(Healthcheck {
        test,
        interval: interval(&flags, "interval")?,
        timeout: interval(&flags, "timeout")?,
        start_period: interval(&flags, "start-period")?,
        retries,
    }))
}

/// A HEALTHCHECK duration flag: at least 1ms when given.
fn interval(flags: &Flags, flag: &'static str) -> Result<Option<std::time::Duration>, ErrorKind> {
    let Some(value) = flags.get(flag) else {
        return Ok(None);
    };
    let duration = parse_go_duration(&value).map_err(|reason| ErrorKind::Duration {
        flag,
        value: value.clone(),
        reason,
    })?;
    if duration < std::time::Duration::from_millis(1) {
        return Err(ErrorKind::DurationTooShort(flag));
    }
    Ok(Some(duration))
}

/// `ONBUILD <instruction>`: the trigger's text, checked now so that a bad
/// trigger fails this build rather than the builds that use the image.
fn onbuild(text: &str, rest: &str) -> Result<String, ErrorKind> {
    if rest.is_empty() {
        return Err(ErrorKind::AtLeastOneArgument("ONBUILD"));
    }
    let (trigger, _, _) = split_command(rest);
    match trigger.to_uppercase().as_str() {
        "ONBUILD" => return Err(ErrorKind::OnbuildChain),
        t @ ("MAINTAINER" | "FROM") => return Err(ErrorKind::OnbuildTrigger(t.to_string())),
        _ => {}
    }
    // Triggers run later with the default escape character, as docker does.
    parse_instruction(rest, '\\').map_err(|e| ErrorKind::Trigger(Box::new(e)))?;
    // The expression is the instruction as written, without `ONBUILD`.
    let original = text.trim();
    let expression = original
        .get("ONBUILD".len()..)
        .unwrap_or_default()
        .trim_start_matches([' ', '\t', '\n', '\u{c}', '\r']);
    Ok(expression.to_string())
}
