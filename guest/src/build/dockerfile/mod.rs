//! The Dockerfile language as dockerd 20.10's classic builder reads it
//! (`docker build` with `DOCKER_BUILDKIT=0`, `POST /build`).
//!
//! This module owns the text: parser directives, comments, continuations,
//! the instructions and their arguments, and the variable substitution the
//! builder applies before running each one ([`Instruction::expand`], with
//! [`Lexer`]). It does not run anything, resolve images or stages, read the
//! build context or keep the build's environment: the builder does, passing
//! the environment to [`Instruction::expand`].
//!
//! Reading happens in two steps, as in moby:
//!
//! 1. `lines`: directives at the top (`# escape=`, `# syntax=`), comment
//!    and blank lines dropped, continuation lines joined into one logical
//!    line per instruction, which is also what `Step N/M : ...` prints.
//! 2. `instruction`: the keyword (any case) picks how the arguments are
//!    read: the exec form (a JSON string array) or the shell form (the text
//!    as written) for RUN, CMD and ENTRYPOINT; `name=value` words for ENV,
//!    LABEL and ARG; a whitespace list for FROM and EXPOSE; JSON or a
//!    whitespace list for COPY, ADD and VOLUME. Arguments keep their quotes
//!    and `$VAR`s until dispatch.
//!
//! What only BuildKit has is refused with a line-numbered error that says
//! so: `RUN --mount`/`--network`/`--security`, `COPY --link` and friends, and
//! heredocs (`RUN <<EOF`), which the classic builder would otherwise read as
//! instructions. `COPY`/`ADD --chmod` is parsed ([`CopySpec::chmod`]);
//! dockerd 20.10 refuses it when the step runs.
//!
//! Where this is stricter than dockerd 20.10, on purpose, so that a mistake
//! fails at parse time with its line rather than later: an ONBUILD trigger
//! is parsed as an instruction now (dockerd only refuses ONBUILD, FROM and
//! MAINTAINER there and fails the builds that use the image); flags on
//! ARG, STOPSIGNAL and `HEALTHCHECK NONE` are checked (dockerd ignores
//! them); BuildKit-only flags are refused when parsing (dockerd refuses
//! `RUN --mount` when the step runs); a stage name used twice is refused.

mod duration;
mod error;
mod expand;
mod flags;
mod instruction;
mod lex;
mod lines;
mod split;
#[cfg(test)]
mod tests;

use std::time::Duration;

pub use error::{DockerfileError, ErrorKind};
pub use lex::Lexer;

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    /// The escape character, from `# escape=` (`\` by default).
    pub escape: char,
    /// `# syntax=`, recorded and otherwise ignored (no frontend images here).
    pub syntax: Option<String>,
    /// The ARG instructions before the first FROM, in order.
    pub meta_args: Vec<Step>,
    /// The build stages, in order.
    pub stages: Vec<Stage>,
}

/// One build stage: a FROM and the steps after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    /// The stage's FROM step ([`Instruction::From`]).
    pub from: Step,
    /// `AS name`, lowercased as docker does.
    pub name: Option<String>,
    pub steps: Vec<Step>,
}

/// One instruction and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written, continuation lines joined and the ends
    /// trimmed: what `Step 3/9 : ...` prints.
    pub original: String,
    pub instruction: Instruction,
}

/// The command of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The shell form: the text as written (continuations joined), for
    /// `SHELL` (`/bin/sh -c` by default) to run.
    Shell(String),
    /// The exec form: a JSON string array.
    Exec(Vec<String>),
}

/// A Dockerfile instruction with its arguments as written (quotes and
/// variables still in; see [`Instruction::expand`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Instruction {
    From {
        image: String,
        platform: Option<String>,
        /// `AS name`, lowercased.
        name: Option<String>,
    },
    Run(Command),
    Cmd(Command),
    Entrypoint(Command),
    /// JSON form only, as docker requires.
    Shell(Vec<String>),
    /// `ENV k=v k2="v 2"` or the legacy `ENV k v w` (one pair).
    Env(Vec<(String, String)>),
    /// `ARG name[=default] ...`.
    Arg(Vec<(String, Option<String>)>),
    Label(Vec<(String, String)>),
    /// Sorted, as docker sorts them when parsing.
    Expose(Vec<String>),
    User(String),
    Workdir(String),
    /// JSON or whitespace form.
    Volume(Vec<String>),
    Copy(CopySpec),
    Add(CopySpec),
    Stopsignal(String),
    /// `None` is `HEALTHCHECK NONE`.
    Healthcheck(Option<Healthcheck>),
    /// The trigger as written, e.g. `RUN echo hi` (checked with
    /// [`parse_trigger`]'s rules).
    Onbuild(String),
    Maintainer(String),
}

