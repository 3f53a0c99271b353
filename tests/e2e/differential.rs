//! Differential suite: the same docker CLI command sequences against vmctl
//! and against a real dockerd (see `vmctl_tests::Dockerd`), comparing exit
//! codes, stdout, stderr of errors, and the shape (the set of keys, at every
//! depth) of `inspect` documents.
//!
//! Outputs are normalised before comparison: ids, timestamps and durations
//! become placeholders, table columns are split on their padding, the CLI's
//! `docker: ` prefix goes, and a few daemon messages whose wording changed
//! between dockerd 20.10 and current moby are mapped to one form. What still
//! differs must be listed in [`INTENDED_DIFFERENCES`] (and in
//! `tests/DIFFERENCES.md`) or the test fails.

use std::collections::BTreeSet;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;
use vmctl_tests::{require_dockerd, Dockerd, Engine};

/// Differences between vmctl and dockerd that are meant, each with its reason.
/// A key is `<case>: <path>` for an inspect shape, `<case> #<step> <stream>`
/// for a command. Keep `tests/DIFFERENCES.md` in step.
const INTENDED_DIFFERENCES: &[(&str, &str)] = &[
    (
        "inspect: Config.NetworkDisabled",
        "the oracle dockerd runs with --bridge=none, so it disables networking of default-mode containers",
    ),
    (
        "inspect: NetworkSettings.Ports.80/tcp",
        "the oracle dockerd has no bridge and lists no exposed ports; Docker with a bridge lists them as vmctl does",
    ),
    (
        "inspect: NetworkSettings.Networks.bridge.DNSNames",
        "field of API 1.44; the oracle dockerd 20.10 speaks API 1.41",
    ),
    (
        "inspect: HostConfig.KernelMemory",
        "kernel memory limits were removed in API 1.42; current moby omits the field",
    ),
    (
        "inspect: HostConfig.KernelMemoryTCP",
        "kernel memory limits were removed in API 1.42; current moby omits the field",
    ),
    (
        "exec #3 exit code",
        "a missing command exits 127 as in current moby (>= 23); dockerd 20.10 answers 126",
    ),
    (
        "images: GraphDriver.Data.MergedDir",
        "image storage is vmctl's own, not overlay2 directories of the image",
    ),
    (
        "images: GraphDriver.Data.WorkDir",
        "image storage is vmctl's own, not overlay2 directories of the image",
    ),
];

