//! Config parsing and validation: what is accepted, and what each mistake says.

use super::*;

const PATH: &str = "/etc/bedrock-keyd/config.toml";

fn ok(text: &str) -> Config {
    match parse(text, Path::new(PATH)) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse(text, Path::new(PATH)) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Asserts the error starts with `PATH:line:col: field: ` and contains `needle`.
#[track_caller]
fn assert_err(text: &str, line_col: &str, field: &str, needle: &str) {
    let e = err(text);
    let prefix = format!("{PATH}:{line_col}: {field}: ");
    assert!(
        e.starts_with(&prefix),
        "expected prefix {prefix:?}, got:\n{e}"
    );
    assert!(e.contains(needle), "expected {needle:?} in:\n{e}");
}

/// A minimal valid key, to which a test appends lines.
fn key(extra: &str) -> String {
    format!(
        "[[key]]\nname = \"k\"\n{extra}\n  [[key.sink]]\n  type = \"file\"\n  path = \"/run/k.key\"\n"
    )
}

/// The example of the design contract, verbatim but for the ellipsis.
const DESIGN_EXAMPLE: &str = r#"
log_format = "text"            # text | json  (journald reads stderr)
listen = "127.0.0.1:9464"      # optional: /healthz /readyz /metrics

[defaults]                     # every [[key]] inherits these
region = "us-east-1"
lifetime = "12h"               # requested; effective expiry may be earlier
refresh_at = 0.5               # re-mint when this fraction of the effective lifetime has passed
jitter = 0.1                   # ± fraction, so a fleet does not mint in lockstep
min_remaining = "5m"           # always re-mint at least this long before expiry

[[key]]
name = "default"               # unique; appears in logs, metrics and the keyring account
profile = "prod"               # shared-config profile: SSO, credential_process, role chains
role_arn = "arn:aws:iam::123456789012:role/bedrock-invoke"   # optional
external_id = "example-external-id"              # optional, with role_arn
region = "us-west-2"

  [[key.sink]]
  type = "file"                # file | env-file | keyring
  path = "/run/bedrock-keyd/default.key"
  format = "raw"
  mode = "0640"                # default "0600"; enforced on every write, whatever the umask
  owner = "app"                # name or numeric id; optional
  group = "app"

  [[key.sink]]
  type = "env-file"            # systemd EnvironmentFile=, docker --env-file, `set -a; . f`
  path = "/etc/myapp/bedrock.env"
  variable = "AWS_BEARER_TOKEN_BEDROCK"   # other lines and comments are preserved

  [[key.sink]]
  type = "keyring"             # macOS Keychain, Linux Secret Service or kernel keyring
  service = "bedrock-keyd"
  account = "default"

  [[key.notify]]
  pid_file = "/run/myapp.pid"  # re-read every time; a missing file at startup is "pending"
  signal = "HUP"

  [[key.notify]]
  process = "litellm"          # every process whose name matches exactly
  signal = "HUP"

  [[key.notify]]
  systemd_unit = "myapp.service"
  action = "reload-or-restart"

  [[key.notify]]
  command = ["/usr/local/bin/app-reload"]
  timeout = "10s"              # gets BEDROCK_KEYD_KEY_NAME / _EXPIRES_AT, never the key
"#;

#[test]
fn the_design_example_is_valid() {
    let c = ok(DESIGN_EXAMPLE);
    assert_eq!(c.log_format, Some(LogFormat::Text));
    assert_eq!(c.listen, Some("127.0.0.1:9464".parse().unwrap()));
    assert_eq!(c.keys.len(), 1);
    let k = &c.keys[0];
    assert_eq!(k.name.as_str(), "default");
    assert_eq!(
        k.source,
        SourceSpec {
            profile: Some("prod".into()),
            region: Some(Region::new("us-west-2").unwrap()),
            role_arn: Some("arn:aws:iam::123456789012:role/bedrock-invoke".into()),
            external_id: Some("example-external-id".into()),
            role_session_name: None,
            from_config_file: true,
            role_session_duration: None,
        }
    );
    assert_eq!(k.lifetime, Lifetime::MAX);
    assert_eq!(k.policy, RefreshPolicy::default());
    assert_eq!(
        k.sinks,
        vec![
            SinkSpec::File(FileSpec {
                path: "/run/bedrock-keyd/default.key".into(),
                format: FileFormat::Raw,
                access: FileAccess {
                    mode: "0640".parse().unwrap(),
                    owner: Some(UserRef::Name("app".into())),
                    group: Some(UserRef::Name("app".into())),
                    follow_symlinks: false,
                    allow_world_readable: false,
                },
            }),
            SinkSpec::EnvFile(EnvFileSpec {
                path: "/etc/myapp/bedrock.env".into(),
                variable: "AWS_BEARER_TOKEN_BEDROCK".into(),
                access: FileAccess::default(),
            }),
            SinkSpec::Keyring(KeyringSpec::new("bedrock-keyd", "default")),
        ]
    );
    assert_eq!(
        k.notify,
        vec![
            NotifySpec::PidFile {
                path: "/run/myapp.pid".into(),
                signal: Signal::Hup
            },
            NotifySpec::Process {
                name: "litellm".into(),
                signal: Signal::Hup
            },
            NotifySpec::SystemdUnit {
                unit: "myapp.service".into(),
                action: SystemdAction::ReloadOrRestart
            },
            NotifySpec::Command {
                argv: vec!["/usr/local/bin/app-reload".into()],
                timeout: Duration::from_secs(10)
            },
        ]
    );
}

#[test]
fn defaults_are_inherited_and_overridden() {
    let c = ok(r#"
[defaults]
profile = "shared"
region = "eu-west-1"
lifetime = "1h"
refresh_at = 0.6
jitter = 0.05
min_remaining = "10m"

[[key]]
name = "inherits"
  [[key.sink]]
  type = "file"
  path = "/run/a.key"

[[key]]
name = "overrides"
profile = "own"
region = "us-east-2"
lifetime = "30m"
refresh_at = 0.4
jitter = 0
min_remaining = "2m"
  [[key.sink]]
  type = "keyring"
"#);
    let a = &c.keys[0];
    assert_eq!(a.source.profile.as_deref(), Some("shared"));
    assert_eq!(
        a.source.region.as_ref().map(Region::as_str),
        Some("eu-west-1")
    );
    assert_eq!(a.lifetime.get(), Duration::from_secs(3600));
    assert_eq!(
        a.policy,
        RefreshPolicy::new(0.6, 0.05, Duration::from_secs(600)).unwrap()
    );
    let b = &c.keys[1];
    assert_eq!(b.source.profile.as_deref(), Some("own"));
    assert_eq!(
        b.source.region.as_ref().map(Region::as_str),
        Some("us-east-2")
    );
    assert_eq!(b.lifetime.get(), Duration::from_secs(1800));
    assert_eq!(
        b.policy,
        RefreshPolicy::new(0.4, 0.0, Duration::from_secs(120)).unwrap()
    );
    // A keyring sink defaults to the daemon's service and the key's name.
    assert_eq!(
        b.sinks,
        vec![SinkSpec::Keyring(KeyringSpec::new(
            DEFAULT_KEYRING_SERVICE,
            "overrides"
        ))]
    );
}

#[test]
fn built_in_defaults() {
    let c = ok(&key(""));
    assert_eq!(c.log_format, None);
    assert_eq!(c.listen, None);
    let k = &c.keys[0];
    assert_eq!(
        k.source,
        SourceSpec {
            from_config_file: true,
            ..SourceSpec::default()
        }
    );
    assert_eq!(k.lifetime, DEFAULT_LIFETIME);
    assert_eq!(k.policy, RefreshPolicy::default());
    assert!(k.notify.is_empty());
    let SinkSpec::File(f) = &k.sinks[0] else {
        panic!("{:?}", k.sinks)
    };
    assert_eq!(f.format, FileFormat::Raw);
    assert_eq!(f.access, FileAccess::default());
    assert_eq!(f.access.mode, DEFAULT_MODE);
}

#[test]
fn notify_defaults_and_variants() {
    let c = ok(&key(r#"
  [[key.notify]]
  pid_file = "/run/app.pid"
  [[key.notify]]
  process = "app"
  signal = "SIGUSR1"
  [[key.notify]]
  systemd_unit = "app.service"
  [[key.notify]]
  systemd_unit = "other.service"
  signal = "usr2"
  [[key.notify]]
  systemd_unit = "third.service"
  action = "HUP"
  [[key.notify]]
  command = ["/bin/reload", "--all"]
"#));
    assert_eq!(
        c.keys[0].notify,
        vec![
            NotifySpec::PidFile {
                path: "/run/app.pid".into(),
                signal: Signal::Hup
            },
            NotifySpec::Process {
                name: "app".into(),
                signal: Signal::Usr1
            },
            NotifySpec::SystemdUnit {
                unit: "app.service".into(),
                action: SystemdAction::ReloadOrRestart
            },
            NotifySpec::SystemdUnit {
                unit: "other.service".into(),
                action: SystemdAction::Signal(Signal::Usr2)
            },
            NotifySpec::SystemdUnit {
                unit: "third.service".into(),
                action: SystemdAction::Signal(Signal::Hup)
            },
            NotifySpec::Command {
                argv: vec!["/bin/reload".into(), "--all".into()],
                timeout: dependents::DEFAULT_COMMAND_TIMEOUT
            },
        ]
    );
}

#[test]
fn paths_are_cleaned_and_compared_cleanly() {
    let c =
        ok("[[key]]\nname = \"k\"\n[[key.sink]]\ntype = \"file\"\npath = \"/run//x/./k.key\"\n");
    let SinkSpec::File(f) = &c.keys[0].sinks[0] else {
        panic!()
    };
    assert_eq!(f.path, PathBuf::from("/run/x/k.key"));
    assert_err(
        "[[key]]\nname = \"a\"\n[[key.sink]]\ntype = \"file\"\npath = \"/run/k.key\"\n\
         [[key]]\nname = \"b\"\n[[key.sink]]\ntype = \"env-file\"\npath = \"/run/./k.key\"\n",
        "10:8",
        "key \"b\": sink[0].path",
        "file /run/k.key is already written by key \"a\": sink[0].path; every sink must have its own target (see line 5)",
    );
}

#[test]
fn parser_errors_name_line_column_and_field() {
    // A typo'd field: the message lists what is allowed.
    assert_err(
        &key("  [[key.sink]]\n  type = \"file\"\n  pathh = \"/x\""),
        "5:3",
        "key \"k\": sink[0].pathh",
        "unknown field `pathh`, expected one of `type`, `path`",
    );
    assert_err(
        "log_fromat = \"json\"\n",
        "1:1",
        "log_fromat",
        "unknown field `log_fromat`",
    );
    assert_err(
        "[defaults]\nlifetime = \"1h\"\nregoin = \"x\"\n",
        "3:1",
        "defaults.regoin",
        "expected one of `profile`, `region`",
    );
    assert_err(
        &key("lifetime = 3600"),
        "3:12",
        "key \"k\": lifetime",
        "write a quoted duration such as \"90s\"",
    );
    assert_err(
        &key("  [[key.snk]]\n  type = \"file\""),
        "3:9",
        "key \"k\": snk",
        "unknown field `snk`",
    );
    // Tables with the wrong brackets or in the wrong place.
    assert_err(
        "[key]\nname = \"a\"\n",
        "1:1",
        "key",
        "write [[key]] (double brackets",
    );
    assert_err(
        "[[key.sink]]\ntype = \"file\"\n",
        "1:3",
        "key.sink",
        "add that [[key]] above it",
    );
    assert_err(
        "[[key]]\nname = \"a\"\n[key.sink]\ntype = \"file\"\n",
        "3:1",
        "key \"a\": sink",
        "write [[key.sink]]",
    );
    assert_err(
        "[[defaults]]\nregion = \"x\"\n",
        "1:1",
        "defaults",
        "write [defaults] (single brackets",
    );
    let syntax = err("listen = \"127.0.0.1:9464\nx = 1\n");
    assert!(syntax.starts_with(&format!("{PATH}:1:")), "{syntax}");
}

#[test]
fn value_errors_name_line_column_and_field() {
    assert_err(
        &key("lifetime = \"13h\""),
        "3:12",
        "key \"k\": lifetime",
        "longer than the maximum of 12h",
    );
    assert_err(
        &key("lifetime = \"0s\""),
        "3:12",
        "key \"k\": lifetime",
        "shorter than the minimum of 1s",
    );
    assert_err(
        &key("lifetime = \"30 minutes\""),
        "3:12",
        "key \"k\": lifetime",
        "unknown unit",
    );
    assert_err(
        "[defaults]\nmin_remaining = \"5\"\n",
        "2:17",
        "defaults.min_remaining",
        "has no unit",
    );
    assert_err(
        &key("refresh_at = 1.0"),
        "3:14",
        "key \"k\": refresh_at",
        "strictly between 0 and 1",
    );
    assert_err(
        "[defaults]\nrefresh_at = 0\n",
        "2:14",
        "defaults.refresh_at",
        "strictly between 0 and 1",
    );
    assert_err(
        &key("jitter = 0.6"),
        "3:10",
        "key \"k\": jitter",
        "between 0 and 0.5",
    );
    assert_err(
        &key("region = \"US-EAST-1\""),
        "3:10",
        "key \"k\": region",
        "not a region name",
    );
    assert_err(
        "log_format = \"yaml\"\n",
        "1:14",
        "log_format",
        "use \"text\" or \"json\"",
    );
    assert_err(
        "listen = \"localhost:9464\"\n",
        "1:10",
        "listen",
        "host names are not resolved",
    );
    assert_err("listen = \"127.0.0.1:0\"\n", "1:10", "listen", "port 0");
    assert_err(
        "[[key]]\nname = \"bad name!\"\n",
        "2:8",
        "key[0].name",
        "not a key name",
    );
    assert_err(
        &key("profile = \"\""),
        "3:11",
        "key \"k\": profile",
        "not a profile name",
    );
}

#[test]
fn min_remaining_must_be_shorter_than_the_lifetime() {
    assert_err(
        &key("lifetime = \"5m\"\nmin_remaining = \"5m\""),
        "4:17",
        "key \"k\": min_remaining",
        "min_remaining 5m must be shorter than the lifetime 5m",
    );
    // Inherited from [defaults]: blamed there, and says so.
    let text = format!(
        "[defaults]\nmin_remaining = \"1h\"\n{}",
        key("lifetime = \"30m\"")
    );
    assert_err(
        &text,
        "2:17",
        "key \"k\": min_remaining",
        "(from [defaults])",
    );
}

#[test]
fn the_default_min_remaining_shrinks_for_a_short_lifetime() {
    let min = |text: &str| ok(text).keys[0].policy.min_remaining();
    // The built-in 5m becomes a quarter of a lifetime under 20m, never an error.
    assert_eq!(min(&key("lifetime = \"2m\"")), Duration::from_secs(30));
    assert_eq!(
        min(&format!("[defaults]\nlifetime = \"1m\"\n{}", key(""))),
        Duration::from_secs(15)
    );
    assert_eq!(min(&key("lifetime = \"1s\"")), Duration::from_secs(1));
    assert_eq!(min(&key("lifetime = \"20m\"")), Duration::from_secs(300));
    assert_eq!(min(&key("lifetime = \"12h\"")), Duration::from_secs(300));
    // An explicit one is kept as given.
    assert_eq!(
        min(&key("lifetime = \"2m\"\nmin_remaining = \"1m\"")),
        Duration::from_secs(60)
    );
}

#[test]
fn role_fields() {
    assert_err(
        &key("external_id = \"abc123\""),
        "3:15",
        "key \"k\": external_id",
        "only allowed together with role_arn",
    );
    assert_err(
        &key("role_session_name = \"me\""),
        "3:21",
        "key \"k\": role_session_name",
        "only allowed together with role_arn",
    );
    assert_err(
        &key("role_arn = \"arn:aws:iam::123:role/x\""),
        "3:12",
        "key \"k\": role_arn",
        "not an IAM role ARN",
    );
    let c = ok(&key(
        "role_arn = \"arn:aws-cn:iam::123456789012:role/path/x\"\nrole_session_name = \"keyd@host\"",
    ));
    assert_eq!(
        c.keys[0].source.role_session_name.as_deref(),
        Some("keyd@host")
    );
}

#[test]
fn key_level_errors() {
    assert_err(
        "[[key]]\nname = \"a\"\n[[key.sink]]\ntype = \"keyring\"\n[[key]]\nname = \"a\"\n[[key.sink]]\ntype = \"keyring\"\naccount = \"other\"\n",
        "6:8",
        "key \"a\"",
        "already used by key[0]; key names must be unique (see line 2)",
    );
    assert_err(
        "[[key]]\nname = \"lonely\"\n",
        "1:1",
        "key \"lonely\"",
        "has no [[key.sink]]",
    );
    assert_err(
        "[[key]]\nprofile = \"p\"\n",
        "1:1",
        "key[0]",
        "missing field `name`",
    );
    assert_err(
        "log_format = \"json\"\n",
        "1:1",
        "key",
        "no [[key]] is configured",
    );
    // Two keyring sinks on the same entry.
    assert_err(
        "[[key]]\nname = \"a\"\n[[key.sink]]\ntype = \"keyring\"\naccount = \"x\"\n\
         [[key]]\nname = \"b\"\n[[key.sink]]\ntype = \"keyring\"\naccount = \"x\"\n",
        "8:1",
        "key \"b\": sink[0]",
        "keyring bedrock-keyd:x is already written by key \"a\": sink[0]",
    );
}

#[test]
fn sink_errors() {
    let sink = |body: &str| format!("[[key]]\nname = \"k\"\n[[key.sink]]\n{body}\n");
    assert_err(
        &sink("type = \"s3\"\npath = \"/x\""),
        "4:8",
        "key \"k\": sink[0].type",
        "\"s3\" is not a sink type; use \"file\", \"env-file\" or \"keyring\"",
    );
    assert_err(
        &sink("type = \"file\""),
        "3:1",
        "key \"k\": sink[0]",
        "missing field `path`",
    );
    assert_err(
        &sink("path = \"/x\""),
        "3:1",
        "key \"k\": sink[0]",
        "missing field `type`",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"run/k.key\""),
        "5:8",
        "key \"k\": sink[0].path",
        "is a relative path",
    );
    assert_err(
        &sink("type = \"env-file\"\npath = \"/run/../etc/k.env\""),
        "5:8",
        "key \"k\": sink[0].path",
        "contains \"..\"",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/run/keys/\""),
        "5:8",
        "key \"k\": sink[0].path",
        "names a directory",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nmode = \"0800\""),
        "6:8",
        "key \"k\": sink[0].mode",
        "\"0800\" is not an octal permission string",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nmode = 0o640"),
        "6:8",
        "key \"k\": sink[0].mode",
        "write a quoted octal string",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nmode = \"0644\""),
        "6:8",
        "key \"k\": sink[0].mode",
        "lets every user on the machine read the key",
    );
    let c = ok(&sink(
        "type = \"file\"\npath = \"/x\"\nmode = \"0644\"\nallow_world_readable = true",
    ));
    let SinkSpec::File(f) = &c.keys[0].sinks[0] else {
        panic!()
    };
    assert!(f.access.allow_world_readable && f.access.mode.world_readable());
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nformat = \"yaml\""),
        "6:10",
        "key \"k\": sink[0].format",
        "expected \"raw\" or \"json\"",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nvariable = \"X\""),
        "6:12",
        "key \"k\": sink[0].variable",
        "not allowed for a sink of type \"file\" (allowed: type, path, format",
    );
    assert_err(
        &sink("type = \"keyring\"\npath = \"/x\""),
        "5:8",
        "key \"k\": sink[0].path",
        "not allowed for a sink of type \"keyring\" (allowed: type, service, account, backend)",
    );
    assert_err(
        &sink("type = \"env-file\"\npath = \"/x\"\nvariable = \"1BAD\""),
        "6:12",
        "key \"k\": sink[0].variable",
        "not a variable name",
    );
    assert_err(
        &sink("type = \"file\"\npath = \"/x\"\nowner = \"\""),
        "6:9",
        "key \"k\": sink[0].owner",
        "empty user or group name",
    );
    assert_err(
        &sink("type = \"keyring\"\nservice = \" \""),
        "5:11",
        "key \"k\": sink[0].service",
        "must not be empty",
    );
}

