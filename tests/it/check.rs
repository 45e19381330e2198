//! `check` as an operator runs it: broken configs exit 78 with a precise error, valid
//! ones print the plan, and nothing is ever created or contacted.

use std::path::{Path, PathBuf};

use crate::util::{self, TestEnv};

/// Writes `text` as the config file in `env` and returns its path.
fn write_config(env: &TestEnv, name: &str, text: &str) -> PathBuf {
    let path = env.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Everything under `dir`, recursively, sorted: to prove `check` created nothing.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// A valid one-key config with a file sink in `dir`, plus `extra` lines in the key.
fn one_key(dir: &Path, extra: &str) -> String {
    format!(
        "[[key]]\nname = \"k\"\n{extra}\n  [[key.sink]]\n  type = \"file\"\n  path = \"{}\"\n",
        dir.join("k.key").display()
    )
}

/// The design contract's example, with every path under `dir`.
fn design_example(dir: &Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        r#"
log_format = "text"
listen = "127.0.0.1:9464"

[defaults]
region = "us-east-1"
lifetime = "12h"
refresh_at = 0.5
jitter = 0.1
min_remaining = "5m"

[[key]]
name = "default"
profile = "prod"
role_arn = "arn:aws:iam::123456789012:role/bedrock-invoke"
external_id = "example-external-id"
region = "us-west-2"

  [[key.sink]]
  type = "file"
  path = "{key}"
  format = "raw"
  mode = "0640"
  owner = "app"
  group = "app"

  [[key.sink]]
  type = "env-file"
  path = "{env}"
  variable = "AWS_BEARER_TOKEN_BEDROCK"

  [[key.sink]]
  type = "keyring"
  service = "bedrock-keyd"
  account = "default"

  [[key.notify]]
  pid_file = "{pid}"
  signal = "HUP"

  [[key.notify]]
  process = "litellm"
  signal = "HUP"

  [[key.notify]]
  systemd_unit = "myapp.service"
  action = "reload-or-restart"

  [[key.notify]]
  command = ["{cmd}"]
  timeout = "10s"
"#,
        key = p("run/default.key"),
        env = p("etc/myapp/bedrock.env"),
        pid = p("run/myapp.pid"),
        cmd = p("bin/app-reload"),
    )
}

