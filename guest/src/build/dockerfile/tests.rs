//! Whole-file tests: every instruction, the Dockerfile reference's examples,
//! and the errors a user sees.

use std::time::Duration;

use super::*;

fn steps(text: &str) -> Vec<Step> {
    let file = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let mut out = file.meta_args;
    for stage in file.stages {
        out.push(stage.from);
        out.extend(stage.steps);
    }
    out
}

/// The instructions after `FROM x` in `body`.
fn body(body: &str) -> Vec<Instruction> {
    steps(&format!("FROM x\n{body}"))
        .into_iter()
        .skip(1)
        .map(|s| s.instruction)
        .collect()
}

fn one(line: &str) -> Instruction {
    let mut all = body(line);
    assert_eq!(all.len(), 1, "{line}");
    all.remove(0)
}

fn error(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

fn s(v: &str) -> String {
    v.to_string()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    env(pairs)
}

#[test]
fn from_forms() {
    let file = parse(
        "FROM --platform=linux/arm64 alpine:3.19 AS Build\nFROM build\nfrom scratch as final",
    )
    .unwrap();
    assert_eq!(file.stages.len(), 3);
    assert_eq!(
        file.stages[0].from.instruction,
        Instruction::From {
            image: s("alpine:3.19"),
            platform: Some(s("linux/arm64")),
            name: Some(s("build")),
        }
    );
    assert_eq!(file.stages[0].name.as_deref(), Some("build"));
    assert_eq!(
        file.stages[0].from.original,
        "FROM --platform=linux/arm64 alpine:3.19 AS Build"
    );
    assert_eq!(file.stages[1].name, None);
    assert_eq!(file.stages[2].name.as_deref(), Some("final"));
    assert_eq!(file.stages[2].from.line, 3);
}

#[test]
fn from_errors() {
    assert_eq!(
        error("FROM"),
        "Dockerfile:1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a b"),
        "Dockerfile:1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a AS"),
        "Dockerfile:1: FROM requires either one or three arguments"
    );
    assert_eq!(
        error("FROM a AS 1st"),
        "Dockerfile:1: invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
    );
    assert!(error("FROM a AS b$c").contains("invalid name for build stage"));
    assert_eq!(
        error("FROM a AS b\nFROM c AS B"),
        "Dockerfile:2: duplicate name for build stage: \"b\""
    );
    assert_eq!(
        error("FROM --platfrom=x a"),
        "Dockerfile:1: unknown flag --platfrom for FROM"
    );
}

