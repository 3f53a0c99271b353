//! Why a Dockerfile was refused, and where. The messages follow dockerd
//! 20.10's classic builder where it has one; [`DockerfileError`] prefixes the
//! file name and the 1-based line (`Dockerfile:7: unknown instruction: BOGUS`).

/// A Dockerfile that cannot be built, with the line it failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {kind}")]
pub struct DockerfileError {
    /// The Dockerfile's name as the user gave it (`Dockerfile` unless
    /// [`DockerfileError::with_file`] says otherwise).
    pub file: String,
    /// The 1-based line where the failing instruction starts.
    pub line: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl DockerfileError {
    pub(super) fn new(line: usize, kind: ErrorKind) -> Self {
        Self {
            file: "Dockerfile".into(),
            line,
            kind,
        }
    }

    /// The same error naming `file` (e.g. the `dockerfile=` path of a build).
    pub fn with_file(mut self, file: impl Into<String>) -> Self {
        self.file = file.into();
        self
    }
}

/// What is wrong with an instruction or with the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("file with no instructions")]
    NoInstructions,
    #[error("no build stage: a Dockerfile needs a FROM")]
    NoFrom,
    #[error("no build stage in current context: only ARG may come before the first FROM, not {0}")]
    BeforeFrom(String),
    #[error("unknown instruction: {0}")]
    UnknownInstruction(String),
    #[error("invalid escape token '{0}' does not match ` or \\")]
    EscapeToken(String),
    #[error("only one {0} parser directive can be used")]
    RepeatedDirective(String),
    #[error("unknown flag --{flag} for {instruction}")]
    UnknownFlag {
        flag: String,
        instruction: &'static str,
    },
    #[error("duplicate flag specified: --{0}")]
    DuplicateFlag(String),
    #[error("missing a value on flag: --{0}")]
    FlagWithoutValue(String),
    #[error("{0} requires BuildKit (DOCKER_BUILDKIT=1); the classic builder does not support it")]
    NeedsBuildKit(String),
    #[error("{0} requires at least one argument")]
    AtLeastOneArgument(&'static str),
    #[error("{0} requires exactly one argument")]
    ExactlyOneArgument(&'static str),
    #[error("{0} requires at least two arguments, but only one was provided. Destination could not be determined")]
    NoDestination(&'static str),
    #[error("{0} must have two arguments")]
    TwoArguments(&'static str),
    #[error("Syntax error - can't find = in {0:?}. Must be of the form: name=value")]
    MissingEquals(String),
    #[error("{0} names can not be blank")]
    BlankName(&'static str),
    #[error("{0} requires the arguments to be in JSON form")]
    NotJson(&'static str),
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    #[error("FROM requires either one or three arguments")]
    FromArguments,
    #[error(
        "invalid name for build stage: {0:?}, name can't start with a number or contain symbols"
    )]
    StageName(String),
    #[error("duplicate name for build stage: {0:?}")]
    DuplicateStage(String),
    #[error("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    #[error("{0} isn't allowed as an ONBUILD trigger")]
    OnbuildTrigger(String),
    #[error("onbuild trigger should be a single expression")]
    TriggerNotSingle,
    #[error("ONBUILD trigger: {0}")]
    Trigger(Box<ErrorKind>),
    #[error("HEALTHCHECK NONE takes no arguments")]
    HealthcheckNoneArguments,
    #[error("Missing command after HEALTHCHECK CMD")]
    HealthcheckNoCommand,
    #[error("Unknown type {0:?} in HEALTHCHECK (try CMD)")]
    HealthcheckType(String),
    #[error("invalid duration {value:?} for --{flag}: {reason}")]
    Duration {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("Interval {0:?} cannot be less than 1ms")]
    DurationTooShort(&'static str),
    #[error("invalid --retries value {0:?}: must be a whole number of at least 1")]
    Retries(String),
    #[error("VOLUME specified can not be an empty string")]
    EmptyVolume,
}