/// What a step compares besides the exit code.
#[derive(Clone, Copy, Debug)]
enum Check {
    /// The exit code only (setup steps).
    Code,
    /// The exit code and stdout.
    Out,
    /// The exit code, stdout and stderr.
    All,
    /// The exit code, stderr, and stdout as a table whose listed columns
    /// (0-based) vary from run to run.
    Table(&'static [usize]),
    /// The exit code and the set of keys of the JSON document on stdout.
    Shape,
    /// The exit code, stderr, and stdout's lines in any order (dockerd's
    /// `diff` walks a Go map when its overlay2 uses the naive diff).
    Lines,
}

/// One docker CLI invocation, written as a shell would split it.
struct Step(&'static str, Check);

/// A named sequence of steps, run from a clean engine (no containers).
struct Case {
    name: &'static str,
    steps: &'static [Step],
}

use Check::{All, Code, Lines, Out, Shape, Table};

const CASES: &[Case] = &[
    Case {
        // A node in no swarm: 503 and dockerd's words; no plugins.
        name: "swarm",
        steps: &[
            Step("node ls", All),
            Step("node inspect self", All),
            Step("service ls", All),
            Step("service ps web", All),
            Step("secret ls", All),
            Step("config ls", All),
            Step("swarm leave", All),
            Step("plugin ls", All),
        ],
    },
    Case {
        // `docker diff`: added, changed and deleted paths, parents marked
        // changed, the engine's own /etc files left out.
        name: "diff",
        steps: &[
            Step(
                "run --name changed hello sh -c 'mkdir -p /new/deep && echo x > /new/deep/f && echo more >> /etc/passwd && rm /bin/ls && touch /bin/added'",
                Code,
            ),
            Step("diff changed", Lines),
            Step("run --name quiet hello true", Code),
            Step("diff quiet", Lines),
            Step("run -d --name live hello sh -c 'echo up > /up; sleep 1000'", Code),
            Step("exec live sh -c 'while [ ! -e /up ]; do sleep 0.1; done; rm -f /etc/group'", Code),
            Step("diff live", Lines),
            Step("rm -f live", Code),
            Step("diff nosuch", All),
        ],
    },
    Case {
        // Prune with label filters, and the space the removed held.
        name: "container-prune",
        steps: &[
            Step("run --name keep --label keep=1 hello true", Code),
            Step(
                "run --name gone hello sh -c 'dd if=/dev/zero of=/big bs=1024 count=2048 2>/dev/null'",
                Code,
            ),
            Step("container prune -f --filter label!=keep=1", All),
            Step("ps -a --format {{.Names}}", All),
            Step("container prune -f --filter bogus=1", All),
            Step("container prune -f --filter until=2000-01-01T00:00:00Z", All),
            Step("container prune -f --filter label=keep", All),
        ],
    },
    Case {
        name: "run",
        steps: &[
            Step("run --rm hello echo hi", All),
            Step("run --rm hello sh -c 'echo out; echo err >&2'", All),
            Step("run --rm -e A=1 -w /www hello sh -c 'echo $A; pwd'", All),
            Step("ps -aq", All),
        ],
    },
    Case {
        name: "exit-codes",
        steps: &[
            Step("run --rm hello sh -c 'exit 3'", All),
            Step("run --rm hello no-such-program", All),
            Step("run --rm hello /etc/passwd", All),
            Step("run --rm --init hello sh -c 'kill -9 $$'", All),
            Step("run --name killed -d hello sleep 1000", Code),
            Step("kill killed", Out),
            Step("wait killed", All),
        ],
    },
    Case {
        name: "logs",
        steps: &[
            Step(
                "run -d --name logger hello sh -c 'echo one; echo two; echo three >&2'",
                All,
            ),
            Step("wait logger", All),
            Step("logs logger", All),
            Step("logs -t logger", All),
            // stdout and stderr are read apart, so only one stream has a
            // deterministic last line.
            Step(
                "run -d --name tailed hello sh -c 'echo one; echo two; echo three'",
                Code,
            ),
            Step("wait tailed", All),
            Step("logs --tail 1 tailed", All),
            Step("logs --tail 2 -t tailed", All),
            Step("logs nosuch", All),
            Step("logs --tail 1 nosuch", All),
            Step("logs -f logger", All),
        ],
    },
    Case {
        name: "exec",
        steps: &[
            Step("run -d --name ex hello sleep 1000", Code),
            Step("exec ex sh -c 'echo out; echo err >&2; exit 4'", All),
            Step("exec -e B=2 -w /www ex sh -c 'echo $B; pwd'", All),
            Step("exec ex no-such-program", All),
            Step("exec -t ex tty", All),
            Step("exec ex /etc/passwd", All),
            Step("exec nosuch true", All),
            Step("pause ex", Code),
            Step("exec ex true", All),
            Step("unpause ex", Code),
            Step("stop -t 1 ex", Code),
            Step("exec ex true", All),
        ],
    },
    Case {
        name: "lifecycle",
        steps: &[
            Step("run -d --name life hello sleep 1000", Code),
            Step("stop -t 1 life", All),
            Step("inspect -f '{{.State.Status}} {{.State.ExitCode}}' life", All),
            Step("kill life", All),
            Step("start life", All),
            Step("inspect -f '{{.State.Status}} {{.State.Running}}' life", All),
            Step("kill -s USR1 life", All),
            Step("kill -s BOGUS life", All),
            Step("start life", All),
            Step("kill -s KILL life", All),
            Step("stop life", All),
            Step("inspect -f '{{.State.Status}} {{.State.ExitCode}}' life", All),
            Step("restart -t 1 life", All),
            Step("inspect -f '{{.State.Status}} {{.RestartCount}}' life", All),
            Step("stop nosuch", All),
            Step("start nosuch", All),
        ],
    },
    Case {
        name: "ps",
        steps: &[
            Step("run -d --name psone hello sleep 1000", Code),
            Step("create --name pstwo hello true", Code),
            Step("run --name psthree hello true", Code),
            Step("ps", All),
            Step("ps -a", All),
            Step("ps -q", All),
            Step("ps -aq", All),
            Step("ps --filter status=exited", All),
            Step("ps -a --filter status=exited", All),
            Step("ps -a --filter status=created", All),
            Step("ps --filter name=psone", All),
            Step("ps -a --filter name=ps --format '{{.Names}} {{.Status}}'", All),
            Step("ps -a --filter name=nomatch", All),
            Step("ps -a --filter exited=0 --format '{{.Names}}'", All),
            Step("ps --no-trunc --format '{{.Command}}'", All),
        ],
    },
    Case {
        name: "inspect",
        steps: &[
            Step(
                "run -d --name insp -e FOO=bar --restart on-failure:3 hello sleep 1000",
                Code,
            ),
            Step("inspect insp", Shape),
            Step(
                "inspect -f '{{json .State.Status}} {{json .State.ExitCode}} {{json .State.Running}}' insp",
                All,
            ),
            Step(
                "inspect -f '{{json .Config.Cmd}} {{json .Config.Env}} {{json .Config.Entrypoint}}' insp",
                All,
            ),
            Step(
                "inspect -f '{{json .HostConfig.RestartPolicy}} {{json .HostConfig.NetworkMode}}' insp",
                All,
            ),
            Step(
                "inspect -f '{{json .Name}} {{json .Path}} {{json .Args}} {{json .Config.Image}}' insp",
                All,
            ),
            Step("create --name created hello", Code),
            Step("inspect created", Shape),
            Step("inspect -f '{{json .State.Status}} {{json .Config.Cmd}}' created", All),
            Step("inspect nosuch", All),
        ],
    },
    Case {
        name: "images",
        steps: &[
            Step("images", All),
            Step("images -q", All),
            Step("image inspect hello", Shape),
            Step(
                "image inspect -f '{{json .RepoTags}} {{.Os}} {{json .Config.Cmd}} {{json .Config.Env}}' hello",
                All,
            ),
            Step("image inspect nosuchimg", All),
            Step("rmi nosuchimg", All),
        ],
    },
    Case {
        name: "volumes",
        steps: &[
            Step("volume create dvol", All),
            Step("volume ls", All),
            Step("volume inspect dvol", Shape),
            Step("volume inspect -f '{{.Name}} {{.Driver}} {{.Scope}}' dvol", All),
            Step("volume rm dvol", All),
            Step("volume rm dvol", All),
            Step("volume inspect dvol", All),
            Step("run -d --name user -v dvol:/data hello sleep 1000", Code),
            Step("volume ls -q", All),
            Step("volume rm dvol", All),
            Step("inspect -f '{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}' user", All),
        ],
    },
    Case {
        name: "network",
        steps: &[
            Step("run --rm --network none hello ip -o link", All),
            Step("run --rm --network host hello ip -o link", All),
            Step("run -d --name netnone --network none hello sleep 1000", Code),
            Step("inspect -f '{{.HostConfig.NetworkMode}}' netnone", All),
            Step("run -d --name nethost --network host hello sleep 1000", Code),
            Step("inspect -f '{{.HostConfig.NetworkMode}}' nethost", All),
        ],
    },
    Case {
        name: "errors",
        steps: &[
            Step("run --pull never --rm nosuchimg", All),
            Step("create --pull never nosuchimg", All),
            Step("run -d --name dup hello sleep 1000", Code),
            Step("run --name dup hello true", All),
            Step("rm dup", All),
            Step("rm nosuch", All),
            Step("rm -f dup", Out),
            Step("run --rm --memory 1k hello true", All),
            Step("run --rm --cpus 99 hello true", All),
            Step("run --restart bogus hello true", All),
            Step("run --rm --restart always hello true", All),
        ],
    },
    Case {
        // `docker cp`: a file and a directory in and out (running and
        // stopped), a directory's contents, and dockerd's errors.
        name: "cp",
        steps: &[
            Step("run -d --name cpbox hello sleep 1000", Code),
            Step("cp Cargo.toml cpbox:/tmp/", All),
            Step("cp src cpbox:/tmp/src", All),
            Step("cp src/. cpbox:/root", All),
            Step("exec cpbox sh -c 'cd /tmp && ls -R src /root && md5sum Cargo.toml'", All),
            Step("cp cpbox:/tmp/Cargo.toml -", Code),
            Step("cp cpbox:/tmp/src -", Code),
            Step("cp cpbox:/nope -", All),
            Step("cp Cargo.toml cpbox:/nope/x", All),
            Step("cp Cargo.toml cpbox:/etc/passwd/x", All),
            Step("create --name cpstopped hello true", Code),
            Step("cp Cargo.toml cpstopped:/", All),
            Step("cp cpstopped:/Cargo.toml -", Code),
            Step("cp cpstopped:/nope -", All),
        ],
    },
    Case {
        name: "rename",
        steps: &[
            Step("create --name before hello true", Code),
            Step("rename before after", All),
            Step("ps -a --format '{{.Names}}'", All),
            Step("rename after after", All),
            Step("rename nosuch other", All),
            Step("create --name taken hello true", Code),
            Step("rename after taken", All),
        ],
    },
    Case {
        name: "pause",
        steps: &[
            Step("run -d --name paused hello sleep 1000", Code),
            Step("pause paused", All),
            Step("ps --format '{{.Names}} {{.Status}}'", All),
            Step("inspect -f '{{.State.Status}} {{.State.Paused}}' paused", All),
            Step("pause paused", All),
            Step("unpause paused", All),
            Step("unpause paused", All),
            Step("inspect -f '{{.State.Status}} {{.State.Paused}}' paused", All),
        ],
    },
    Case {
        name: "top",
        steps: &[
            Step("run -d --name topbox hello sleep 1000", Code),
            // PID, PPID, C, STIME and TIME vary; UID, TTY and CMD do not.
            Step("top topbox", Table(&[1, 2, 3, 4, 6])),
            Step("stop -t 1 topbox", Code),
            Step("top topbox", All),
            Step("top nosuch", All),
        ],
    },
    Case {
        name: "wait",
        steps: &[
            Step("run -d --name waiter hello sh -c 'exit 7'", Code),
            Step("wait waiter", All),
            Step("wait nosuch", All),
        ],
    },
    Case {
        // `docker update`: dockerd's refusals, the record after an update,
        // and `docker stats` of a stopped container.
        name: "update",
        steps: &[
            Step("run -d --name upd hello sleep 1000", Code),
            Step("update --memory 64m upd", All),
            Step("update --memory 1m --memory-swap 2m upd", All),
            Step("update --memory 64m --memory-swap 32m upd", All),
            Step("update --cpus 1 --cpu-quota 50000 upd", All),
            Step("update --memory 64m nosuch", All),
            Step("update --cpuset-cpus 0-a upd", All),
            Step("update --cpuset-cpus 4095 upd", All),
            Step("update --memory-reservation 1m upd", All),
            Step("update --restart sometimes upd", All),
            Step("update --pids-limit 50 --restart on-failure:3 upd", All),
            Step(
                "inspect -f '{{.HostConfig.PidsLimit}} {{.HostConfig.RestartPolicy.Name}} {{.HostConfig.RestartPolicy.MaximumRetryCount}}' upd",
                All,
            ),
            Step("update --pids-limit -1 upd", All),
            Step("update --blkio-weight 300 upd", All),
            Step("update --blkio-weight 5 upd", All),
            Step("inspect -f '{{.HostConfig.BlkioWeight}}' upd", All),
            Step("inspect -f '{{json .HostConfig.PidsLimit}}' upd", All),
            Step("update --cpu-period 50000 upd", All),
            Step("update --cpus 0.5 upd", All),
            Step("run -d --rm --name rmd hello sleep 1000", Code),
            Step("update --restart always rmd", All),
            Step("stop -t 1 upd", Code),
            Step(
                "stats --no-stream --format '{{.Name}} {{.CPUPerc}} {{.MemUsage}} {{.NetIO}} {{.BlockIO}} {{.PIDs}}' upd",
                All,
            ),
            Step("stats --no-stream nosuch", All),
            Step("update --memory 64m --memory-swap 128m upd", All),
            Step(
                "inspect -f '{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.CpuPeriod}}' upd",
                All,
            ),
        ],
    },
    Case {
        name: "system",
        steps: &[
            Step("info", Code),
            Step("version", Code),
            Step("info --format '{{.OSType}}'", All),
            Step("version --format '{{.Server.Os}}'", All),
        ],
    },
];

/// The two engines under comparison speak through the same CLI.
trait DockerCli {
    fn command(&self) -> Command;
}

impl DockerCli for Engine {
    fn command(&self) -> Command {
        self.docker_cmd()
    }
}

impl DockerCli for Dockerd {
    fn command(&self) -> Command {
        self.docker_cmd()
    }
}

/// What one command printed, normalised.
#[derive(Debug)]
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// A command gets this long before it is killed (a hang is then reported as
/// a difference, never as a time bound on the engine).
const COMMAND_LIMIT: Duration = Duration::from_secs(60);

fn run(cli: &dyn DockerCli, args: &[String]) -> Outcome {
    let mut child = cli
        .command()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + COMMAND_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait docker") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = |t: std::thread::JoinHandle<Vec<u8>>| {
        String::from_utf8_lossy(&t.join().unwrap_or_default()).into_owned()
    };
    Outcome {
        code: status.and_then(|s| s.code()),
        stdout: text(out),
        stderr: text(err) + if status.is_none() { "<timed out>" } else { "" },
    }
}

/// Splits a command line the way `sh` would for plain words and single or
/// double quotes (no escapes or expansions).
fn split(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.get_or_insert_with(String::new).push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                word.get_or_insert_with(String::new);
            }
            (None, c) if c.is_whitespace() => words.extend(word.take()),
            (None, c) => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    words
}