#[test]
fn notify_errors() {
    let n = |body: &str| key(&format!("  [[key.notify]]\n{body}"));
    assert_err(
        &n("pid_file = \"/run/a.pid\"\nsignal = \"KILL\""),
        "5:10",
        "key \"k\": notify[0].signal",
        "\"KILL\" is not an accepted signal; use one of HUP",
    );
    assert_err(
        &n("pid_file = \"run/a.pid\""),
        "4:12",
        "key \"k\": notify[0].pid_file",
        "relative path",
    );
    assert_err(
        &n("command = []"),
        "4:11",
        "key \"k\": notify[0].command",
        "is empty",
    );
    assert_err(
        &n("command = [\"\"]"),
        "4:11",
        "key \"k\": notify[0].command",
        "is empty",
    );
    assert_err(
        &n("command = [\"/bin/x\"]\ntimeout = \"0s\""),
        "5:11",
        "key \"k\": notify[0].timeout",
        "outside 1s",
    );
    assert_err(
        &n("command = [\"/bin/x\"]\nsignal = \"HUP\""),
        "5:10",
        "key \"k\": notify[0].signal",
        "not allowed with command (allowed with command: timeout)",
    );
    assert_err(
        &n("signal = \"HUP\""),
        "3:3",
        "key \"k\": notify[0]",
        "names no one to notify: set exactly one of pid_file, process, systemd_unit or command",
    );
    assert_err(
        &n("pid_file = \"/a.pid\"\nprocess = \"a\""),
        "5:11",
        "key \"k\": notify[0].process",
        "both pid_file and process are set",
    );
    assert_err(
        &n("systemd_unit = \"a.service\"\naction = \"stop\""),
        "5:10",
        "key \"k\": notify[0].action",
        "use \"reload\", \"restart\", \"reload-or-restart\" or a signal",
    );
    assert_err(
        &n("systemd_unit = \"a.service\"\naction = \"reload\"\nsignal = \"HUP\""),
        "5:10",
        "key \"k\": notify[0].action",
        "either action or signal",
    );
    assert_err(
        &n("systemd_unit = \"my app\""),
        "4:16",
        "key \"k\": notify[0].systemd_unit",
        "not a systemd unit name",
    );
    assert_err(
        &n("process = \"/usr/bin/app\""),
        "4:11",
        "key \"k\": notify[0].process",
        "not a process name",
    );
}