#[test]
fn broken_configs_exit_78_naming_file_line_and_field() {
    let env = TestEnv::new();
    let dir = env.path().to_owned();
    let d = dir.display();
    // (what is wrong, config, line, field path, a phrase of the message)
    let cases: Vec<(&str, String, usize, &str, &str)> = vec![
        (
            "typo'd field",
            format!(
                "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"file\"\n  pathh = \"{d}/k.key\"\n"
            ),
            5,
            "key \"k\": sink[0].pathh",
            "unknown field `pathh`, expected one of `type`, `path`",
        ),
        (
            "typo'd top-level field",
            format!("log_fromat = \"json\"\n{}", one_key(&dir, "")),
            1,
            "log_fromat",
            "unknown field",
        ),
        (
            "bad duration",
            one_key(&dir, "lifetime = \"12 hours\""),
            3,
            "key \"k\": lifetime",
            "unknown unit",
        ),
        (
            "unquoted duration",
            one_key(&dir, "min_remaining = 300"),
            3,
            "key \"k\": min_remaining",
            "write a quoted duration",
        ),
        (
            "bad mode",
            format!("{}  mode = \"0800\"\n", one_key(&dir, "")),
            7,
            "key \"k\": sink[0].mode",
            "not an octal permission string",
        ),
        (
            "world-readable mode",
            format!("{}  mode = \"0644\"\n", one_key(&dir, "")),
            7,
            "key \"k\": sink[0].mode",
            "allow_world_readable",
        ),
        (
            "duplicate key names",
            format!(
                "{}[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"keyring\"\n",
                one_key(&dir, "")
            ),
            8,
            "key \"k\"",
            "already used",
        ),
        (
            "two keys writing the same path",
            format!(
                "{}[[key]]\nname = \"other\"\n  [[key.sink]]\n  type = \"env-file\"\n  path = \"{d}/k.key\"\n",
                one_key(&dir, "")
            ),
            11,
            "key \"other\": sink[0].path",
            "is already written by key \"k\": sink[0].path",
        ),
        (
            "relative path",
            "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"file\"\n  path = \"run/k.key\"\n"
                .to_owned(),
            5,
            "key \"k\": sink[0].path",
            "relative path",
        ),
        (
            "lifetime over 12h",
            format!("[defaults]\nlifetime = \"13h\"\n{}", one_key(&dir, "")),
            2,
            "defaults.lifetime",
            "maximum of 12h",
        ),
        (
            "lifetime just over 12h, shown as written",
            one_key(&dir, "lifetime = \"43200001ms\""),
            3,
            "key \"k\": lifetime",
            "lifetime 43200001ms is longer than the maximum of 12h",
        ),
        (
            "a repeated duration unit",
            one_key(&dir, "lifetime = \"1h1h\""),
            3,
            "key \"k\": lifetime",
            "\"1h1h\" gives the unit \"h\" twice",
        ),
        (
            "a sink path ending in /.",
            format!(
                "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"file\"\n  path = \"{d}/.\"\n"
            ),
            5,
            "key \"k\": sink[0].path",
            "ends in \"/.\"",
        ),
        (
            "a sink path ending in /..",
            format!(
                "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"env-file\"\n  path = \"{d}/..\"\n"
            ),
            5,
            "key \"k\": sink[0].path",
            "ends in \"/..\"",
        ),
        (
            "a pid file ending in /.",
            format!(
                "{}  [[key.notify]]\n  pid_file = \"{d}/.\"\n  signal = \"HUP\"\n",
                one_key(&dir, "")
            ),
            8,
            "key \"k\": notify[0].pid_file",
            "ends in \"/.\"",
        ),
        (
            "lifetime under 1s",
            one_key(&dir, "lifetime = \"500ms\""),
            3,
            "key \"k\": lifetime",
            "minimum of 1s",
        ),
        (
            "refresh_at outside (0,1)",
            one_key(&dir, "refresh_at = 1.5"),
            3,
            "key \"k\": refresh_at",
            "strictly between 0 and 1",
        ),
        (
            "jitter too large",
            format!("[defaults]\njitter = 0.9\n{}", one_key(&dir, "")),
            2,
            "defaults.jitter",
            "between 0 and 0.5",
        ),
        (
            "min_remaining not shorter than the lifetime",
            one_key(&dir, "lifetime = \"10m\"\nmin_remaining = \"10m\""),
            4,
            "key \"k\": min_remaining",
            "must be shorter than the lifetime 10m",
        ),
        (
            "unknown sink type",
            "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"s3\"\n".to_owned(),
            4,
            "key \"k\": sink[0].type",
            "use \"file\", \"env-file\" or \"keyring\"",
        ),
        (
            "file sink without a path",
            "[[key]]\nname = \"k\"\n  [[key.sink]]\n  type = \"file\"\n".to_owned(),
            3,
            "key \"k\": sink[0]",
            "missing field `path`",
        ),
        (
            "bad key name",
            "[[key]]\nname = \"my key\"\n  [[key.sink]]\n  type = \"keyring\"\n".to_owned(),
            2,
            "key[0].name",
            "not a key name",
        ),
        (
            "bad region",
            one_key(&dir, "region = \"us_east_1\""),
            3,
            "key \"k\": region",
            "not a region name",
        ),
        (
            "bad signal",
            format!(
                "{}  [[key.notify]]\n  process = \"app\"\n  signal = \"KILL\"\n",
                one_key(&dir, "")
            ),
            9,
            "key \"k\": notify[0].signal",
            "not an accepted signal",
        ),
        (
            "empty command",
            format!("{}  [[key.notify]]\n  command = []\n", one_key(&dir, "")),
            8,
            "key \"k\": notify[0].command",
            "is empty",
        ),
        (
            "key without sinks",
            "[defaults]\nregion = \"us-east-1\"\n[[key]]\nname = \"k\"\n".to_owned(),
            3,
            "key \"k\"",
            "has no [[key.sink]]",
        ),
        (
            "bad listen address",
            format!("listen = \"localhost:9464\"\n{}", one_key(&dir, "")),
            1,
            "listen",
            "not an IP address and port",
        ),
        (
            "bad log format",
            format!("log_format = \"xml\"\n{}", one_key(&dir, "")),
            1,
            "log_format",
            "\"text\" or \"json\"",
        ),
        (
            "external_id without role_arn",
            one_key(&dir, "external_id = \"abc-123\""),
            3,
            "key \"k\": external_id",
            "only allowed together with role_arn",
        ),
        (
            "unknown table",
            format!("{}[[keys]]\nname = \"x\"\n", one_key(&dir, "")),
            7,
            "keys",
            "unknown field `keys`",
        ),
    ];
    assert!(cases.len() >= 15);
    for (what, text, line, field, phrase) in cases {
        let path = write_config(&env, "config.toml", &text);
        let out = env
            .cmd()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = util::stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        let location = format!("{}:{line}:", path.display());
        assert!(
            stderr.contains(&location),
            "{what}: expected {location:?} in stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(&format!(": {field}: ")),
            "{what}: expected field {field:?} in stderr:\n{stderr}"
        );
        assert!(
            stderr.contains(phrase),
            "{what}: expected {phrase:?} in stderr:\n{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{what}: one line:\n{stderr}");
        assert!(out.stdout.is_empty(), "{what}: nothing on stdout");
    }
}

