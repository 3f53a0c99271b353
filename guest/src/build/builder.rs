//! The classic builder's dispatch: stages in order up to the target, each
//! step cached, run, copied or recorded, its progress told as dockerd's
//! classic builder tells it (`Step 2/7 : RUN …`, ` ---> Running in …`,
//! ` ---> Using cache`, ` ---> 3f2a…`, `Successfully built …`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::context::Scratch;
use super::copy::{self, Ownership};
use super::dockerfile::{self, Command, CopySpec, Dockerfile, Instruction, Lexer, Step};
use super::index::{Context, Lookup};
use super::run::{self, Outcome};
use super::{BuildError, BuildOptions, Message};
use crate::engine::Engine;
use crate::image::commit::Upper;
use crate::image::reference::Named;
use crate::image::{ConfigFile, ImageConfig};
use crate::model::container::Config;
use crate::model::EmptyObject;

/// The shell of shell-form commands when the image sets none.
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// Builds the Dockerfile of the context unpacked in `scratch`; answers the
/// image id. Messages go to `tx`; when its receiver goes (the client left)
/// the running step is stopped and the build ends.
pub async fn build(
    engine: &Arc<Engine>,
    options: &BuildOptions,
    scratch: &Scratch,
    context: Arc<Context>,
    tx: mpsc::Sender<Message>,
) -> Result<String, BuildError> {
    let name = if options.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        options.dockerfile.as_str()
    };
    let read = context.clone();
    let wanted = name.to_owned();
    let text = tokio::task::spawn_blocking(move || read.dockerfile(&wanted))
        .await
        .map_err(|e| BuildError::new(e.to_string()))?
        .map_err(BuildError::new)?;
    let file = dockerfile::parse(&text)
        .map_err(|e| BuildError::new(e.with_file(name.to_owned()).to_string()))?;
    let mut builder = Builder {
        engine,
        options,
        scratch,
        context,
        tx,
        lexer: Lexer::new(file.escape),
        step: 0,
        total: 0,
        meta: Vec::new(),
        used_args: BTreeSet::new(),
        stages: Vec::new(),
    };
    builder.build(&file).await
}

struct Builder<'a> {
    engine: &'a Arc<Engine>,
    options: &'a BuildOptions,
    scratch: &'a Scratch,
    context: Arc<Context>,
    tx: mpsc::Sender<Message>,
    lexer: Lexer,
    step: usize,
    total: usize,
    /// Values of the ARGs before the first FROM: (name, value if any).
    meta: Vec<(String, Option<String>)>,
    /// Build args some step used (the rest are warned about).
    used_args: BTreeSet<String>,
    /// Finished stages: name, image (none: an empty scratch stage).
    stages: Vec<(Option<String>, Option<String>)>,
}

/// Where a stage stands.
struct StageState {
    /// The current image (none: `FROM scratch` before any step).
    image: Option<String>,
    file: ConfigFile,
    /// ARGs declared in this stage, with their values.
    args: Vec<(String, Option<String>)>,
    /// Whether a CMD was set in this stage (an ENTRYPOINT then keeps it).
    cmd_set: bool,
}

impl StageState {
    fn config(&mut self) -> &mut ImageConfig {
        self.file.config.get_or_insert_with(ImageConfig::default)
    }

    fn env(&self) -> Vec<String> {
        self.file
            .config
            .as_ref()
            .and_then(|c| c.env.clone())
            .unwrap_or_default()
    }

    /// A step that runs nothing, as dockerd records it: the container
    /// config's `Cmd` (the shell, `#(nop) `, the comment) and the history's
    /// `created_by` (that `Cmd` joined by spaces).
    fn nop(&self, comment: &str) -> (String, Vec<String>) {
        let cmd: Vec<String> = self
            .shell()
            .into_iter()
            .chain(["#(nop) ".to_owned(), comment.to_owned()])
            .collect();
        (cmd.join(" "), cmd)
    }

    fn shell(&self) -> Vec<String> {
        self.file
            .config
            .as_ref()
            .and_then(|c| c.extra.get("Shell"))
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SHELL.iter().map(|s| (*s).to_owned()).collect())
    }
}

/// A step's change, to be its layer.
enum StepUpper {
    /// Read and left: a RUN container's upper directory (the container
    /// still has it), or a scratch one whose overlay is still mounted.
    Kept(PathBuf),
    /// A scratch overlay's upper directory, unmounted: the builder is done
    /// with it, and the store may take it for the layer as it is.
    Given(PathBuf),
}

impl StepUpper {
    fn scratch(path: PathBuf, unmounted: bool) -> Self {
        if unmounted {
            Self::Given(path)
        } else {
            Self::Kept(path)
        }
    }
}

fn split_env(entry: &str) -> (String, String) {
    match entry.split_once('=') {
        Some((k, v)) => (k.to_owned(), v.to_owned()),
        None => (entry.to_owned(), String::new()),
    }
}