/// The arguments of COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopySpec {
    /// `--from=` (COPY only): a stage name or index, or an image.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` (dockerd 20.10's classic builder refuses it at dispatch:
    /// "the --chmod option requires BuildKit").
    pub chmod: Option<String>,
    /// At least one.
    pub sources: Vec<String>,
    pub dest: String,
}

/// `HEALTHCHECK [options] CMD ...`; an option not given is `None` (docker's
/// zero: inherit from the base image, or the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// `["CMD", args...]` for the exec form, `["CMD-SHELL", text]` for the
    /// shell form, as in the image config.
    pub test: Vec<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub start_period: Option<Duration>,
    pub retries: Option<u32>,
}

impl Instruction {
    /// The keyword, upper case (`RUN`), as docker names instructions.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Arg(_) => "ARG",
            Instruction::Label(_) => "LABEL",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::User(_) => "USER",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::Volume(_) => "VOLUME",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Stopsignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Parses a whole Dockerfile. Errors name the line they are on.
pub fn parse(text: &str) -> Result<Dockerfile, DockerfileError> {
    let (directives, lines) = lines::read(text)?;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    let mut last_line = 1;
    for line in lines {
        last_line = line.start;
        let fail = |kind| DockerfileError::new(line.start, kind);
        let instruction =
            instruction::parse_instruction(&line.text, directives.escape).map_err(fail)?;
        let step = Step {
            line: line.start,
            original: line.text.trim().to_string(),
            instruction,
        };
        if let Instruction::From { name, .. } = &step.instruction {
            if let Some(name) = name {
                if stages.iter().any(|s| s.name.as_ref() == Some(name)) {
                    return Err(fail(ErrorKind::DuplicateStage(name.clone())));
                }
            }
            stages.push(Stage {
                name: name.clone(),
                from: step,
                steps: Vec::new(),
            });
            continue;
        }
        match stages.last_mut() {
            Some(stage) => stage.steps.push(step),
            None if matches!(step.instruction, Instruction::Arg(_)) => meta_args.push(step),
            None => {
                let keyword = step.instruction.keyword().to_string();
                return Err(fail(ErrorKind::BeforeFrom(keyword)));
            }
        }
    }
    if stages.is_empty() {
        return Err(DockerfileError::new(last_line, ErrorKind::NoFrom));
    }
    Ok(Dockerfile {
        escape: directives.escape,
        syntax: directives.syntax,
        meta_args,
        stages,
    })
}

/// Parses an ONBUILD trigger (an image's `OnBuild` entry) for a build whose
/// FROM names that image: one instruction, read with the default escape
/// character as docker does; FROM, ONBUILD and MAINTAINER are refused. The
/// step's line is the trigger's line within `expression` (1).
pub fn parse_trigger(expression: &str) -> Result<Step, DockerfileError> {
    let (directives, lines) = lines::read(expression)?;
    let [line] = lines.as_slice() else {
        let at = lines.get(1).map_or(1, |l| l.start);
        return Err(DockerfileError::new(at, ErrorKind::TriggerNotSingle));
    };
    let fail = |kind| DockerfileError::new(line.start, kind);
    let instruction =
        instruction::parse_instruction(&line.text, directives.escape).map_err(fail)?;
    match instruction.keyword() {
        "ONBUILD" => return Err(fail(ErrorKind::OnbuildChain)),
        k @ ("FROM" | "MAINTAINER") => return Err(fail(ErrorKind::OnbuildTrigger(k.into()))),
        _ => {}
    }
    Ok(Step {
        line: line.start,
        original: line.text.trim().to_string(),
        instruction,
    })
}