#[test]
fn a_toml_syntax_error_exits_78_with_its_location() {
    let env = TestEnv::new();
    let path = write_config(&env, "c.toml", "[[key]]\nname = \"k\n");
    let out = env
        .cmd()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(util::stderr(&out).contains(&format!("{}:2:", path.display())));
}

#[test]
fn the_design_example_prints_its_plan_and_touches_nothing() {
    let env = TestEnv::new();
    let path = write_config(&env, "config.toml", &design_example(env.path()));
    let before = tree(env.path());
    let out = env
        .cmd()
        .env("AWS_ACCESS_KEY_ID", "must-not-be-used")
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let plan = util::stdout(&out);
    for expected in [
        "key \"default\"",
        "profile \"prod\", then assume role arn:aws:iam::123456789012:role/bedrock-invoke (with an external id)",
        "region:   us-west-2",
        "lifetime: 12h requested",
        "at 50% of the effective lifetime ±10%, never later than 5m before expiry",
        "5h24m … 6h36m",
        "(raw, mode 0640, owner app, group app)",
        "(variable AWS_BEARER_TOKEN_BEDROCK, mode 0600)",
        "keyring service \"bedrock-keyd\", account \"default\"",
        "SIGHUP to the pid in",
        "SIGHUP to every process named \"litellm\"",
        "systemctl reload-or-restart myapp.service",
        "(timeout 10s)",
        "listen: http://127.0.0.1:9464",
        "config OK: 1 key, 3 sinks, 4 notifications",
    ] {
        assert!(plan.contains(expected), "expected {expected:?} in:\n{plan}");
    }
    assert!(!plan.contains("example-external-id"), "{plan}");
    // No sink file, directory or anything else was created.
    assert_eq!(tree(env.path()), before);
}