#[test]
fn run_cmd_entrypoint_forms() {
    assert_eq!(
        one("RUN apt-get update"),
        Instruction::Run(Command::Shell(s("apt-get update")))
    );
    assert_eq!(
        one(r#"RUN ["/bin/bash", "-c", "echo hello"]"#),
        Instruction::Run(Command::Exec(vec![
            s("/bin/bash"),
            s("-c"),
            s("echo hello")
        ]))
    );
    // not valid JSON (unescaped backslash): the shell form, as written
    assert_eq!(
        one(r#"RUN ["c:\windows\system32\tasklist.exe"]"#),
        Instruction::Run(Command::Shell(s(r#"["c:\windows\system32\tasklist.exe"]"#)))
    );
    // single quotes are not JSON
    assert_eq!(
        one("CMD ['a']"),
        Instruction::Cmd(Command::Shell(s("['a']")))
    );
    // $HOME is not expanded in the exec form (no shell)
    assert_eq!(
        one(r#"RUN [ "echo", "$HOME" ]"#),
        Instruction::Run(Command::Exec(vec![s("echo"), s("$HOME")]))
    );
    assert_eq!(
        one(r#"CMD ["/usr/bin/wc","--help"]"#),
        Instruction::Cmd(Command::Exec(vec![s("/usr/bin/wc"), s("--help")]))
    );
    assert_eq!(
        one(r#"CMD echo "This is a test." | wc -"#),
        Instruction::Cmd(Command::Shell(s(r#"echo "This is a test." | wc -"#)))
    );
    assert_eq!(one("CMD []"), Instruction::Cmd(Command::Exec(vec![])));
    assert_eq!(
        one(r#"ENTRYPOINT ["top", "-b"]"#),
        Instruction::Entrypoint(Command::Exec(vec![s("top"), s("-b")]))
    );
    assert_eq!(
        one("entrypoint exec top -b"),
        Instruction::Entrypoint(Command::Shell(s("exec top -b")))
    );
    assert_eq!(
        error("FROM x\nRUN [\"a\", 1]"),
        "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"
    );
    assert_eq!(
        error("FROM x\nRUN"),
        "Dockerfile:2: RUN requires at least one argument"
    );
}

#[test]
fn run_continuation_is_joined_as_docker_prints_it() {
    let all = steps("FROM x\nRUN /bin/bash -c 'source $HOME/.bashrc; \\\necho $HOME'\nRUN echo a && \\\n    echo b\n");
    assert_eq!(
        all[1].original,
        "RUN /bin/bash -c 'source $HOME/.bashrc; echo $HOME'"
    );
    assert_eq!(
        all[1].instruction,
        Instruction::Run(Command::Shell(s(
            "/bin/bash -c 'source $HOME/.bashrc; echo $HOME'"
        )))
    );
    assert_eq!(all[2].original, "RUN echo a &&     echo b");
    assert_eq!(all[2].line, 4);
}

#[test]
fn run_refuses_buildkit_flags_and_heredocs() {
    assert_eq!(
        error("FROM x\nRUN --mount=type=cache,target=/root/.cache pip install x"),
        "Dockerfile:2: the --mount option requires BuildKit (DOCKER_BUILDKIT=1); the classic builder does not support it"
    );
    assert!(error("FROM x\nRUN --network=none true")
        .starts_with("Dockerfile:2: the --network option requires BuildKit"));
    assert_eq!(
        error("FROM x\nRUN --foo true"),
        "Dockerfile:2: unknown flag --foo for RUN"
    );
    let heredoc = "FROM x\nRUN <<EOF\napt-get update\nEOF\n";
    assert_eq!(
        error(heredoc),
        "Dockerfile:2: a heredoc (<<EOF) requires BuildKit (DOCKER_BUILDKIT=1); the classic builder does not support it"
    );
    assert!(error("FROM x\nRUN cat <<-'END' > /f\nhi\nEND").starts_with("Dockerfile:2: a heredoc"));
    assert!(error("FROM x\nCOPY <<EOF /x\nhello\nEOF").starts_with("Dockerfile:2: a heredoc"));
    // shell arithmetic and here-strings are not heredocs
    assert_eq!(
        one("RUN echo $((1<<3)) && cat <<< hi"),
        Instruction::Run(Command::Shell(s("echo $((1<<3)) && cat <<< hi")))
    );
}

#[test]
fn shell_is_json_only() {
    assert_eq!(
        one(r#"SHELL ["powershell", "-command"]"#),
        Instruction::Shell(vec![s("powershell"), s("-command")])
    );
    assert_eq!(
        error("FROM x\nSHELL /bin/bash -c"),
        "Dockerfile:2: SHELL requires the arguments to be in JSON form"
    );
    assert_eq!(
        error("FROM x\nSHELL []"),
        "Dockerfile:2: SHELL requires at least one argument"
    );
}

#[test]
fn env_forms() {
    assert_eq!(
        one("ENV MY_NAME=\"John Doe\""),
        Instruction::Env(kv(&[("MY_NAME", "\"John Doe\"")]))
    );
    assert_eq!(
        one("ENV MY_DOG=Rex\\ The\\ Dog MY_CAT=fluffy"),
        Instruction::Env(kv(&[("MY_DOG", "Rex\\ The\\ Dog"), ("MY_CAT", "fluffy")]))
    );
    // the legacy form: one pair, the value is the rest of the line
    assert_eq!(
        one("ENV MY_VAR my-value  and more"),
        Instruction::Env(kv(&[("MY_VAR", "my-value  and more")]))
    );
    assert_eq!(
        one("ENV SCUBA \"1 DUBA 3\""),
        Instruction::Env(kv(&[("SCUBA", "\"1 DUBA 3\"")]))
    );
    assert_eq!(
        one("ENV name=value \\\n    name1=value1 \\\n    name2=\"value2a \\\n           value2b\""),
        Instruction::Env(kv(&[
            ("name", "value"),
            ("name1", "value1"),
            ("name2", "\"value2a            value2b\"")
        ]))
    );
    assert_eq!(
        error("FROM x\nENV"),
        "Dockerfile:2: ENV requires at least one argument"
    );
    assert_eq!(
        error("FROM x\nENV abc"),
        "Dockerfile:2: ENV must have two arguments"
    );
    assert_eq!(
        error("FROM x\nENV a=b c"),
        "Dockerfile:2: Syntax error - can't find = in \"c\". Must be of the form: name=value"
    );
    assert_eq!(
        error("FROM x\nENV =b"),
        "Dockerfile:2: ENV names can not be blank"
    );
}

#[test]
fn env_values_expand_with_the_env_before_the_instruction() {
    // The reference: def is hello (abc was hello before this ENV), ghi is bye.
    let lexer = Lexer::new('\\');
    let mut state: Vec<(String, String)> = Vec::new();
    for instruction in body("ENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc") {
        let Instruction::Env(pairs) = instruction.expand(&lexer, &state).unwrap() else {
            panic!("not ENV");
        };
        state.extend(pairs);
    }
    let get = |k: &str| {
        state
            .iter()
            .rev()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("abc"), Some("bye"));
    assert_eq!(get("def"), Some("hello"));
    assert_eq!(get("ghi"), Some("bye"));
}

#[test]
fn env_quotes_are_removed_on_expansion() {
    let lexer = Lexer::new('\\');
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("ENV k=\"a b\"", &[("k", "a b")]),
        (
            "ENV name=value\\ value2 name2=value2\\ value3",
            &[("name", "value value2"), ("name2", "value2 value3")],
        ),
        (
            "ENV name=\"value'quote space'value2\"",
            &[("name", "value'quote space'value2")],
        ),
        (
            "ENV name='value\"double quote\"value2'",
            &[("name", "value\"double quote\"value2")],
        ),
        ("ENV name=\"a\\\"b\"", &[("name", "a\"b")]),
        ("ENV name='a\\\"b'", &[("name", "a\\\"b")]),
        ("ENV name=\"''\"", &[("name", "''")]),
        ("ENV MY_VAR my-value", &[("MY_VAR", "my-value")]),
        ("ENV SCUBA \"1 DUBA 3\"", &[("SCUBA", "1 DUBA 3")]),
    ];
    for (line, want) in cases {
        assert_eq!(
            one(line).expand(&lexer, &[]).unwrap(),
            Instruction::Env(kv(want)),
            "{line}"
        );
    }
}

#[test]
fn reference_environment_replacement_example() {
    // FROM busybox / ENV FOO=/bar / WORKDIR ${FOO} / ADD . $FOO / COPY \$FOO /quux
    let lexer = Lexer::new('\\');
    let env = env(&[("FOO", "/bar")]);
    let all = body("ENV FOO=/bar\nWORKDIR ${FOO}\nADD . $FOO\nCOPY \\$FOO /quux");
    assert_eq!(
        all[1].expand(&lexer, &env).unwrap(),
        Instruction::Workdir(s("/bar"))
    );
    let Instruction::Add(add) = all[2].expand(&lexer, &env).unwrap() else {
        panic!()
    };
    assert_eq!((add.sources, add.dest), (vec![s(".")], s("/bar")));
    let Instruction::Copy(copy) = all[3].expand(&lexer, &env).unwrap() else {
        panic!()
    };
    assert_eq!((copy.sources, copy.dest), (vec![s("$FOO")], s("/quux")));
}

#[test]
fn reference_default_and_alternative_values() {
    let lexer = Lexer::new('\\');
    let user = one("USER ${username:-some_user}");
    assert_eq!(
        user.expand(&lexer, &[]).unwrap(),
        Instruction::User(s("some_user"))
    );
    assert_eq!(
        user.expand(&lexer, &env(&[("username", "what_user")]))
            .unwrap(),
        Instruction::User(s("what_user"))
    );
    let label = one("LABEL x=${variable:+word}");
    assert_eq!(
        label.expand(&lexer, &[]).unwrap(),
        Instruction::Label(kv(&[("x", "")]))
    );
    assert_eq!(
        label.expand(&lexer, &env(&[("variable", "set")])).unwrap(),
        Instruction::Label(kv(&[("x", "word")]))
    );
    // ENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}
    let e = one("ENV CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}");
    assert_eq!(
        e.expand(&lexer, &[]).unwrap(),
        Instruction::Env(kv(&[("CONT_IMG_VER", "v1.0.0")]))
    );
    assert_eq!(
        e.expand(&lexer, &env(&[("CONT_IMG_VER", "v2.0.1")]))
            .unwrap(),
        Instruction::Env(kv(&[("CONT_IMG_VER", "v2.0.1")]))
    );
    // WORKDIR $DIRPATH/$DIRNAME with DIRNAME unset
    assert_eq!(
        one("WORKDIR $DIRPATH/$DIRNAME")
            .expand(&lexer, &env(&[("DIRPATH", "/path")]))
            .unwrap(),
        Instruction::Workdir(s("/path/"))
    );
}

#[test]
fn arg_forms_and_meta_args() {
    let file = parse("ARG  CODE_VERSION=latest\nFROM base:${CODE_VERSION}\nCMD  /code/run-app\n\nFROM extras:${CODE_VERSION}\nCMD  /code/run-extras\n").unwrap();
    assert_eq!(file.meta_args.len(), 1);
    assert_eq!(file.meta_args[0].original, "ARG  CODE_VERSION=latest");
    assert_eq!(
        file.meta_args[0].instruction,
        Instruction::Arg(vec![(s("CODE_VERSION"), Some(s("latest")))])
    );
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stages[1].from.line, 5);
    // FROM expands with the meta args the builder passes
    let lexer = Lexer::new(file.escape);
    let meta = env(&[("CODE_VERSION", "latest")]);
    assert_eq!(
        file.stages[1]
            .from
            .instruction
            .expand(&lexer, &meta)
            .unwrap(),
        Instruction::From {
            image: s("extras:latest"),
            platform: None,
            name: None
        }
    );
    assert_eq!(
        one("ARG user1 buildno=1 msg=\"a b\" empty="),
        Instruction::Arg(vec![
            (s("user1"), None),
            (s("buildno"), Some(s("1"))),
            (s("msg"), Some(s("\"a b\""))),
            (s("empty"), Some(s(""))),
        ])
    );
    assert_eq!(
        one("ARG msg=\"a b\"").expand(&lexer, &[]).unwrap(),
        Instruction::Arg(vec![(s("msg"), Some(s("a b")))])
    );
    assert_eq!(
        error("FROM x\nARG"),
        "Dockerfile:2: ARG requires at least one argument"
    );
    assert_eq!(
        error("FROM x\nARG =1"),
        "Dockerfile:2: ARG names can not be blank"
    );
}

#[test]
fn only_arg_before_the_first_from() {
    assert_eq!(
        error("ARG a\n# c\nRUN true\nFROM x"),
        "Dockerfile:3: no build stage in current context: only ARG may come before the first FROM, not RUN"
    );
    assert_eq!(
        error("ARG a\nARG b"),
        "Dockerfile:2: no build stage: a Dockerfile needs a FROM"
    );
}

#[test]
fn label_forms() {
    let lexer = Lexer::new('\\');
    let text = "LABEL \"com.example.vendor\"=\"ACME Incorporated\"\nLABEL com.example.label-with-value=\"foo\"\nLABEL version=\"1.0\"\nLABEL description=\"This text illustrates \\\nthat label-values can span multiple lines.\"\nLABEL multi.label1=\"value1\" multi.label2=\"value2\" other=\"value3\"\nLABEL maintainer Erik Hollensbe <erik@hollensbe.org>";
    let expanded: Vec<Instruction> = body(text)
        .iter()
        .map(|i| i.expand(&lexer, &[]).unwrap())
        .collect();
    assert_eq!(
        expanded,
        vec![
            Instruction::Label(kv(&[("com.example.vendor", "ACME Incorporated")])),
            Instruction::Label(kv(&[("com.example.label-with-value", "foo")])),
            Instruction::Label(kv(&[("version", "1.0")])),
            Instruction::Label(kv(&[(
                "description",
                "This text illustrates that label-values can span multiple lines."
            )])),
            Instruction::Label(kv(&[
                ("multi.label1", "value1"),
                ("multi.label2", "value2"),
                ("other", "value3")
            ])),
            Instruction::Label(kv(&[("maintainer", "Erik Hollensbe <erik@hollensbe.org>")])),
        ]
    );
    assert_eq!(
        error("FROM x\nLABEL"),
        "Dockerfile:2: LABEL requires at least one argument"
    );
}

#[test]
fn expose_sorts_and_expands_to_words() {
    assert_eq!(
        one("EXPOSE 9000 5000 6000"),
        Instruction::Expose(vec![s("5000"), s("6000"), s("9000")])
    );
    assert_eq!(one("EXPOSE 80/udp"), Instruction::Expose(vec![s("80/udp")]));
    let lexer = Lexer::new('\\');
    assert_eq!(
        one("EXPOSE $PORTS 22")
            .expand(&lexer, &env(&[("PORTS", "80 443")]))
            .unwrap(),
        Instruction::Expose(vec![s("80"), s("443"), s("22")])
    );
    assert_eq!(
        error("FROM x\nEXPOSE"),
        "Dockerfile:2: EXPOSE requires at least one argument"
    );
}

#[test]
fn single_string_instructions() {
    assert_eq!(
        one("USER patrick:users"),
        Instruction::User(s("patrick:users"))
    );
    assert_eq!(one("WORKDIR /a b"), Instruction::Workdir(s("/a b")));
    assert_eq!(
        one("STOPSIGNAL SIGKILL"),
        Instruction::Stopsignal(s("SIGKILL"))
    );
    assert_eq!(
        one("MAINTAINER SvenDowideit@home.org.au"),
        Instruction::Maintainer(s("SvenDowideit@home.org.au"))
    );
    let lexer = Lexer::new('\\');
    assert_eq!(
        one("STOPSIGNAL $SIG")
            .expand(&lexer, &env(&[("SIG", "SIGQUIT")]))
            .unwrap(),
        Instruction::Stopsignal(s("SIGQUIT"))
    );
    assert_eq!(
        error("FROM x\nUSER"),
        "Dockerfile:2: USER requires exactly one argument"
    );
    assert_eq!(
        error("FROM x\nWORKDIR"),
        "Dockerfile:2: WORKDIR requires exactly one argument"
    );
    assert_eq!(
        error("FROM x\nSTOPSIGNAL"),
        "Dockerfile:2: STOPSIGNAL requires exactly one argument"
    );
}

#[test]
fn volume_forms() {
    assert_eq!(
        one("VOLUME [\"/data\"]"),
        Instruction::Volume(vec![s("/data")])
    );
    assert_eq!(
        one("VOLUME [\"/test\", \"/test2\"]"),
        Instruction::Volume(vec![s("/test"), s("/test2")])
    );
    assert_eq!(
        one("VOLUME /var/log /var/db"),
        Instruction::Volume(vec![s("/var/log"), s("/var/db")])
    );
    let lexer = Lexer::new('\\');
    assert_eq!(
        one("VOLUME $D")
            .expand(&lexer, &env(&[("D", "/myvol")]))
            .unwrap(),
        Instruction::Volume(vec![s("/myvol")])
    );
    assert_eq!(
        error("FROM x\nVOLUME [\" \"]"),
        "Dockerfile:2: VOLUME specified can not be an empty string"
    );
    assert_eq!(
        error("FROM x\nVOLUME"),
        "Dockerfile:2: VOLUME requires at least one argument"
    );
}

#[test]
fn copy_and_add_forms() {
    assert_eq!(
        one("COPY --chown=55:mygroup files* /somedir/"),
        Instruction::Copy(CopySpec {
            from: None,
            chown: Some(s("55:mygroup")),
            chmod: None,
            sources: vec![s("files*")],
            dest: s("/somedir/"),
        })
    );
    assert_eq!(
        one("COPY --from=build --chmod=755 a b /dst/"),
        Instruction::Copy(CopySpec {
            from: Some(s("build")),
            chown: None,
            chmod: Some(s("755")),
            sources: vec![s("a"), s("b")],
            dest: s("/dst/"),
        })
    );
    assert_eq!(
        one("ADD [\"hom e*\", \"/my dir/\"]"),
        Instruction::Add(CopySpec {
            from: None,
            chown: None,
            chmod: None,
            sources: vec![s("hom e*")],
            dest: s("/my dir/"),
        })
    );
    assert_eq!(
        error("FROM x\nCOPY onlyone"),
        "Dockerfile:2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        error("FROM x\nCOPY --foo=1 a b"),
        "Dockerfile:2: unknown flag --foo for COPY"
    );
    assert_eq!(
        error("FROM x\nADD --from=x a b"),
        "Dockerfile:2: unknown flag --from for ADD"
    );
    assert!(error("FROM x\nCOPY --link a b")
        .starts_with("Dockerfile:2: the --link option requires BuildKit"));

    // a path with a space needs the JSON form: the other one splits it
    let Instruction::Copy(spec) = one("COPY \"a b\" /x") else {
        panic!()
    };
    assert_eq!(spec.sources, vec![s("\"a"), s("b\"")]);
    // sources, dest and --chown expand; --from does not (dockerd 20.10)
    let lexer = Lexer::new('\\');
    let env = env(&[("U", "app"), ("S", "build"), ("D", "/srv")]);
    let Instruction::Copy(spec) = one("COPY --from=$S --chown=$U [\"a b\", \"$D\"]")
        .expand(&lexer, &env)
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(spec.from.as_deref(), Some("$S"));
    assert_eq!(spec.chown.as_deref(), Some("app"));
    assert_eq!(spec.sources, vec![s("a b")]);
    assert_eq!(spec.dest, "/srv");
}

#[test]
fn healthcheck_forms() {
    assert_eq!(
        one("HEALTHCHECK --interval=5m --timeout=3s \\\n  CMD curl -f http://localhost/ || exit 1"),
        Instruction::Healthcheck(Some(Healthcheck {
            test: vec![s("CMD-SHELL"), s("curl -f http://localhost/ || exit 1")],
            interval: Some(Duration::from_secs(300)),
            timeout: Some(Duration::from_secs(3)),
            start_period: None,
            retries: None,
        }))
    );
    assert_eq!(
        one("HEALTHCHECK --start-period=1m30s --retries=3 cmd [\"/bin/check\", \"-q\"]"),
        Instruction::Healthcheck(Some(Healthcheck {
            test: vec![s("CMD"), s("/bin/check"), s("-q")],
            interval: None,
            timeout: None,
            start_period: Some(Duration::from_secs(90)),
            retries: Some(3),
        }))
    );
    assert_eq!(one("HEALTHCHECK NONE"), Instruction::Healthcheck(None));
    assert_eq!(one("healthcheck none"), Instruction::Healthcheck(None));
}

#[test]
fn healthcheck_errors() {
    let cases = [
        ("HEALTHCHECK", "HEALTHCHECK requires at least one argument"),
        ("HEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
        ("HEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
        (
            "HEALTHCHECK CMD []",
            "Missing command after HEALTHCHECK CMD",
        ),
        (
            "HEALTHCHECK CONNECT TCP 7000",
            "Unknown type \"CONNECT\" in HEALTHCHECK (try CMD)",
        ),
        (
            "HEALTHCHECK --interval=5 CMD true",
            "invalid duration \"5\" for --interval: time: missing unit in duration \"5\"",
        ),
        (
            "HEALTHCHECK --timeout=soon CMD true",
            "invalid duration \"soon\" for --timeout: time: invalid duration \"soon\"",
        ),
        (
            "HEALTHCHECK --interval=0s CMD true",
            "Interval \"interval\" cannot be less than 1ms",
        ),
        (
            "HEALTHCHECK --retries=0 CMD true",
            "invalid --retries value \"0\": must be a whole number of at least 1",
        ),
        (
            "HEALTHCHECK --retries CMD true",
            "missing a value on flag: --retries",
        ),
        (
            "HEALTHCHECK --foo=1 CMD true",
            "unknown flag --foo for HEALTHCHECK",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(
            error(&format!("FROM x\n{line}")),
            format!("Dockerfile:2: {want}"),
            "{line}"
        );
    }
}

#[test]
fn onbuild_triggers() {
    assert_eq!(
        one("ONBUILD ADD . /app/src"),
        Instruction::Onbuild(s("ADD . /app/src"))
    );
    assert_eq!(
        one("onbuild   RUN /usr/local/bin/python-build --dir /app/src"),
        Instruction::Onbuild(s("RUN /usr/local/bin/python-build --dir /app/src"))
    );
    assert_eq!(
        one("ONBUILD RUN [\"echo\", \"test\"]"),
        Instruction::Onbuild(s("RUN [\"echo\", \"test\"]"))
    );
    assert_eq!(
        error("FROM x\nONBUILD ONBUILD RUN x"),
        "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    assert_eq!(
        error("FROM x\nONBUILD FROM y"),
        "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM x\nONBUILD maintainer me"),
        "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        error("FROM x\nONBUILD"),
        "Dockerfile:2: ONBUILD requires at least one argument"
    );
    assert_eq!(
        error("FROM x\nONBUILD BOGUS x"),
        "Dockerfile:2: ONBUILD trigger: unknown instruction: BOGUS"
    );

    // running a trigger later
    let step = parse_trigger("RUN echo hi").unwrap();
    assert_eq!(
        step.instruction,
        Instruction::Run(Command::Shell(s("echo hi")))
    );
    assert_eq!(step.original, "RUN echo hi");
    assert_eq!(
        parse_trigger("FROM y").unwrap_err().to_string(),
        "Dockerfile:1: FROM isn't allowed as an ONBUILD trigger"
    );
    assert_eq!(
        parse_trigger("RUN a\nRUN b").unwrap_err().to_string(),
        "Dockerfile:2: onbuild trigger should be a single expression"
    );
}

#[test]
fn run_cmd_onbuild_healthcheck_are_not_expanded() {
    let lexer = Lexer::new('\\');
    let env = env(&[("A", "1")]);
    for line in [
        "RUN echo $A",
        "CMD echo $A",
        "ENTRYPOINT [\"echo\", \"$A\"]",
        "ONBUILD RUN echo $A",
        "HEALTHCHECK CMD echo $A",
        "SHELL [\"/bin/$A\"]",
        "MAINTAINER $A",
    ] {
        let instruction = one(line);
        assert_eq!(
            instruction.expand(&lexer, &env).unwrap(),
            instruction,
            "{line}"
        );
    }
}

#[test]
fn expansion_errors_are_reported() {
    let lexer = Lexer::new('\\');
    assert_eq!(
        one("WORKDIR ${x:?must be set}")
            .expand(&lexer, &[])
            .unwrap_err(),
        "failed to process \"${x:?must be set}\": x: must be set"
    );
    assert!(one("COPY \"a b /x").expand(&lexer, &[]).is_err());
}

#[test]
fn keywords_are_case_insensitive_and_may_be_indented() {
    let all = steps("from alpine\n  Run echo hi\n\tcOpY a b\n");
    assert_eq!(
        all[1].instruction,
        Instruction::Run(Command::Shell(s("echo hi")))
    );
    assert_eq!(all[1].original, "Run echo hi");
    assert_eq!(all[2].instruction.keyword(), "COPY");
    assert_eq!(all[2].line, 3);
}

#[test]
fn unknown_instruction_names_its_line() {
    assert_eq!(
        error("FROM x\n# comment\n\nRUN a \\\n  b\n\nBOGUS x"),
        "Dockerfile:7: unknown instruction: BOGUS"
    );
    // with the name the builder knows the file by
    let e = parse("FROM x\nbogus")
        .unwrap_err()
        .with_file("build/Dockerfile.dev");
    assert_eq!(e.line, 2);
    assert_eq!(e.kind, ErrorKind::UnknownInstruction(s("BOGUS")));
    assert_eq!(
        e.to_string(),
        "build/Dockerfile.dev:2: unknown instruction: BOGUS"
    );
}

#[test]
fn empty_files() {
    assert_eq!(error(""), "Dockerfile:1: file with no instructions");
    assert_eq!(
        error("# only\n# comments\n"),
        "Dockerfile:2: file with no instructions"
    );
}

#[test]
fn reference_escape_directive_examples() {
    // With the default escape, `c:\` continues onto the next line.
    let all = steps("FROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].original, "COPY testfile.txt c:RUN dir c:");
    // With `# escape=``, backslashes are ordinary and both instructions stay.
    let file =
        parse("# escape=`\n\nFROM microsoft/nanoserver\nCOPY testfile.txt c:\\\nRUN dir c:\\\n")
            .unwrap();
    assert_eq!(file.escape, '`');
    let steps = &file.stages[0].steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[1].instruction,
        Instruction::Run(Command::Shell(s("dir c:\\")))
    );
    let lexer = Lexer::new(file.escape);
    let Instruction::Copy(copy) = steps[0].instruction.expand(&lexer, &[]).unwrap() else {
        panic!()
    };
    assert_eq!(
        (copy.sources, copy.dest),
        (vec![s("testfile.txt")], s("c:\\"))
    );
}

#[test]
fn backtick_escape_continues_lines() {
    let file = parse("# escape=`\nFROM x\nRUN a `\n  && b\nENV P=c:\\dir`\\x\n").unwrap();
    let steps = &file.stages[0].steps;
    assert_eq!(steps[0].original, "RUN a   && b");
    let lexer = Lexer::new(file.escape);
    assert_eq!(
        steps[1].instruction.expand(&lexer, &[]).unwrap(),
        Instruction::Env(kv(&[("P", "c:\\dir\\x")]))
    );
}

#[test]
fn syntax_directive_is_recorded() {
    let file = parse("# syntax=docker/dockerfile:1.4\nFROM x").unwrap();
    assert_eq!(file.syntax.as_deref(), Some("docker/dockerfile:1.4"));
    assert_eq!(file.escape, '\\');
}

#[test]
fn a_larger_file() {
    let text = r#"# syntax=docker/dockerfile:1
ARG BASE=alpine:3.19

FROM ${BASE} AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN apk add --no-cache go && \
    # fetch modules first
    go mod download
COPY . .
RUN go build -o /out/app ./cmd/app

FROM ${BASE}
LABEL org.opencontainers.image.title="app"
COPY --from=build /out/app /usr/local/bin/app
USER 65534:65534
EXPOSE 8080
HEALTHCHECK --interval=30s CMD ["/usr/local/bin/app", "health"]
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["serve"]
"#;
    let file = parse(text).unwrap();
    assert_eq!(file.meta_args.len(), 1);
    assert_eq!(file.stages.len(), 2);
    assert_eq!(file.stages[0].name.as_deref(), Some("build"));
    let build = &file.stages[0].steps;
    assert_eq!(build.len(), 5);
    assert_eq!(build[2].line, 7);
    assert_eq!(
        build[2].original,
        "RUN apk add --no-cache go &&     go mod download"
    );
    assert_eq!(build[3].line, 10);
    let last = &file.stages[1];
    assert_eq!(last.from.line, 13);
    assert_eq!(last.steps.len(), 7);
    assert_eq!(
        last.steps
            .iter()
            .map(|s| s.instruction.keyword())
            .collect::<Vec<_>>(),
        [
            "LABEL",
            "COPY",
            "USER",
            "EXPOSE",
            "HEALTHCHECK",
            "ENTRYPOINT",
            "CMD"
        ]
    );
}

#[test]
fn directive_placement_follows_the_reference() {
    // an escape directive after a comment is a comment: `\` still continues
    let file = parse("# Comment here.\n# escape = `\n\nFROM image\nENV GOPATH \\\n\\go").unwrap();
    assert_eq!(file.escape, '\\');
    assert_eq!(
        file.stages[0].steps[0].instruction,
        Instruction::Env(kv(&[("GOPATH", "\\go")]))
    );
    // directives without a blank line after them still count
    let file = parse("# escape = `\n# a comment\nFROM image\nENV GOPATH `\n\\go\n").unwrap();
    assert_eq!(file.escape, '`');
    assert_eq!(
        file.stages[0].steps[0].instruction,
        Instruction::Env(kv(&[("GOPATH", "\\go")]))
    );
    // syntax then escape; the FROM itself continued with the backtick
    let file = parse("# syntax = docker/dockerfile\n# escape = `\n\nFROM `\n    image\n").unwrap();
    assert_eq!(file.syntax.as_deref(), Some("docker/dockerfile"));
    assert_eq!(file.stages[0].from.original, "FROM     image");
    assert_eq!(
        file.stages[0].from.instruction,
        Instruction::From {
            image: s("image"),
            platform: None,
            name: None
        }
    );
    // unknown directives are comments, even repeated
    assert!(parse("# directive=value1\n# directive=value2\n\nFROM ImageName").is_ok());
    // a repeated known one is an error
    assert_eq!(
        error("# escape=\\\n# escape=`\nFROM x"),
        "Dockerfile:2: only one escape parser directive can be used"
    );
}
