//! Variable substitution before dispatch: which arguments of which
//! instruction the classic builder runs through the word lexer.
//!
//! In dockerd 20.10: ADD and COPY (sources, destination, `--chown`; not
//! `--from` nor `--chmod`), ENV and LABEL (names and values), ARG (names and
//! defaults), EXPOSE (each port may become several words), STOPSIGNAL, USER,
//! VOLUME, WORKDIR; FROM's image and `--platform` with the meta args only.
//! RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK, ONBUILD and MAINTAINER are left
//! alone: the shell (or nobody) expands those.

use super::lex::Lexer;
use super::{CopySpec, Instruction};

impl Instruction {
    /// The instruction with variables substituted and quotes removed the way
    /// the classic builder does before dispatch. `env` is the environment as
    /// it was before this instruction (the image's ENV, then the build args
    /// in scope; for FROM, the meta args); later entries win. So
    /// `ENV abc=bye def=$abc` after `ENV abc=hello` sets `def` to `hello`.
    pub fn expand(&self, lexer: &Lexer, env: &[(String, String)]) -> Result<Instruction, String> {
        let word = |w: &String| lexer.process_word(w, env);
        let words = |ws: &[String]| ws.iter().map(word).collect::<Result<Vec<_>, _>>();
        let pairs = |ps: &[(String, String)]| {
            ps.iter()
                .map(|(k, v)| Ok((word(k)?, word(v)?)))
                .collect::<Result<Vec<_>, String>>()
        };
        let copy = |spec: &CopySpec| -> Result<CopySpec, String> {
            Ok(CopySpec {
                from: spec.from.clone(),
                chown: spec.chown.as_ref().map(word).transpose()?,
                chmod: spec.chmod.clone(),
                sources: words(&spec.sources)?,
                dest: word(&spec.dest)?,
            })
        };
        Ok(match self {
            Instruction::From {
                image,
                platform,
                name,
            } => Instruction::From {
                image: word(image)?,
                platform: platform.as_ref().map(word).transpose()?,
                name: name.clone(),
            },
            Instruction::Env(kvs) => Instruction::Env(pairs(kvs)?),
            Instruction::Label(kvs) => Instruction::Label(pairs(kvs)?),
            Instruction::Arg(args) => Instruction::Arg(
                args.iter()
                    .map(|(k, v)| Ok((word(k)?, v.as_ref().map(word).transpose()?)))
                    .collect::<Result<_, String>>()?,
            ),
            Instruction::Expose(ports) => {
                let mut out = Vec::new();
                for port in ports {
                    out.extend(lexer.process_words(port, env)?);
                }
                Instruction::Expose(out)
            }
            Instruction::User(user) => Instruction::User(word(user)?),
            Instruction::Workdir(dir) => Instruction::Workdir(word(dir)?),
            Instruction::Stopsignal(signal) => Instruction::Stopsignal(word(signal)?),
            Instruction::Volume(volumes) => Instruction::Volume(words(volumes)?),
            Instruction::Copy(spec) => Instruction::Copy(copy(spec)?),
            Instruction::Add(spec) => Instruction::Add(copy(spec)?),
            Instruction::Run(_)
            | Instruction::Cmd(_)
            | Instruction::Entrypoint(_)
            | Instruction::Shell(_)
            | Instruction::Healthcheck(_)
            | Instruction::Onbuild(_)
            | Instruction::Maintainer(_) => self.clone(),
        })
    }
}