fn short(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

fn key_of(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"vmctl-build-v1");
    for part in parts {
        hasher.update([0]);
        hasher.update(part.as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

impl Builder<'_> {
    async fn say(&self, text: impl Into<String>) -> Result<(), BuildError> {
        if self.options.quiet {
            return Ok(());
        }
        self.tx
            .send(Message::Stream(text.into()))
            .await
            .map_err(|_| cancelled())
    }

    async fn announce(&mut self, step: &Step) -> Result<(), BuildError> {
        self.step += 1;
        let line = format!("Step {}/{} : {}\n", self.step, self.total, step.original);
        self.say(line).await
    }

    async fn build(&mut self, file: &Dockerfile) -> Result<String, BuildError> {
        let last = match self.options.target.as_str() {
            "" => file.stages.len() - 1,
            target => file
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&target.to_lowercase()))
                .ok_or_else(|| {
                    BuildError::new(format!(
                        "failed to reach build target {target} in Dockerfile"
                    ))
                })?,
        };
        let label_step =
            (!self.options.labels.is_empty()).then(|| label_step(&self.options.labels));
        self.total = file.meta_args.len()
            + file.stages[..=last]
                .iter()
                .map(|s| 1 + s.steps.len())
                .sum::<usize>()
            + usize::from(label_step.is_some());

        for step in &file.meta_args {
            self.announce(step).await?;
            let Instruction::Arg(args) = &step.instruction else {
                continue;
            };
            for (name, default) in args {
                let env = self.meta_env();
                let default = match default {
                    Some(d) => Some(
                        self.lexer
                            .process_word(d, &env)
                            .map_err(|e| line_error(step, &e))?,
                    ),
                    None => None,
                };
                let value = match self.options.build_args.get(name) {
                    Some(given) => {
                        self.used_args.insert(name.clone());
                        given.clone().or(default)
                    }
                    None => default,
                };
                self.meta.retain(|(n, _)| n != name);
                self.meta.push((name.clone(), value));
            }
        }

        let mut image = None;
        for (index, stage) in file.stages[..=last].iter().enumerate() {
            let mut state = self.from(&stage.from).await?;
            for step in &stage.steps {
                self.announce(step).await?;
                self.dispatch(&mut state, step).await?;
            }
            if index == last {
                if let Some(step) = &label_step {
                    self.announce(step).await?;
                    self.dispatch(&mut state, step).await?;
                }
            }
            image = state.image.clone();
            self.stages.push((stage.name.clone(), state.image));
        }
        let Some(id) = image else {
            return Err(BuildError::new(
                "the Dockerfile makes an empty image (FROM scratch with no step)",
            ));
        };
        let unused: Vec<&String> = self
            .options
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.say(format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                names.join(" ")
            ))
            .await?;
        }
        let _ = self.tx.send(Message::Aux(id.clone())).await;
        if self.options.quiet {
            let _ = self.tx.send(Message::Stream(format!("{id}\n"))).await;
        } else {
            self.say(format!("Successfully built {}\n", short(&id)))
                .await?;
        }
        for tag in &self.options.tags {
            let (repo, tag_part) = (tag.name.clone(), tag.tag.clone().unwrap_or_default());
            let images = self.engine.images.clone();
            let id_for_tag = id.clone();
            tokio::task::spawn_blocking(move || images.tag(&id_for_tag, &repo, &tag_part))
                .await
                .map_err(|e| BuildError::new(e.to_string()))?
                .map_err(|e| BuildError::new(e.to_string()))?;
            let familiar = tag.familiar();
            self.engine.events.publish(
                "image",
                "tag",
                &id,
                BTreeMap::from([("name".to_owned(), familiar.clone())]),
            );
            self.say(format!("Successfully tagged {familiar}\n"))
                .await?;
        }
        Ok(id)
    }

    /// The meta ARGs with values, as an environment for substitution.
    fn meta_env(&self) -> Vec<(String, String)> {
        self.meta
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    /// FROM: the base (an earlier stage, `scratch`, or an image, pulled
    /// when missing or when `pull` asks), then its ONBUILD triggers.
    async fn from(&mut self, step: &Step) -> Result<StageState, BuildError> {
        self.announce(step).await?;
        let Instruction::From { image, .. } = &step.instruction else {
            return Err(line_error(step, "not a FROM"));
        };
        let name = self
            .lexer
            .process_word(image, &self.meta_env())
            .map_err(|e| line_error(step, &e))?;
        if name.is_empty() {
            return Err(line_error(step, "base name (${...}) should not be blank"));
        }
        let earlier = self
            .stages
            .iter()
            .rev()
            .find(|(n, _)| n.as_deref() == Some(&name.to_lowercase()))
            .map(|(_, image)| image.clone());
        let base = match earlier {
            Some(image) => image,
            None if name == "scratch" => None,
            None => Some(self.base_image(&name).await?),
        };
        let mut state = StageState {
            image: base.clone(),
            file: match &base {
                Some(id) => self.config_file(id)?,
                None => ConfigFile {
                    architecture: vmctl_oci::image::go_arch().to_owned(),
                    os: "linux".to_owned(),
                    config: Some(ImageConfig {
                        env: Some(vec![
                            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                                .to_owned(),
                        ]),
                        ..ImageConfig::default()
                    }),
                    ..ConfigFile::default()
                },
            },
            args: Vec::new(),
            cmd_set: false,
        };
        // A stage's author is its own MAINTAINER only: dockerd's classic
        // builder never keeps the base image's.
        state.file.author = String::new();
        if let Some(id) = &base {
            self.say(format!(" ---> {}\n", short(id))).await?;
        }
        let triggers: Vec<String> = state
            .file
            .config
            .as_ref()
            .and_then(|c| c.extra.get("OnBuild"))
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        if !triggers.is_empty() {
            // Triggers run once, in the image built on the base, not after.
            state.config().extra.remove("OnBuild");
            self.say(format!(
                "# Executing {} build trigger{}\n",
                triggers.len(),
                if triggers.len() == 1 { "" } else { "s" }
            ))
            .await?;
            for trigger in &triggers {
                let parsed = dockerfile::parse_trigger(trigger)
                    .map_err(|e| BuildError::new(format!("ONBUILD trigger {trigger:?}: {e}")))?;
                self.dispatch(&mut state, &parsed).await?;
            }
        }
        Ok(state)
    }

    fn config_file(&self, id: &str) -> Result<ConfigFile, BuildError> {
        self.engine
            .images
            .config_file(id)
            .map_err(|e| BuildError::new(e.to_string()))
    }

    /// The id of image `name`, pulled when it is missing (or `pull` asks).
    async fn base_image(&self, name: &str) -> Result<String, BuildError> {
        let named = Named::parse(name).map_err(|e| BuildError::new(e.to_string()))?;
        let full = named.full();
        let present = self.engine.images.resolve(&full).ok().map(|i| i.id);
        if let (Some(id), false) = (&present, self.options.pull) {
            return Ok(id.clone());
        }
        let auth = self.auth_for(&named);
        let plan = match self.engine.puller.resolve(&named, "", &auth).await {
            Ok(plan) => plan,
            Err(e) => {
                // `--pull` with the image here and the registry away: Docker fails.
                return Err(BuildError::new(e.to_string()));
            }
        };
        let (progress, mut lines) = mpsc::channel(64);
        let tx = self.tx.clone();
        let quiet = self.options.quiet;
        let forward = tokio::spawn(async move {
            while let Some(line) = lines.recv().await {
                if !quiet {
                    let _ = tx.send(Message::Pull(line)).await;
                }
            }
        });
        let result = self
            .engine
            .puller
            .run(&self.engine.images, plan, progress)
            .await;
        let _ = forward.await;
        result.map_err(|e| BuildError::new(e.to_string()))?;
        let familiar = named.familiar();
        self.engine.events.publish(
            "image",
            "pull",
            &familiar,
            BTreeMap::from([("name".to_owned(), familiar.clone())]),
        );
        self.engine
            .images
            .resolve(&full)
            .map(|i| i.id)
            .map_err(|e| BuildError::new(e.to_string()))
    }

    /// The credentials `X-Registry-Config` gave for `named`'s registry.
    fn auth_for(&self, named: &Named) -> oci_client::secrets::RegistryAuth {
        let domain = named.name.split('/').next().unwrap_or_default();
        let keys: &[&str] = if domain == "docker.io" {
            &[
                "https://index.docker.io/v1/",
                "index.docker.io",
                "docker.io",
            ]
        } else {
            &[domain]
        };
        keys.iter()
            .find_map(|k| self.options.auth.get(*k))
            .cloned()
            .unwrap_or(oci_client::secrets::RegistryAuth::Anonymous)
    }

    /// The environment steps substitute with: the image's ENV, then the
    /// stage's ARGs with values that ENV does not set.
    fn step_env(&self, state: &StageState) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = state.env().iter().map(|e| split_env(e)).collect();
        for (name, value) in self.args_env(state) {
            if !env.iter().any(|(k, _)| *k == name) {
                env.push((name, value));
            }
        }
        env
    }

    /// The stage's ARGs that have values and that ENV does not override,
    /// sorted: what RUN sees of them, and what its cache key holds.
    fn args_env(&self, state: &StageState) -> Vec<(String, String)> {
        let env: Vec<String> = state.env().iter().map(|e| split_env(e).0).collect();
        let mut out: Vec<(String, String)> = state
            .args
            .iter()
            .filter(|(k, _)| !env.contains(k))
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        out
    }

    async fn dispatch(&mut self, state: &mut StageState, step: &Step) -> Result<(), BuildError> {
        let env = self.step_env(state);
        let instruction = step
            .instruction
            .expand(&self.lexer, &env)
            .map_err(|e| line_error(step, &e))?;
        match instruction {
            Instruction::Run(command) => self.run(state, step, command).await,
            Instruction::Copy(spec) => self.copy(state, step, spec, false).await,
            Instruction::Add(spec) => self.copy(state, step, spec, true).await,
            Instruction::Workdir(dir) => self.workdir(state, &dir).await,
            Instruction::Arg(args) => {
                let mut words = Vec::new();
                for (name, default) in args {
                    let value = match self.options.build_args.get(&name) {
                        Some(given) => {
                            self.used_args.insert(name.clone());
                            given.clone().or(default.clone())
                        }
                        None => default.clone().or_else(|| {
                            // `ARG X` in a stage takes the global ARG's value.
                            self.meta
                                .iter()
                                .find(|(n, _)| *n == name)
                                .and_then(|(_, v)| v.clone())
                        }),
                    };
                    if default.is_none() && self.meta.iter().any(|(n, v)| *n == name && v.is_some())
                    {
                        self.used_args.insert(name.clone());
                    }
                    words.push(match &default {
                        Some(d) => format!("{name}={d}"),
                        None => name.clone(),
                    });
                    state.args.retain(|(n, _)| *n != name);
                    state.args.push((name, value));
                }
                self.metadata(state, &format!("ARG {}", words.join(" ")))
                    .await
            }
            other => {
                if matches!(other, Instruction::Healthcheck(_)) {
                    if let Some(note) = healthcheck_note(state) {
                        self.say(note).await?;
                    }
                }
                let comment = apply_metadata(state, &other, &self.lexer)?;
                self.metadata(state, &comment).await
            }
        }
    }

    /// A step that changes only the config: an image with no new layer.
    async fn metadata(&mut self, state: &mut StageState, comment: &str) -> Result<(), BuildError> {
        let (created_by, cmd) = state.nop(comment);
        let config = serde_json::to_string(&state.file.config).unwrap_or_default();
        let key = key_of(&["meta", &created_by, &config]);
        if self.cached(state, &key, &created_by).await? {
            return Ok(());
        }
        self.record(state, None, created_by, cmd, key).await?;
        self.result(state).await
    }

    /// Looks the step up in the cache; on a hit, moves the stage onto it.
    async fn cached(
        &mut self,
        state: &mut StageState,
        key: &str,
        created_by: &str,
    ) -> Result<bool, BuildError> {
        if self.options.no_cache {
            return Ok(false);
        }
        let found = if self.options.cache_from.is_empty() {
            self.engine.images.cached_step(state.image.as_deref(), key)
        } else {
            self.cache_from(state, key, created_by).await?
        };
        let Some(id) = found else {
            return Ok(false);
        };
        let file = self.config_file(&id)?;
        state.image = Some(id.clone());
        state.file = file;
        self.say(format!(" ---> Using cache\n ---> {}\n", short(&id)))
            .await?;
        Ok(true)
    }

    /// `--cache-from`: as dockerd's classic builder, only the named images
    /// are cache sources (they need not have been built here: a pulled or
    /// loaded image's history says its steps). The first whose history and
    /// layers begin with the stage's image and whose next step is this one
    /// gives the step: its layer and history entry on the stage's image.
    async fn cache_from(
        &self,
        state: &StageState,
        key: &str,
        created_by: &str,
    ) -> Result<Option<String>, BuildError> {
        let images = self.engine.images.clone();
        let sources = self.options.cache_from.clone();
        let parent = state.image.clone();
        let file = state.file.clone();
        let (key, created_by) = (key.to_owned(), created_by.to_owned());
        tokio::task::spawn_blocking(move || {
            for source in &sources {
                if let Some(index) = images.cache_from_step(parent.as_deref(), source, &created_by)
                {
                    return images
                        .restore_step(parent.as_deref(), source, index, file, &key)
                        .map(Some);
                }
            }
            Ok(None)
        })
        .await
        .map_err(|e| BuildError::new(e.to_string()))?
        .map_err(|e| BuildError::new(e.to_string()))
    }

    /// Records the step's image: the stage's config (with its history
    /// entry) on the parent, with `upper` as its layer when there is one.
    async fn record(
        &mut self,
        state: &mut StageState,
        upper: Option<StepUpper>,
        created_by: String,
        cmd: Vec<String>,
        key: String,
    ) -> Result<(), BuildError> {
        let now = crate::state::time::now_rfc3339();
        let mut file = state.file.clone();
        file.created = Some(now.clone());
        file.history.push(vmctl_oci::image::History {
            created: Some(now),
            created_by,
            author: file.author.clone(),
            comment: String::new(),
            empty_layer: upper.is_none(),
        });
        let mut container_config =
            serde_json::to_value(file.config.clone().unwrap_or_default()).unwrap_or(Value::Null);
        if let Some(object) = container_config.as_object_mut() {
            object.insert("Cmd".to_owned(), json!(cmd));
        }
        file.container_config = Some(container_config);
        let images = self.engine.images.clone();
        let parent = state.image.clone();
        let for_store = file.clone();
        let id = tokio::task::spawn_blocking(move || {
            let upper = upper.as_ref().map(|upper| match upper {
                StepUpper::Kept(path) => Upper::Kept(path),
                StepUpper::Given(path) => Upper::Given(path),
            });
            images.build_step(upper, parent.as_deref(), for_store, &key)
        })
        .await
        .map_err(|e| BuildError::new(e.to_string()))?
        .map_err(|e| BuildError::new(e.to_string()))?;
        // The stored config, not ours: the store marks a step that changed
        // nothing as an empty layer.
        let _ = file;
        state.file = self.config_file(&id)?;
        state.image = Some(id);
        Ok(())
    }

    /// ` ---> 3f2a…`: the image a step ended on.
    async fn result(&self, state: &StageState) -> Result<(), BuildError> {
        let id = state.image.as_deref().unwrap_or_default();
        self.say(format!(" ---> {}\n", short(id))).await
    }

    async fn run(
        &mut self,
        state: &mut StageState,
        step: &Step,
        command: Command,
    ) -> Result<(), BuildError> {
        let Some(parent) = state.image.clone() else {
            return Err(line_error(
                step,
                "RUN needs an image with a shell or a program: FROM scratch has none",
            ));
        };
        let cmd: Vec<String> = match command {
            Command::Shell(text) => state.shell().into_iter().chain([text]).collect(),
            Command::Exec(args) => args,
        };
        let args = self.args_env(state);
        for (name, _) in &args {
            self.used_args.insert(name.clone());
        }
        let created_by = if args.is_empty() {
            cmd.join(" ")
        } else {
            let words: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} {}", args.len(), words.join(" "), cmd.join(" "))
        };
        let config_json = serde_json::to_string(&state.file.config).unwrap_or_default();
        let key = key_of(&["run", &created_by, &config_json]);
        if self.cached(state, &key, &created_by).await? {
            return Ok(());
        }
        let image_config = state.file.config.clone().unwrap_or_default();
        let mut env = image_config.env.clone().unwrap_or_default();
        env.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
        let config = Config {
            image: parent.clone(),
            cmd: Some(cmd.clone()),
            entrypoint: Some(Vec::new()),
            env,
            user: image_config.user.clone(),
            working_dir: image_config.working_dir.clone(),
            ..Config::default()
        };
        let id = run::create(self.engine, self.options, config).await?;
        self.say(format!(" ---> Running in {}\n", short(&id)))
            .await
            .ok();
        let outcome = run::run(self.engine, &id, &self.tx, self.options.quiet).await;
        let code = match outcome {
            Ok(Outcome::Exited(code)) => code,
            Ok(Outcome::Cancelled) => {
                run::remove(self.engine, &id).await;
                return Err(cancelled());
            }
            Err(e) => {
                run::remove(self.engine, &id).await;
                return Err(e);
            }
        };
        if code != 0 {
            if self.options.force_remove || self.options.remove {
                run::remove(self.engine, &id).await;
            }
            return Err(BuildError {
                message: format!(
                    "The command '{}' returned a non-zero code: {code}",
                    cmd.join(" ")
                ),
                code: Some(code),
            });
        }
        let upper = self.engine.layout.container(&id).join("upper");
        let upper = StepUpper::Kept(upper);
        let recorded = self.record(state, Some(upper), created_by, cmd, key).await;
        if self.options.remove || self.options.force_remove {
            self.say(format!("Removing intermediate container {}\n", short(&id)))
                .await
                .ok();
            run::remove(self.engine, &id).await;
        }
        recorded?;
        self.result(state).await
    }

    /// The root a `COPY --from` reads: an earlier stage (by name or index)
    /// or an image (pulled when missing), mounted read-only.
    async fn source_root(&self, from: &str) -> Result<(PathBuf, Option<PathBuf>), BuildError> {
        let stage = match from.parse::<usize>() {
            Ok(index) => Some(
                self.stages
                    .get(index)
                    .ok_or_else(|| {
                        BuildError::new(format!("invalid from flag value {from}: refers to current build stage or a later one"))
                    })?
                    .1
                    .clone(),
            ),
            Err(_) => self
                .stages
                .iter()
                .rev()
                .find(|(n, _)| n.as_deref() == Some(&from.to_lowercase()))
                .map(|(_, image)| image.clone()),
        };
        let image = match stage {
            Some(image) => image,
            None => Some(self.base_image(from).await?),
        };
        let layers = match &image {
            Some(id) => {
                self.engine
                    .images
                    .resolve(id)
                    .map_err(|e| BuildError::new(e.to_string()))?
                    .layers
            }
            None => Vec::new(),
        };
        let dir = self
            .scratch
            .fresh("from")
            .map_err(|e| BuildError::new(format!("cannot make a scratch directory: {e}")))?;
        let merged = self
            .scratch
            .mount(&layers, &dir)
            .map_err(|e| BuildError::new(format!("cannot mount {from}: {e}")))?;
        Ok((merged.clone(), Some(merged)))
    }

    async fn copy(
        &mut self,
        state: &mut StageState,
        step: &Step,
        spec: CopySpec,
        add: bool,
    ) -> Result<(), BuildError> {
        let what = if add { "ADD" } else { "COPY" };
        let fail = |e: String| line_error(step, &format!("{what} failed: {e}"));
        let (src_root, mounted) = match &spec.from {
            Some(from) if !add => {
                let (root, mounted) = self.source_root(from).await?;
                (Some(root), mounted)
            }
            Some(_) => return Err(fail("ADD has no --from".to_owned())),
            None => (None, None),
        };
        let result = self
            .copy_from(state, step, &spec, add, src_root.as_deref())
            .await;
        if let Some(merged) = mounted {
            let _ = self.scratch.unmount(&merged);
        }
        result
    }

    async fn copy_from(
        &mut self,
        state: &mut StageState,
        step: &Step,
        spec: &CopySpec,
        add: bool,
        src_root: Option<&Path>,
    ) -> Result<(), BuildError> {
        let what = if add { "ADD" } else { "COPY" };
        let fail = |e: String| line_error(step, &format!("{what} failed: {e}"));
        if spec
            .sources
            .iter()
            .any(|s| s.starts_with("http://") || s.starts_with("https://"))
        {
            return Err(fail(
                "remote URLs are not fetched by this engine's builder: download the file into the build context and ADD it from there".to_owned(),
            ));
        }
        let mode = match &spec.chmod {
            Some(text) => Some(
                u32::from_str_radix(text, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| fail(format!("invalid --chmod={text}: an octal mode")))?,
            ),
            None => None,
        };
        // The sources and their hash: from the context's index (no file
        // read), or found and hashed in a root on disk.
        let root = src_root.map(Path::to_owned);
        let context = self.context.clone();
        let patterns = spec.sources.clone();
        let (sources, hash) = tokio::task::spawn_blocking(move || {
            let on_disk = |root: &Path| {
                let sources = copy::expand_sources(root, &patterns)?;
                let hash = copy::hash_sources(root, &sources)?;
                Ok::<_, copy::CopyError>((sources, hash))
            };
            match &root {
                Some(root) => on_disk(root).map_err(|e| e.to_string()),
                None => match context.lookup(&patterns).map_err(|e| e.to_string())? {
                    Lookup::Found(sources, hash) => Ok((sources, hash)),
                    Lookup::Unpack => {
                        let dir = context.unpacked().map_err(|e| e.to_string())?;
                        on_disk(dir).map_err(|e| e.to_string())
                    }
                },
            }
        })
        .await
        .map_err(|e| BuildError::new(e.to_string()))?
        .map_err(fail)?;
        let workdir = state
            .file
            .config
            .as_ref()
            .map(|c| c.working_dir.clone())
            .unwrap_or_default();
        let dest = absolute(&workdir, &spec.dest);
        let (created_by, cmd) = state.nop(&format!("{what} {hash} in {dest} "));
        let config_json = serde_json::to_string(&state.file.config).unwrap_or_default();
        let key = key_of(&[
            "copy",
            &created_by,
            spec.chown.as_deref().unwrap_or_default(),
            spec.chmod.as_deref().unwrap_or_default(),
            &config_json,
        ]);
        if self.cached(state, &key, &created_by).await? {
            return Ok(());
        }
        let dir = self
            .scratch
            .fresh("step")
            .map_err(|e| BuildError::new(format!("cannot make a scratch directory: {e}")))?;
        let layers = self.layers(state)?;
        let merged = self
            .scratch
            .mount(&layers, &dir)
            .map_err(|e| BuildError::new(e.to_string()))?;
        let chown = spec.chown.clone();
        let src_root = src_root.map(Path::to_owned);
        let context = self.context.clone();
        let target = merged.clone();
        let unpack = add && spec.from.is_none();
        let copied = tokio::task::spawn_blocking(move || {
            let owner = match chown {
                Some(spec) => {
                    // As dockerd: a user alone names the group too
                    // (`--chown=1000` is 1000:1000, `--chown=app` app:app).
                    let spec = if spec.contains(':') {
                        spec
                    } else {
                        format!("{spec}:{spec}")
                    };
                    // Said as dockerd says it, with no step prefix.
                    let user = crate::runtime::user::resolve(&target, &spec, &[])
                        .map_err(|e| Err(chown_error(&e)))?;
                    Some((user.uid, user.gid))
                }
                None => None,
            };
            let ownership = Ownership { owner, mode };
            let src = match src_root {
                Some(root) => root,
                None => {
                    // A COPY of the context's files and directories reads
                    // them from its tar; anything else (ADD, links…)
                    // unpacks the context, now that a copy has to run.
                    let tree = if add {
                        None
                    } else {
                        context.tree(&sources).map_err(|e| Ok(e.to_string()))?
                    };
                    if let Some(tree) = tree {
                        return copy::copy_items(&tree, tree.items(), &target, &dest, &ownership)
                            .map_err(|e| Ok(e.to_string()));
                    }
                    context.unpacked().map(Path::to_owned).map_err(|e| {
                        Ok(format!(
                            "the build context is not a readable tar archive: {e}"
                        ))
                    })?
                }
            };
            copy::copy(&src, &sources, &target, &dest, &ownership, unpack)
                .map_err(|e| Ok(e.to_string()))
        })
        .await
        .map_err(|e| BuildError::new(e.to_string()))?;
        let unmounted = self.scratch.unmount(&merged).is_ok();
        // Ok: a copy's failure (the step's prefix); Err: said as it is.
        copied.map_err(|e: Result<String, String>| match e {
            Ok(copy) => fail(copy),
            Err(plain) => BuildError::new(plain),
        })?;
        let upper = StepUpper::scratch(dir.join("upper"), unmounted);
        self.record(state, Some(upper), created_by, cmd, key)
            .await?;
        self.result(state).await
    }

    fn layers(&self, state: &StageState) -> Result<Vec<PathBuf>, BuildError> {
        match &state.image {
            Some(id) => self
                .engine
                .images
                .resolve(id)
                .map(|i| i.layers)
                .map_err(|e| BuildError::new(e.to_string())),
            None => Ok(Vec::new()),
        }
    }

    /// WORKDIR: the config's working directory, made in the image (owned
    /// by root, 0755) when it is missing there.
    async fn workdir(&mut self, state: &mut StageState, dir: &str) -> Result<(), BuildError> {
        let current = state
            .file
            .config
            .as_ref()
            .map(|c| c.working_dir.clone())
            .unwrap_or_default();
        let path = absolute(&current, dir);
        let path = format!("/{}", copy::clean_in_root(&path));
        state.config().working_dir = path.clone();
        let comment = format!("WORKDIR {path}");
        let (created_by, cmd) = state.nop(&comment);
        let config_json = serde_json::to_string(&state.file.config).unwrap_or_default();
        let key = key_of(&["workdir", &created_by, &config_json]);
        if self.cached(state, &key, &created_by).await? {
            return Ok(());
        }
        let layers = self.layers(state)?;
        let scratch_dir = self
            .scratch
            .fresh("step")
            .map_err(|e| BuildError::new(format!("cannot make a scratch directory: {e}")))?;
        let merged = self
            .scratch
            .mount(&layers, &scratch_dir)
            .map_err(|e| BuildError::new(e.to_string()))?;
        let target = merged.clone();
        let want = path.clone();
        let made = tokio::task::spawn_blocking(move || copy::make_missing_dir(&target, &want))
            .await
            .map_err(|e| BuildError::new(e.to_string()))?;
        let unmounted = self.scratch.unmount(&merged).is_ok();
        let made = made.map_err(|e| BuildError::new(format!("WORKDIR {path}: {e}")))?;
        let upper = made.then(|| StepUpper::scratch(scratch_dir.join("upper"), unmounted));
        self.record(state, upper, created_by, cmd, key).await?;
        self.result(state).await
    }
}