/// Rewrites run-dependent and cosmetic parts of CLI output to fixed forms.
struct Normaliser {
    rules: Vec<(Regex, &'static str)>,
    padding: Regex,
}

impl Normaliser {
    fn new() -> Normaliser {
        let rules = [
            // Failed exec starts end their message with CRLF.
            (r"\r", ""),
            // The CLI prefixes some errors with `docker: `.
            (r"(?m)^docker: ", ""),
            // dockerd 20.10 wraps exec failures of runc in its own words.
            (
                r"failed to create shim task: OCI runtime create failed: runc create failed: unable to start container process: ",
                "",
            ),
            (
                r"OCI runtime exec failed: exec failed: unable to start container process: ",
                "",
            ),
            (r"(?m): unknown$", ""),
            // dockerd 20.10 repeats the image lookup error.
            (r"no such image: [^:\s]+: (No such image: \S+)", "$1"),
            // rm of a running container: 20.10 and current moby word it differently.
            (
                r"You cannot remove a running container \S+\. Stop the container before attempting removal or force remove",
                "<cannot remove a running container>",
            ),
            (
                r#"cannot remove container "[^"]+": container is running: stop the container before removing or force remove"#,
                "<cannot remove a running container>",
            ),
            // 20.10 capitalises its filter errors; current moby does not.
            (r"Invalid filter '", "invalid filter '"),
            (r"\b[0-9a-f]{64}\b", "<id>"),
            (r"\b[0-9a-f]{12}\b", "<id12>"),
            (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", "<time>"),
            (
                r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
                "<time?>",
            ),
            (
                r"Less than a second|About a minute|About an hour|an hour|\b\d+ (second|minute|hour|day|week|month|year)s?\b",
                "<duration>",
            ),
        ];
        Normaliser {
            rules: rules
                .into_iter()
                .map(|(re, to)| (Regex::new(re).expect("rule"), to))
                .collect(),
            padding: Regex::new(r" {2,}|\t").expect("padding"),
        }
    }

    fn text(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (re, to) in &self.rules {
            text = re.replace_all(&text, *to).into_owned();
        }
        text.lines()
            .map(|l| {
                self.padding
                    .split(l.trim_end())
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A table with the listed columns blanked.
    fn table(&self, text: &str, varying: &[usize]) -> String {
        self.text(text)
            .lines()
            .enumerate()
            .map(|(row, line)| {
                line.split(" | ")
                    .enumerate()
                    .map(|(i, cell)| {
                        if row > 0 && varying.contains(&i) {
                            "<n>"
                        } else {
                            cell
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Every key path of a JSON document (`a.b.c`, arrays as `a[]`); null and an
/// empty object have no keys alike.
fn key_paths(value: &Value, prefix: &str, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                into.insert(path.clone());
                key_paths(child, &path, into);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), into);
            }
        }
        _ => {}
    }
}

fn shape(stdout: &str) -> Option<BTreeSet<String>> {
    let document: Value = serde_json::from_str(stdout).ok()?;
    let mut paths = BTreeSet::new();
    key_paths(document.get(0)?, "", &mut paths);
    Some(paths)
}

/// A difference found, keyed as in [`INTENDED_DIFFERENCES`].
struct Difference {
    key: String,
    detail: String,
}

fn compare_step(
    case: &str,
    index: usize,
    step: &Step,
    ours: &Outcome,
    theirs: &Outcome,
    norm: &Normaliser,
) -> Vec<Difference> {
    let mut found = Vec::new();
    let mut differ = |what: &str, vmctl: &dyn std::fmt::Debug, dockerd: &dyn std::fmt::Debug| {
        found.push(Difference {
            key: format!("{case} #{index} {what}"),
            detail: format!(
                "`docker {}`: {what}\n  vmctl:   {vmctl:?}\n  dockerd: {dockerd:?}",
                step.0
            ),
        });
    };
    if ours.code != theirs.code {
        differ("exit code", &ours.code, &theirs.code);
    }
    let (out_ours, out_theirs) = match step.1 {
        Check::Code | Check::Shape => (String::new(), String::new()),
        Check::Table(varying) => (
            norm.table(&ours.stdout, varying),
            norm.table(&theirs.stdout, varying),
        ),
        Check::Out | Check::All => (norm.text(&ours.stdout), norm.text(&theirs.stdout)),
        Check::Lines => {
            let sorted = |text: &str| {
                let mut lines: Vec<String> = norm.text(text).lines().map(str::to_owned).collect();
                lines.sort();
                lines.join("\n")
            };
            (sorted(&ours.stdout), sorted(&theirs.stdout))
        }
    };
    if out_ours != out_theirs {
        differ("stdout", &out_ours, &out_theirs);
    }
    if matches!(step.1, Check::All | Check::Table(_) | Check::Lines) {
        let (err_ours, err_theirs) = (norm.text(&ours.stderr), norm.text(&theirs.stderr));
        if err_ours != err_theirs {
            differ("stderr", &err_ours, &err_theirs);
        }
    }
    if matches!(step.1, Check::Shape) {
        match (shape(&ours.stdout), shape(&theirs.stdout)) {
            (Some(a), Some(b)) => {
                for path in a.symmetric_difference(&b) {
                    let side = if a.contains(path) { "vmctl" } else { "dockerd" };
                    found.push(Difference {
                        key: format!("{case}: {path}"),
                        detail: format!("`docker {}`: only {side} has `{path}`", step.0),
                    });
                }
            }
            (a, b) => found.push(Difference {
                key: format!("{case} #{index} json"),
                detail: format!(
                    "`docker {}`: not a JSON array (vmctl {}, dockerd {})",
                    step.0,
                    a.is_some(),
                    b.is_some()
                ),
            }),
        }
    }
    found
}

/// Removes every container and the case's volumes, so the next case starts clean.
fn clean(cli: &dyn DockerCli) {
    let ids = run(cli, &split("ps -aq"));
    for id in ids.stdout.split_whitespace() {
        run(cli, &["rm".into(), "-f".into(), id.into()]);
    }
    run(cli, &split("volume rm dvol"));
}

#[test]
fn docker_cli_matches_dockerd() {
    require_dockerd!();
    let engine = Engine::start_with(&["--bridge", "none", "--ip-forward=false", "--ip-masq=false"]);
    let dockerd = Dockerd::start();
    let norm = Normaliser::new();
    let mut differences = Vec::new();
    for case in CASES {
        for (index, step) in case.steps.iter().enumerate() {
            let args = split(step.0);
            let ours = run(&engine, &args);
            let theirs = run(&dockerd, &args);
            differences.extend(compare_step(case.name, index, step, &ours, &theirs, &norm));
        }
        clean(&engine);
        clean(&dockerd);
    }
    let intended: BTreeSet<&str> = INTENDED_DIFFERENCES.iter().map(|(k, _)| *k).collect();
    let (known, unexpected): (Vec<_>, Vec<_>) = differences
        .iter()
        .partition(|d| intended.contains(d.key.as_str()));
    for d in &known {
        eprintln!("intended difference [{}]", d.key);
    }
    let seen: BTreeSet<&str> = differences.iter().map(|d| d.key.as_str()).collect();
    for key in intended.difference(&seen) {
        eprintln!("NOTE: intended difference [{key}] no longer differs; drop it from the list");
    }
    let report: Vec<String> = unexpected
        .iter()
        .map(|d| format!("[{}] {}", d.key, d.detail))
        .collect();
    assert!(
        report.is_empty(),
        "{} unexpected difference(s) from dockerd:\n{}\nengine log tail:\n{}",
        report.len(),
        report.join("\n"),
        vmctl_tests::tail(&engine.log(), 20)
    );
}

#[test]
fn intended_differences_are_documented() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/DIFFERENCES.md"))
        .expect("tests/DIFFERENCES.md");
    for (key, reason) in INTENDED_DIFFERENCES {
        assert!(
            doc.contains(&format!("`{key}`")) && doc.contains(reason),
            "tests/DIFFERENCES.md does not list `{key}`: {reason}"
        );
    }
}

#[test]
fn normaliser_hides_ids_times_and_padding() {
    let norm = Normaliser::new();
    let ps = "CONTAINER ID   STATUS          NAMES\n\
              0123456789ab   Up 3 seconds    web\n";
    assert_eq!(
        norm.text(ps),
        "CONTAINER ID | STATUS | NAMES\n<id12> | Up <duration> | web"
    );
    assert_eq!(
        norm.text("2026-01-02T03:04:05.123456789Z one"),
        "<time> one"
    );
    assert_eq!(
        split("run --rm hello sh -c 'exit 3' \"a b\""),
        ["run", "--rm", "hello", "sh", "-c", "exit 3", "a b"]
    );
}