#[test]
fn json_plan() {
    let env = TestEnv::new();
    let path = write_config(&env, "config.toml", &design_example(env.path()));
    let out = env
        .cmd()
        .args(["check", "--json", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let key = &plan["keys"][0];
    assert_eq!(key["name"], "default");
    assert_eq!(key["region"], "us-west-2");
    assert_eq!(key["lifetime_seconds"], 43200);
    assert_eq!(key["source"]["profile"], "prod");
    assert_eq!(key["source"]["external_id_set"], true);
    assert_eq!(key["refresh"]["refresh_at"], 0.5);
    assert_eq!(key["refresh"]["min_remaining_seconds"], 300.0);
    assert_eq!(key["sinks"][0]["mode"], "0640");
    assert_eq!(key["sinks"][1]["type"], "env-file");
    assert_eq!(key["notify"][2]["action"], "reload-or-restart");
    assert_eq!(plan["listen"], "127.0.0.1:9464");
}

#[test]
fn the_packaged_example_config_is_valid() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .args(["check", "--config"])
        .arg(util::repo_root().join("packaging/config.example.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(util::stdout(&out).contains("config OK"));
}

#[test]
fn lookup_order_from_the_environment() {
    let env = TestEnv::new();
    let via_var = write_config(&env, "from-var.toml", &one_key(env.path(), ""));
    let xdg = env.path().join("xdg");
    std::fs::create_dir_all(xdg.join("bedrock-keyd")).unwrap();
    std::fs::write(
        xdg.join("bedrock-keyd/config.toml"),
        one_key(env.path(), "region = \"eu-north-1\""),
    )
    .unwrap();

    // $BEDROCK_KEYD_CONFIG beats $XDG_CONFIG_HOME. (Its key has no region: one from
    // the environment, or `check` would fail for it, instance metadata being off.)
    let out = env
        .cmd()
        .env("AWS_REGION", "us-east-1")
        .env("BEDROCK_KEYD_CONFIG", &via_var)
        .env("XDG_CONFIG_HOME", &xdg)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(util::stdout(&out).contains("from-var.toml ($BEDROCK_KEYD_CONFIG)"));

    // Then $XDG_CONFIG_HOME/bedrock-keyd/config.toml.
    let out = env
        .cmd()
        .env("XDG_CONFIG_HOME", &xdg)
        .arg("check")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(util::stdout(&out).contains("eu-north-1"));

    // A missing explicit file is a config error naming it.
    let out = env
        .cmd()
        .args(["check", "--config", "/nonexistent/bedrock-keyd.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        util::stderr(&out).contains("/nonexistent/bedrock-keyd.toml: cannot read the config file")
    );
}

#[test]
fn no_config_anywhere_says_where_it_looked() {
    let env = TestEnv::new();
    // HOME is the empty test home; /etc/bedrock-keyd/config.toml is not expected on a
    // test machine, and if it is, this test cannot tell anything.
    if Path::new("/etc/bedrock-keyd/config.toml").exists() {
        util::report_skip("/etc/bedrock-keyd/config.toml exists on this machine");
        return;
    }
    let out = env.cmd().arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = util::stderr(&out);
    assert!(stderr.contains("no config file found"), "{stderr}");
    assert!(
        stderr.contains(".config/bedrock-keyd/config.toml"),
        "{stderr}"
    );
}

/// The config's `log_format` applies from the first log line of `once` (the file is
/// read once, before logging starts); `--log-format` overrides it; a broken config is
/// still one plain error line.
#[test]
fn log_format_comes_from_the_config_unless_the_flag_says_otherwise() {
    let env = TestEnv::new();
    let config = env.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\n\n[[key]]\nname = \"k\"\nregion = \"us-east-1\"\n\
             [[key.sink]]\ntype = \"file\"\npath = \"{}/k.key\"\n",
            env.path().display()
        ),
    )
    .unwrap();
    let once = |extra: &[&str]| {
        let out = util::at_default_log_level(&mut env.cmd_with_example_creds())
            .args(extra)
            .args(["once", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", util::stderr(&out));
        util::stderr(&out)
    };
    let json = once(&[]);
    assert!(!json.is_empty());
    for line in json.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(entry["fields"]["message"].is_string(), "{line}");
    }
    let text = once(&["--log-format", "text"]);
    assert!(text.lines().all(|l| !l.starts_with('{')), "{text}");
    assert!(text.contains("INFO"), "{text}");

    std::fs::write(&config, "log_format = \"json\"\n[[key]]\nnam = 1\n").unwrap();
    let out = util::at_default_log_level(&mut env.cmd_with_example_creds())
        .args(["once", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = util::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("bedrock-keyd: error: "), "{err}");
}

/// A secret pasted into the wrong field is not printed back (issue 13): the error
/// still names the file, line and field, with the value replaced by a label.
#[test]
fn a_secret_pasted_into_a_field_is_not_echoed_in_the_error() {
    const SECRET: &str = "pastedSecret/K7MDENG+bPxRfiCYEXAMPLE0123";
    const KEY_ID: &str = "AKIAZZPASTEDKEYID001";
    const TOKEN: &str = "IQoJb3JpZ2luX2VjEPastedToken//////////wEaCXVzLWVhc3QtMSJHMEUCIQD0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP";
    for secret in [SECRET, KEY_ID, TOKEN] {
        crate::leaks::register_secret(secret);
    }
    let env = TestEnv::new();
    let dir = env.path().to_owned();
    let sink = format!(
        "  [[key.sink]]\n  type = \"file\"\n  path = \"{}\"\n",
        dir.join("k.key").display()
    );
    // (config, line, the start of the error after the path, the label)
    let cases = [
        (
            format!("[[key]]\nname = \"k\"\nregion = \"{SECRET}\"\n{sink}"),
            3,
            "key \"k\": region: \"[redacted secret]\" is not a region name",
        ),
        (
            format!("[[key]]\nname = \"k\"\nregion = \"{TOKEN}\"\n{sink}"),
            3,
            "key \"k\": region: \"[redacted session token]\" is not a region name",
        ),
        (
            format!("[[key]]\nname = \"{SECRET}\"\n{sink}"),
            2,
            "key[0].name: \"[redacted secret]\" is not a key name",
        ),
        // A valid name, echoed in the field path of another error.
        (
            format!("[[key]]\nname = \"{KEY_ID}\"\nlifetime = \"1y\"\n{sink}"),
            3,
            "key \"[redacted access key id]\": lifetime: \"1y\": unknown unit",
        ),
        (
            format!("[[key]]\nname = \"k\"\nrole_arn = \"{SECRET}\"\n{sink}"),
            3,
            "key \"k\": role_arn: \"[redacted secret]\" is not an IAM role ARN",
        ),
        (
            format!("[[key]]\nname = \"k\"\nlifetime = \"{SECRET}\"\n{sink}"),
            3,
            "key \"k\": lifetime: \"[redacted secret]\" is not a duration",
        ),
    ];
    for (text, line, expected) in cases {
        let path = write_config(&env, "c.toml", &text);
        let out = env
            .cmd()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = util::stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{stderr}");
        for secret in [SECRET, KEY_ID, TOKEN] {
            assert!(!stderr.contains(secret), "echoed: {stderr}");
        }
        let prefix = format!("bedrock-keyd: error: {}:{line}:", path.display());
        let rest = stderr
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            rest.split_once(": ")
                .is_some_and(|(_, r)| r.starts_with(expected)),
            "expected {expected:?}:\n{stderr}"
        );
    }
}

/// The flags' sink and pid-file paths follow the config's rule: one ending in `/`, `/.`
/// or `/..` names a directory and is a usage error, not cleaned into a file path
/// (`--file /run/keys/.` once wrote a file named `/run/keys`).
#[test]
fn a_path_flag_naming_a_directory_is_a_usage_error() {
    let env = TestEnv::new();
    let dir = env.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    for (flag, tail) in [
        ("--file", "/."),
        ("--file", "/.."),
        ("--env-file", "/"),
        ("--pid-file", "/."),
    ] {
        let path = format!("{}{tail}", dir.display());
        let mut cmd = env.cmd_with_example_creds();
        cmd.args(["once", "--region", "us-west-2"]);
        if flag == "--pid-file" {
            cmd.arg("--file").arg(dir.join("k.key"));
        }
        let out = cmd.args([flag, &path]).output().unwrap();
        let stderr = util::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {stderr}");
        assert!(stderr.contains("names a directory"), "{stderr}");
    }
    assert!(dir.is_dir() && tree(&dir).is_empty(), "{:?}", tree(&dir));
}