#[test]
fn key_names() {
    for good in ["default", "a", "prod-us.west_2", "0", &"x".repeat(64)] {
        assert!(KeyName::new(good).is_ok(), "{good}");
    }
    for bad in ["", "-a", ".a", "a b", "a/b", "ä", "a:b", &"x".repeat(65)] {
        assert!(KeyName::new(bad).is_err(), "{bad}");
    }
}

#[test]
fn lookup_order() {
    use std::collections::HashMap;
    let env = |pairs: &[(&str, &str)]| {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name: &str| map.get(name).cloned()
    };
    let none = |_: &Path| false;
    let all = |_: &Path| true;
    let found = |pairs: &[(&str, &str)], exists: &dyn Fn(&Path) -> bool| {
        locate(None, env(pairs), exists).map(|l| (l.path, l.origin))
    };

    // --config wins, whether or not it exists.
    let l = locate(
        Some(Path::new("/x.toml")),
        env(&[(CONFIG_ENV_VAR, "/y")]),
        none,
    )
    .unwrap();
    assert_eq!(
        (l.path, l.origin),
        (PathBuf::from("/x.toml"), ConfigOrigin::Flag)
    );
    // Then the variable (empty counts as unset).
    assert_eq!(
        found(&[(CONFIG_ENV_VAR, "/y.toml")], &none).unwrap(),
        (PathBuf::from("/y.toml"), ConfigOrigin::EnvVar)
    );
    // Then XDG_CONFIG_HOME, then ~/.config, then /etc — the first that exists.
    assert_eq!(
        found(
            &[
                (CONFIG_ENV_VAR, ""),
                ("XDG_CONFIG_HOME", "/xdg"),
                ("HOME", "/h")
            ],
            &all
        )
        .unwrap(),
        (
            PathBuf::from("/xdg/bedrock-keyd/config.toml"),
            ConfigOrigin::User
        )
    );
    assert_eq!(
        found(&[("XDG_CONFIG_HOME", "relative"), ("HOME", "/h")], &all).unwrap(),
        (
            PathBuf::from("/h/.config/bedrock-keyd/config.toml"),
            ConfigOrigin::User
        )
    );
    let only_etc = |p: &Path| p == Path::new(SYSTEM_CONFIG_PATH);
    assert_eq!(
        found(&[("HOME", "/h")], &only_etc).unwrap(),
        (PathBuf::from(SYSTEM_CONFIG_PATH), ConfigOrigin::System)
    );
    // Nothing: the error lists what was tried.
    let e = found(&[("HOME", "/h")], &none).unwrap_err().to_string();
    assert!(
        e.contains("/h/.config/bedrock-keyd/config.toml, /etc/bedrock-keyd/config.toml"),
        "{e}"
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, key("region = \"bad region\"")).unwrap();
    let e = load(&path).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:3:10: ", path.display())), "{e}");
    let e = load(&dir.path().join("missing.toml"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.toml: cannot read the config file"),
        "{e}"
    );
    std::fs::write(&path, key("")).unwrap();
    assert_eq!(load(&path).unwrap().keys.len(), 1);
}

#[test]
fn single_key_mode_gets_the_same_checks() {
    let name = KeyName::new("cli").unwrap();
    let file = |p: &str| {
        SinkSpec::File(FileSpec {
            path: p.into(),
            format: FileFormat::Raw,
            access: FileAccess::default(),
        })
    };
    let build = |lifetime: &str, sinks: Vec<SinkSpec>| {
        KeyConfig::new(
            name.clone(),
            SourceSpec::default(),
            lifetime.parse().unwrap(),
            RefreshPolicy::default(),
            sinks,
            vec![],
        )
    };
    let key = build("1h", vec![file("/run/a.key")]).unwrap();
    let config = Config::single(key.clone());
    assert_eq!(config.key("cli"), Some(&key));
    assert_eq!(config.key("other"), None);
    assert!(build("1h", vec![]).unwrap_err().contains("no sink"));
    assert!(
        build("1h", vec![file("/run/a.key"), file("/run/a.key")])
            .unwrap_err()
            .contains(
                "--file: file /run/a.key is already written by --file; every sink must have its own target"
            )
    );
    // An explicit --min-remaining too long for --lifetime is refused by the flags
    // (`tests/it/first_day.rs`): the policy given here may be a shrunk default.
}

/// A key with only a proxy; `proxy` is the body of its `[[key.proxy]]`.
fn proxy_key(proxy: &str) -> String {
    format!("[[key]]\nname = \"k\"\n[[key.proxy]]\n{proxy}\n")
}

#[test]
fn a_key_may_have_only_a_proxy_with_defaults() {
    let c = ok(&proxy_key(
        "listen = \"127.0.0.1:8790\"\ntoken_file = \"/run/bk/proxy.token\"",
    ));
    let k = &c.keys[0];
    assert!(k.sinks.is_empty());
    assert_eq!(
        k.proxies,
        vec![ProxySpec {
            listen: Listen::Tcp("127.0.0.1:8790".parse().unwrap()),
            upstream: None,
            token_file: "/run/bk/proxy.token".into(),
            tls: false,
            ca_bundle: None,
        }]
    );
    let c = ok(&proxy_key(
        "listen = \"unix:/run/bk/b.sock\"\nmode = \"0660\"\nupstream = \"https://bedrock-runtime.eu-west-1.amazonaws.com\"\ntoken_file = \"/run/bk/t\"\ntls = true\nca_bundle = \"/etc/ssl/corp.pem\"",
    ));
    let p = &c.keys[0].proxies[0];
    assert!(matches!(&p.listen, Listen::Unix { mode, .. } if mode.bits() == 0o660));
    assert!(p.tls && p.ca_bundle.is_some() && p.upstream.is_some());
}

#[test]
fn proxy_mistakes_name_their_line() {
    assert_err(
        &proxy_key("listen = \"0.0.0.0:8790\"\ntoken_file = \"/run/t\""),
        "4:10",
        "key \"k\": proxy[0].listen",
        "not a loopback address",
    );
    assert_err(
        &proxy_key("listen = \"127.0.0.1:8790\"\nmode = \"0600\"\ntoken_file = \"/run/t\""),
        "5:8",
        "key \"k\": proxy[0].mode",
        "unix socket",
    );
    assert_err(
        &proxy_key(
            "listen = \"127.0.0.1:8790\"\nupstream = \"http://example.com\"\ntoken_file = \"/run/t\"",
        ),
        "5:12",
        "key \"k\": proxy[0].upstream",
        "clear text",
    );
    let e = err(&proxy_key("listen = \"127.0.0.1:8790\""));
    assert!(e.contains("missing field `token_file`"), "{e}");
    let e = err("[[key]]\nname = \"k\"\n");
    assert!(e.contains("no [[key.sink]] and no [[key.proxy]]"), "{e}");
    let two = "[[key]]\nname = \"a\"\n[[key.proxy]]\nlisten = \"127.0.0.1:8790\"\ntoken_file = \"/run/t\"\n[[key]]\nname = \"b\"\n[[key.proxy]]\nlisten = \"127.0.0.1:8790\"\ntoken_file = \"/run/t\"\n";
    assert_err(
        two,
        "9:10",
        "key \"b\": proxy[0].listen",
        "already used by key \"a\"",
    );
}