/// `--chown` naming nobody in the image's files, in dockerd's words.
fn chown_error(e: &crate::runtime::user::UserError) -> String {
    use crate::runtime::user::UserError;
    let detail = match e {
        UserError::NoSuchUser(user) => {
            format!("can't find uid for user {user}: no such user: {user}")
        }
        UserError::NoSuchGroup(group) => {
            format!("can't find gid for group {group}: no such group: {group}")
        }
        other => other.to_string(),
    };
    format!("unable to convert uid/gid chown string to host mapping: {detail}")
}

fn cancelled() -> BuildError {
    BuildError::new("the build was cancelled: the client went away")
}

fn line_error(step: &Step, message: &str) -> BuildError {
    BuildError::new(format!("Dockerfile:{}: {message}", step.line))
}

/// A list as Go's `%q` prints it (`["nginx" "-g" "daemon off;"]`), which is
/// how dockerd's classic builder writes CMD and ENTRYPOINT into history.
fn go_quoted(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| serde_json::to_string(w).unwrap_or_default())
        .collect();
    format!("[{}]", quoted.join(" "))
}

/// `path` made absolute against `workdir`, a trailing `/` kept.
fn absolute(workdir: &str, path: &str) -> String {
    if path.starts_with('/') {
        return path.to_owned();
    }
    let base = if workdir.is_empty() { "/" } else { workdir };
    let joined = format!("{}/{}", base.trim_end_matches('/'), path);
    let trailing = path.ends_with('/') || path == "." || path.ends_with("/.");
    let clean = format!("/{}", copy::clean_in_root(&joined));
    if trailing && clean != "/" {
        format!("{clean}/")
    } else {
        clean
    }
}

/// The LABEL step the `labels` option adds at the end of the last stage, as
/// dockerd's classic builder adds it.
fn label_step(labels: &BTreeMap<String, String>) -> Step {
    let words: Vec<String> = labels.iter().map(|(k, v)| format!("{k:?}='{v}'")).collect();
    Step {
        line: 0,
        original: format!("LABEL {}", words.join(" ")),
        instruction: Instruction::Label(
            labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        ),
    }
}

/// dockerd's note when a HEALTHCHECK replaces one that was on
/// (`Note: overriding previous HEALTHCHECK: [CMD-SHELL echo healthy]`).
fn healthcheck_note(state: &mut StageState) -> Option<String> {
    let test = state
        .config()
        .extra
        .get("Healthcheck")?
        .get("Test")?
        .clone();
    let test: Vec<String> = serde_json::from_value(test).ok()?;
    test.first().is_some_and(|t| t != "NONE").then(|| {
        format!(
            "Note: overriding previous HEALTHCHECK: [{}]\n",
            test.join(" ")
        )
    })
}

/// Applies a metadata instruction (already expanded) to the stage's config;
/// answers the history comment Docker writes for it.
fn apply_metadata(
    state: &mut StageState,
    instruction: &Instruction,
    lexer: &Lexer,
) -> Result<String, BuildError> {
    let _ = lexer;
    let shell = state.shell();
    let to_command = |command: &Command| -> Vec<String> {
        match command {
            Command::Shell(text) => shell.iter().cloned().chain([text.clone()]).collect(),
            Command::Exec(args) => args.clone(),
        }
    };
    Ok(match instruction {
        Instruction::Env(pairs) => {
            let config = state.config();
            let mut env = config.env.clone().unwrap_or_default();
            let mut words = Vec::new();
            for (key, value) in pairs {
                env.retain(|e| split_env(e).0 != *key);
                env.push(format!("{key}={value}"));
                words.push(format!("{key}={value}"));
            }
            config.env = Some(env);
            format!("ENV {}", words.join(" "))
        }
        Instruction::Label(pairs) => {
            let config = state.config();
            let labels = config.labels.get_or_insert_with(BTreeMap::new);
            let mut words = Vec::new();
            for (key, value) in pairs {
                labels.insert(key.clone(), value.clone());
                words.push(format!("{key}={value}"));
            }
            format!("LABEL {}", words.join(" "))
        }
        Instruction::Expose(ports) => {
            let config = state.config();
            let exposed = config.exposed_ports.get_or_insert_with(BTreeMap::new);
            let mut words = Vec::new();
            for port in ports {
                let port = if port.contains('/') {
                    port.to_lowercase()
                } else {
                    format!("{port}/tcp")
                };
                // dockerd lists each port of a range (`7000-7002/tcp`).
                let (number, proto) = port.split_once('/').unwrap_or((port.as_str(), "tcp"));
                let range = number
                    .split_once('-')
                    .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)));
                match range {
                    Some((first, last)) if first <= last => {
                        for n in first..=last {
                            exposed.insert(format!("{n}/{proto}"), EmptyObject::default());
                        }
                    }
                    _ => {
                        exposed.insert(port.clone(), EmptyObject::default());
                    }
                }
                words.push(port);
            }
            format!("EXPOSE {}", words.join(" "))
        }
        Instruction::User(user) => {
            state.config().user = user.clone();
            format!("USER {user}")
        }
        Instruction::Volume(paths) => {
            let config = state.config();
            let volumes = config.volumes.get_or_insert_with(BTreeMap::new);
            for path in paths {
                if path.trim().is_empty() {
                    return Err(BuildError::new(
                        "VOLUME specified can not be an empty string",
                    ));
                }
                volumes.insert(path.clone(), EmptyObject::default());
            }
            format!("VOLUME [{}]", paths.join(" "))
        }
        Instruction::Stopsignal(signal) => {
            crate::engine::stop::parse_signal(signal)
                .map_err(|_| BuildError::new(format!("Invalid signal: {signal}")))?;
            state.config().stop_signal = signal.clone();
            format!("STOPSIGNAL {signal}")
        }
        Instruction::Cmd(command) => {
            let cmd = to_command(command);
            state.cmd_set = true;
            state.config().cmd = Some(cmd.clone());
            format!("CMD {}", go_quoted(&cmd))
        }
        Instruction::Entrypoint(command) => {
            let entrypoint = to_command(command);
            let cmd_set = state.cmd_set;
            let config = state.config();
            config.entrypoint = Some(entrypoint.clone());
            // An ENTRYPOINT drops a CMD inherited from the base image.
            if !cmd_set {
                config.cmd = None;
            }
            format!("ENTRYPOINT {}", go_quoted(&entrypoint))
        }
        Instruction::Shell(shell) => {
            state
                .config()
                .extra
                .insert("Shell".to_owned(), json!(shell));
            format!("SHELL [{}]", shell.join(" "))
        }
        Instruction::Healthcheck(check) => {
            let previous = state.config().extra.get("Healthcheck").cloned();
            let mut value = match check {
                None => json!({"Test": ["NONE"]}),
                Some(check) => {
                    let mut value = json!({"Test": check.test});
                    let nanos = |d: &std::time::Duration| d.as_nanos() as u64;
                    if let Some(d) = &check.interval {
                        value["Interval"] = json!(nanos(d));
                    }
                    if let Some(d) = &check.timeout {
                        value["Timeout"] = json!(nanos(d));
                    }
                    if let Some(d) = &check.start_period {
                        value["StartPeriod"] = json!(nanos(d));
                    }
                    if let Some(r) = check.retries {
                        value["Retries"] = json!(r);
                    }
                    value
                }
            };
            // dockerd fills the timings a check leaves unset (NONE too) from
            // the base's check: its container create merges the image config.
            if let Some(previous) = previous {
                for field in ["Interval", "Timeout", "StartPeriod", "Retries"] {
                    if value.get(field).is_none() {
                        if let Some(v) = previous.get(field) {
                            value[field] = v.clone();
                        }
                    }
                }
            }
            state
                .config()
                .extra
                .insert("Healthcheck".to_owned(), value.clone());
            format!("HEALTHCHECK {value}")
        }
        Instruction::Onbuild(trigger) => {
            let config = state.config();
            let mut triggers: Vec<String> = config
                .extra
                .get("OnBuild")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            triggers.push(trigger.clone());
            config.extra.insert("OnBuild".to_owned(), json!(triggers));
            format!("ONBUILD {trigger}")
        }
        Instruction::Maintainer(name) => {
            state.file.author = name.clone();
            format!("MAINTAINER {name}")
        }
        other => {
            return Err(BuildError::new(format!(
                "{} cannot be used here",
                other.keyword()
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_made_absolute_against_workdir() {
        assert_eq!(absolute("", "app"), "/app");
        assert_eq!(absolute("/srv", "app/"), "/srv/app/");
        assert_eq!(absolute("/srv", "."), "/srv/");
        assert_eq!(absolute("/srv", "/abs"), "/abs");
        assert_eq!(absolute("/srv/x", "../y"), "/srv/y");
    }

    #[test]
    fn labels_option_becomes_one_label_step() {
        let step = label_step(&BTreeMap::from([("a".to_owned(), "b c".to_owned())]));
        assert_eq!(step.original, "LABEL \"a\"='b c'");
        assert_eq!(
            step.instruction,
            Instruction::Label(vec![("a".to_owned(), "b c".to_owned())])
        );
    }
}
