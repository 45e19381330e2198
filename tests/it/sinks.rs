//! Delivery under stress: torn reads, crashes, a full disk, umasks, owners, env-file
//! preservation and sink errors, on real files with real processes.
//!
//! Readers and killed writers are separate processes: this test binary re-runs itself
//! as one (see [`helper_process`]), with the library doing the writing, so a test can
//! poll or SIGKILL a writer thousands of times without minting a key per write.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use bedrock_keyd::key::{ApiKey, KeyMeta};
use bedrock_keyd::sink::{
    self, EnvFileSpec, FileAccess, FileFormat, FileSpec, Sink, SinkSpec, WriteOutcome, atomic,
    envfile,
};

use crate::util::{self, TestEnv};

/// Tells a re-run of this binary which helper to be, if any.
const HELPER_ENV: &str = "BEDROCK_KEYD_TEST_HELPER";
/// The directory a helper works in.
const HELPER_DIR_ENV: &str = "BEDROCK_KEYD_TEST_DIR";
const VARIABLE: &str = "AWS_BEARER_TOKEN_BEDROCK";
/// The env-file the stress tests start from: every line but the managed one must
/// survive every rewrite.
const ENV_BASE: &str = "# app settings\nexport LOG_LEVEL=debug\nAWS_BEARER_TOKEN_BEDROCK=placeholder\nDB_URL=\"postgres://db/app?x=1\"\n";
/// The file names the stress helpers use, one per kind of target.
const RAW: &str = "key.raw";
const JSON: &str = "key.json";
const ENV: &str = "app.env";

/// Keys that differ in length (the region is part of the credential scope), so a
/// reader catching a mix of two would see a wrong length or a broken signature.
fn keys() -> Vec<(ApiKey, KeyMeta)> {
    use aws_credential_types::Credentials;
    use bedrock_keyd::key::mint::mint;
    use bedrock_keyd::key::{Lifetime, Region};
    let creds = Credentials::new(
        util::EXAMPLE_ACCESS_KEY_ID,
        util::EXAMPLE_SECRET_ACCESS_KEY,
        None,
        None,
        "test",
    );
    ["us-east-1", "ap-southeast-2", "eu-west-1"]
        .iter()
        .enumerate()
        .map(|(i, region)| {
            let minted = mint(
                &creds,
                &Region::new(region).unwrap(),
                Lifetime::from_secs(3600 + i as u64).unwrap(),
                UNIX_EPOCH + Duration::from_secs(1_795_680_000 + i as u64),
            )
            .unwrap();
            (minted.key, minted.meta)
        })
        .collect()
}

/// The stress targets in `dir`, all with `mode`.
fn stress_sinks(dir: &Path, mode: &str) -> Vec<(&'static str, Box<dyn Sink>)> {
    let access = FileAccess {
        mode: mode.parse().unwrap(),
        ..FileAccess::default()
    };
    let file = |name: &str, format| {
        sink::build(&SinkSpec::File(FileSpec {
            path: dir.join(name),
            format,
            access: access.clone(),
        }))
    };
    vec![
        (RAW, file(RAW, FileFormat::Raw)),
        (JSON, file(JSON, FileFormat::Json)),
        (
            ENV,
            sink::build(&SinkSpec::EnvFile(EnvFileSpec {
                path: dir.join(ENV),
                variable: VARIABLE.to_owned(),
                access: access.clone(),
            })),
        ),
    ]
}

/// Every complete content a stress target may hold.
fn valid_contents(name: &str) -> HashSet<Vec<u8>> {
    keys()
        .iter()
        .map(|(key, meta)| match name {
            RAW => sink::file::render(FileFormat::Raw, key, meta).to_vec(),
            JSON => sink::file::render(FileFormat::Json, key, meta).to_vec(),
            _ => envfile::merge(ENV_BASE.as_bytes(), VARIABLE, key.expose())
                .unwrap()
                .to_vec(),
        })
        .collect()
}

fn prepare_stress_dir(dir: &Path, mode: &str) {
    fs::write(dir.join(ENV), ENV_BASE).unwrap();
    let (key, meta) = &keys()[0];
    for (_, sink) in stress_sinks(dir, mode) {
        sink.write(key, meta).unwrap();
    }
}

/// Not a test of its own: when run with `BEDROCK_KEYD_TEST_HELPER` set, this is the
/// reader or writer process of the tests below. Without it, it returns at once.
#[test]
fn helper_process() {
    let Ok(role) = std::env::var(HELPER_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(HELPER_DIR_ENV).unwrap());
    match role.as_str() {
        "reader" => reader(&dir),
        "writer" => writer(&dir),
        "keyring-in-tokio" => keyring_in_tokio(),
        other => panic!("unknown helper role {other}"),
    }
}

/// Polls the stress targets until `dir/stop` appears. Every read must be one of the
/// complete contents and hold a key that decodes; the first bad read fails the process.
fn reader(dir: &Path) {
    let valid: Vec<(&str, HashSet<Vec<u8>>)> = [RAW, JSON, ENV]
        .iter()
        .map(|n| (*n, valid_contents(n)))
        .collect();
    let mut reads = 0u64;
    let mut seen = HashSet::new();
    while !dir.join("stop").exists() {
        for (name, valid) in &valid {
            let bytes = fs::read(dir.join(name))
                .unwrap_or_else(|e| panic!("read {reads}: {name} could not be read: {e}"));
            let text = String::from_utf8(bytes.clone())
                .unwrap_or_else(|_| panic!("read {reads}: {name} is not UTF-8"));
            let variable = (*name == ENV).then_some(VARIABLE);
            let key = bedrock_keyd::key::format::extract_key(&text, variable)
                .unwrap_or_else(|e| panic!("read {reads}: {name}: no key: {e}"));
            bedrock_keyd::key::decode::decode(&key)
                .unwrap_or_else(|e| panic!("read {reads}: {name}: torn key: {e}"));
            assert!(
                valid.contains(&bytes),
                "read {reads}: {name} holds {} bytes that are no complete content",
                bytes.len()
            );
            seen.insert(bytes);
            reads += 1;
        }
    }
    fs::write(dir.join("result"), format!("{reads} {}", seen.len())).unwrap();
}

/// Rewrites the stress targets with alternating keys until killed; creates
/// `dir/ready` after its first round.
fn writer(dir: &Path) {
    let keys = keys();
    let sinks = stress_sinks(dir, "0640");
    for round in 0usize.. {
        let (key, meta) = &keys[round % keys.len()];
        for (name, sink) in &sinks {
            sink.write(key, meta)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        if round == 0 {
            fs::write(dir.join("ready"), "").unwrap();
        }
    }
}

/// Re-runs this binary as the helper `role`, under umask 000 so that no file mode can
/// owe anything to the umask.
/// The daemon drives sinks from a tokio runtime on blocking threads: the Secret
/// Service store (zbus with its own executor) must work there, in both directions.
fn keyring_in_tokio() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::task::spawn_blocking(|| {
            let spec = bedrock_keyd::sink::KeyringSpec::new("bedrock-keyd-tokio", "t");
            let sink = sink::build(&SinkSpec::Keyring(spec));
            for (key, meta) in keys().iter().chain(keys().iter().take(1)) {
                sink.write(key, meta).unwrap();
                assert_eq!(sink.read().unwrap().as_ref(), Some(key));
            }
            let (key, meta) = &keys()[0];
            assert_eq!(sink.write(key, meta).unwrap(), WriteOutcome::Unchanged);
        })
        .await
        .unwrap();
    });
}

fn helper(role: &str, dir: &Path) -> Child {
    Command::new("sh")
        .args(["-c", r#"umask 000; exec "$0" "$@""#])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sinks::helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, role)
        .env(HELPER_DIR_ENV, dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// A directory on tmpfs when there is one: fsync is free there, so 10,000 rewrites
/// take seconds, and a concurrent reader sees exactly what it would on a disk (what a
/// reader sees depends on rename, not on fsync).
fn fast_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().unwrap()
}

fn torn_reads(dir: &Path, rewrites: usize) {
    prepare_stress_dir(dir, "0600");
    let reader = helper("reader", dir);
    let keys = keys();
    let sinks = stress_sinks(dir, "0600");
    let started = Instant::now();
    for i in 1..=rewrites {
        let (key, meta) = &keys[i % keys.len()];
        for (name, sink) in &sinks {
            assert_eq!(
                sink.write(key, meta)
                    .unwrap_or_else(|e| panic!("{name}: {e}")),
                WriteOutcome::Written
            );
        }
    }
    let elapsed = started.elapsed();
    fs::write(dir.join("stop"), "").unwrap();
    let out = reader.wait_with_output().unwrap();
    assert!(out.status.success(), "reader: {}", util::stderr(&out));
    let result = fs::read_to_string(dir.join("result")).unwrap();
    let (reads, distinct) = result.split_once(' ').unwrap();
    let (reads, distinct): (u64, usize) = (reads.parse().unwrap(), distinct.parse().unwrap());
    eprintln!(
        "{rewrites} rewrites of 3 files in {elapsed:?}; {reads} reads, {distinct} distinct contents, all complete"
    );
    // The reader really raced the writer: it saw several keys in every file.
    assert!(distinct >= 6, "{result}");
    assert!(reads >= 300, "{result}");
}

#[test]
fn torn_reads_never_happen_in_10000_rewrites() {
    let dir = fast_dir();
    torn_reads(dir.path(), 10_000);
}

#[test]
fn torn_reads_never_happen_on_disk() {
    // The same on the temp dir's real file system, with real fsyncs: fewer rewrites,
    // since each costs two fsyncs.
    let dir = tempfile::tempdir().unwrap();
    torn_reads(dir.path(), 1_000);
}

fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            [RAW, JSON, ENV]
                .iter()
                .any(|t| atomic::is_temp_for(&name, t))
        })
        .map(|e| e.path())
        .collect()
}

#[test]
fn sigkilled_writer_leaves_old_or_new_key_and_next_start_cleans_up() {
    const KILLS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    prepare_stress_dir(dir, "0640");
    let valid: Vec<_> = [RAW, JSON, ENV]
        .iter()
        .map(|n| (*n, valid_contents(n)))
        .collect();
    let seed = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill delays seeded with {seed}");
    // Kill delays drawn by proptest's generator, replayable from the printed seed.
    let mut rng = util::seeded_runner(seed).new_rng();
    let mut stale: Vec<PathBuf> = Vec::new();
    let mut kills_mid_write = 0;
    for kill in 0..=KILLS {
        let _ = fs::remove_file(dir.join("ready"));
        let mut writer = helper("writer", dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !dir.join("ready").exists() {
            if let Some(status) = writer.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut writer.stderr.take().unwrap(), &mut err)
                    .unwrap();
                panic!("writer exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "writer never got ready");
            std::thread::sleep(Duration::from_micros(200));
        }
        // The new writer's first round is done: it removed what its predecessor left.
        for path in &stale {
            assert!(
                !path.exists(),
                "kill {kill}: stale {} survived a restart",
                path.display()
            );
        }
        if kill == KILLS {
            writer.kill().unwrap();
            writer.wait().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_micros(
            proptest::prelude::RngExt::random_range(&mut rng, 0..20_000),
        ));
        writer.kill().unwrap(); // SIGKILL
        writer.wait().unwrap();

        for (name, valid) in &valid {
            let bytes = fs::read(dir.join(name)).unwrap();
            assert!(
                valid.contains(&bytes),
                "kill {kill}: {name} holds {} bytes that are neither the old nor the new key",
                bytes.len()
            );
        }
        stale = temp_files(dir);
        if !stale.is_empty() {
            kills_mid_write += 1;
        }
        for path in &stale {
            // Even under umask 000 a temp file never lets anyone but the owner (and
            // the configured group) read: it is owner-only until the final 0640 is
            // set, before any data.
            let mode = fs::metadata(path).unwrap().mode() & 0o7777;
            assert!(
                mode == 0o600 || mode == 0o640,
                "{}: mode {mode:o}",
                path.display()
            );
        }
    }
    eprintln!("{KILLS} kills, {kills_mid_write} of them left a temp file behind");
    assert!(
        kills_mid_write > 0,
        "no kill landed mid-write; the test proves nothing"
    );

    // A normal start after the last kill: one write, no temp file left anywhere.
    let (key, meta) = &keys()[1];
    for (_, sink) in stress_sinks(dir, "0640") {
        sink.write(key, meta).unwrap();
    }
    assert_eq!(temp_files(dir), Vec::<PathBuf>::new());
}

/// The `unshare` command line for a throw-away mount namespace (mounts vanish with
/// it, even if the test dies): plain as root, inside a user namespace otherwise.
fn private_mounts() -> Option<&'static str> {
    let unshare = if is_root() {
        "unshare -m --propagation private"
    } else {
        "unshare -U -r -m --propagation private"
    };
    Command::new("sh")
        .args(["-c", &format!("{unshare} true")])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(unshare)
}

/// A target's lock file (`src/sink/lock.rs`), which stays beside it by design.
fn is_lock_file(entry: &fs::DirEntry) -> bool {
    entry
        .file_name()
        .to_string_lossy()
        .ends_with(bedrock_keyd::sink::lock::LOCK_SUFFIX)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[test]
fn full_disk_fails_cleanly_and_keeps_the_old_key() {
    let Some(unshare) = private_mounts() else {
        return util::skip(
            "full-disk test needs a private mount namespace (root, or unprivileged user namespaces) and unshare",
        );
    };
    let env = TestEnv::new();
    fs::create_dir(env.path().join("mnt")).unwrap();
    let out = env.script(
        &format!(r#"exec {unshare} sh -ec '
            mount -t tmpfs -o size=64k tmpfs mnt
            "$BKD" once --region us-east-1 --file mnt/k.key --env-file mnt/app.env
            cp mnt/k.key before.key; cp mnt/app.env before.env
            dd if=/dev/zero of=mnt/fill bs=1k 2>/dev/null || true
            rc=0; "$BKD" once --region eu-west-1 --file mnt/k.key --env-file mnt/app.env 2>err || rc=$?
            echo $rc > rc
            cp mnt/k.key after.key; cp mnt/app.env after.env
            ls -A mnt > listing'"#
        ),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let read = |name: &str| fs::read_to_string(env.path().join(name)).unwrap();
    assert_eq!(read("rc").trim(), "73");
    let err = read("err");
    assert!(err.to_lowercase().contains("no space left"), "{err}");
    assert!(
        err.contains("mnt/k.key") && err.contains("mnt/app.env"),
        "{err}"
    );
    assert_eq!(read("before.key"), read("after.key"));
    assert_eq!(read("before.env"), read("after.env"));
    assert!(read("before.key").starts_with("bedrock-api-key-"));
    assert_eq!(
        read("listing")
            .split_whitespace()
            .filter(|name| !name.ends_with(bedrock_keyd::sink::lock::LOCK_SUFFIX))
            .collect::<Vec<_>>(),
        ["app.env", "fill", "k.key"]
    );
}

#[test]
fn mode_is_exact_whatever_the_umask() {
    let env = TestEnv::new();
    for umask in ["000", "077", "022"] {
        for mode in ["0600", "0640", "0400", "0660"] {
            let out = env.script(
                &format!(
                    r#"umask {umask}; exec "$BKD" once --region us-east-1 --mode {mode} --file f-{umask}-{mode} --env-file e-{umask}-{mode}"#
                ),
            )
            .output()
            .unwrap();
            assert!(out.status.success(), "{}", util::stderr(&out));
            for prefix in ["f", "e"] {
                let meta =
                    fs::metadata(env.path().join(format!("{prefix}-{umask}-{mode}"))).unwrap();
                assert_eq!(
                    format!("{:04o}", meta.mode() & 0o7777),
                    mode,
                    "{prefix} with umask {umask}"
                );
            }
        }
    }
    // An existing file with a looser mode is tightened on the next write.
    let path = env.path().join("loose");
    fs::write(&path, "old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).unwrap();
    let out = env
        .cmd_with_example_creds()
        .args(["once", "--region", "us-east-1", "--file", "loose"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
}

#[test]
fn owner_and_group_are_applied() {
    if !is_root() {
        return util::skip("changing a file's owner needs root");
    }
    let env = TestEnv::new();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-east-1",
            "--mode",
            "0640",
            "--file",
            "k",
            "--env-file",
            "e",
        ])
        .args([
            "--owner",
            "nobody",
            "--group",
            &nobody.gid.as_raw().to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    for name in ["k", "e"] {
        let meta = fs::metadata(env.path().join(name)).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (nobody.uid.as_raw(), nobody.gid.as_raw())
        );
        assert_eq!(meta.mode() & 0o7777, 0o640);
    }
    // Without --owner/--group, the file becomes the daemon's own: an owner is never
    // inherited from the file it replaces (issue 13; whoever created it first).
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "eu-west-1",
            "--mode",
            "0640",
            "--env-file",
            "e",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let meta = fs::metadata(env.path().join("e")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let text = fs::read_to_string(env.path().join("e")).unwrap();
    let key =
        bedrock_keyd::key::format::extract_key(&text, Some("AWS_BEARER_TOKEN_BEDROCK")).unwrap();
    assert_eq!(
        bedrock_keyd::key::decode::decode(&key).unwrap().region,
        "eu-west-1"
    );

    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-east-1",
            "--file",
            "k",
            "--owner",
            "no-such-user-here",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(73), "{}", util::stderr(&out));
    assert!(
        util::stderr(&out).contains("no-such-user-here"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn env_file_keeps_every_other_line_byte_for_byte() {
    let env = TestEnv::new();
    let before = concat!(
        "# Managed by hand; bedrock-keyd owns one line.\r\n",
        "export LOG_LEVEL=debug\n",
        "\n",
        "  # AWS_BEARER_TOKEN_BEDROCK=commented-out stays\n",
        "DB_URL=\"postgres://u:p@db/app?sslmode=require\"\n",
        "GREETING='hello # not a comment'\n",
        "MULTI=\"first line\n",
        "AWS_BEARER_TOKEN_BEDROCK=inside-a-quoted-value\"\n",
        "export AWS_BEARER_TOKEN_BEDROCK=\"stale\"\n",
        "AWS_BEARER_TOKEN_BEDROCK_OTHER=keep\n",
        "LAST=no-newline",
    );
    let path = env.path().join("app.env");
    fs::write(&path, before).unwrap();
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-west-2",
            "--env-file",
            "app.env",
            "--file",
            "k",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let key = fs::read_to_string(env.path().join("k")).unwrap();
    let key = key.trim();
    let after = fs::read_to_string(&path).unwrap();
    assert_eq!(
        after,
        before.replace(
            "export AWS_BEARER_TOKEN_BEDROCK=\"stale\"",
            &format!("export AWS_BEARER_TOKEN_BEDROCK={key}")
        )
    );

    // A shell sees the key and every other value intact (the CRLF comment aside, the
    // file is what `set -a; . file` expects).
    let shell = Command::new("sh")
        .args([
            "-c",
            r#"set -a; . ./app.env; printf '%s|%s|%s|%s' "$AWS_BEARER_TOKEN_BEDROCK" "$DB_URL" "$GREETING" "$LAST""#,
        ])
        .current_dir(env.path())
        .output()
        .unwrap();
    assert_eq!(
        util::stdout(&shell),
        format!("{key}|postgres://u:p@db/app?sslmode=require|hello # not a comment|no-newline")
    );

    // A missing env-file is created with just the variable.
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-west-2",
            "--env-file",
            "new.env",
            "--env-variable",
            "TOKEN",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let created = fs::read_to_string(env.path().join("new.env")).unwrap();
    assert!(created.starts_with("TOKEN=bedrock-api-key-") && created.ends_with('\n'));
    assert_eq!(created.lines().count(), 1);
}

#[test]
fn once_logs_without_the_key_and_a_second_identical_write_is_skipped() {
    let env = TestEnv::new();
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "us-east-1",
            "--file",
            "a",
            "--file",
            "b",
            "--file-format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let log = util::stderr(&out);
    assert!(
        log.contains("key minted") && log.contains("sink written"),
        "{log}"
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(env.path().join("b")).unwrap()).unwrap();
    let key = doc["key"].as_str().unwrap();
    assert!(!log.contains(key), "the key leaked into the log");
    assert_eq!(doc["region"], "us-east-1");

    // The library: the same key again writes nothing.
    let spec = SinkSpec::File(FileSpec {
        path: env.path().join("c"),
        format: FileFormat::Raw,
        access: FileAccess::default(),
    });
    let (key, meta) = &keys()[0];
    let sink = sink::build(&spec);
    assert_eq!(sink.write(key, meta).unwrap(), WriteOutcome::Written);
    let inode = fs::metadata(env.path().join("c")).unwrap().ino();
    assert_eq!(sink.write(key, meta).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(fs::metadata(env.path().join("c")).unwrap().ino(), inode);
    assert_eq!(sink.read().unwrap().unwrap(), *key);
}

fn once(env: &TestEnv, args: &[&str]) -> std::process::Output {
    env.cmd_with_example_creds()
        .args(["once", "--region", "us-east-1"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn sink_errors_exit_73_naming_sink_path_and_os_error() {
    let env = TestEnv::new();
    let missing = env.path().join("no/such/dir/k.key");
    let out = once(&env, &["--file", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(73), "{}", util::stderr(&out));
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!("file {}", missing.display())),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");

    // A directory the writer may not create files in: the previous key stays.
    let dir = env.path().join("locked");
    fs::create_dir(&dir).unwrap();
    let out = once(
        &env,
        &["--file", "locked/k.key", "--env-file", "locked/app.env"],
    );
    assert!(out.status.success(), "{}", util::stderr(&out));
    let before = (
        fs::read(dir.join("k.key")).unwrap(),
        fs::read(dir.join("app.env")).unwrap(),
    );
    let root = is_root();
    let lock = |on: bool| {
        if root {
            // Root ignores permission bits; an immutable directory stops it.
            let status = Command::new("chattr")
                .args([if on { "+i" } else { "-i" }, dir.to_str().unwrap()])
                .status();
            status.is_ok_and(|s| s.success())
        } else {
            fs::set_permissions(
                &dir,
                fs::Permissions::from_mode(if on { 0o500 } else { 0o700 }),
            )
            .is_ok()
        }
    };
    if !lock(true) {
        return util::skip("cannot make a directory unwritable (chattr missing?)");
    }
    let out = env
        .cmd_with_example_creds()
        .args([
            "once",
            "--region",
            "eu-west-1",
            "--file",
            "locked/k.key",
            "--env-file",
            "locked/app.env",
            "--file",
            "ok.key",
        ])
        .output()
        .unwrap();
    assert!(lock(false));
    assert_eq!(out.status.code(), Some(73), "{}", util::stderr(&out));
    let err = util::stderr(&out);
    assert!(err.contains("2 of 3 sinks could not be written"), "{err}");
    assert!(
        err.contains(&format!("file {}", dir.join("k.key").display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("env-file {}", dir.join("app.env").display())),
        "{err}"
    );
    assert!(
        err.contains("Operation not permitted") || err.contains("Permission denied"),
        "{err}"
    );
    assert_eq!(
        before,
        (
            fs::read(dir.join("k.key")).unwrap(),
            fs::read(dir.join("app.env")).unwrap()
        )
    );
    // The sink that could be written was.
    let ok = fs::read_to_string(env.path().join("ok.key")).unwrap();
    assert_eq!(
        bedrock_keyd::key::decode::decode(&ok).unwrap().region,
        "eu-west-1"
    );
    assert_eq!(
        fs::read_dir(&dir)
            .unwrap()
            .filter(|e| !is_lock_file(e.as_ref().unwrap()))
            .count(),
        2,
        "no temp file left"
    );
}

#[test]
fn unsafe_targets_are_refused() {
    let env = TestEnv::new();
    fs::write(env.path().join("real"), "old\n").unwrap();
    std::os::unix::fs::symlink("real", env.path().join("link")).unwrap();
    let out = once(&env, &["--file", "link"]);
    assert_eq!(out.status.code(), Some(73));
    assert!(
        util::stderr(&out).contains("symbolic link"),
        "{}",
        util::stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(env.path().join("real")).unwrap(),
        "old\n"
    );
    let out = once(&env, &["--file", "link", "--follow-symlinks"]);
    assert!(out.status.success(), "{}", util::stderr(&out));
    assert!(
        fs::read_to_string(env.path().join("real"))
            .unwrap()
            .starts_with("bedrock-api-key-")
    );

    let out = once(&env, &["--file", "w", "--mode", "0644"]);
    assert_eq!(out.status.code(), Some(73));
    assert!(
        util::stderr(&out).contains("every user"),
        "{}",
        util::stderr(&out)
    );
    assert!(!env.path().join("w").exists());
    let out = once(
        &env,
        &["--file", "w", "--mode", "0644", "--allow-world-readable"],
    );
    assert!(out.status.success(), "{}", util::stderr(&out));

    let open = env.path().join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    let out = once(&env, &["--file", "open/k"]);
    assert_eq!(out.status.code(), Some(73));
    assert!(
        util::stderr(&out).contains("sticky"),
        "{}",
        util::stderr(&out)
    );

    let out = once(&env, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", util::stderr(&out));
}

#[test]
fn a_single_file_bind_mount_is_rewritten_in_place_with_a_warning() {
    let Some(unshare) = private_mounts() else {
        return util::skip(
            "bind-mount test needs a private mount namespace (root, or unprivileged user namespaces) and unshare",
        );
    };
    let env = TestEnv::new();
    fs::write(env.path().join("source.key"), "old\n").unwrap();
    fs::write(env.path().join("mounted.key"), "").unwrap();
    let out = env
        .script(&format!(
            r#"exec {unshare} sh -ec '
            mount --bind source.key mounted.key
            "$BKD" once --region us-east-1 --file mounted.key 2>err'"#
        ))
        .output()
        .unwrap();
    let err = fs::read_to_string(env.path().join("err")).unwrap_or_default();
    assert!(out.status.success(), "{} {err}", util::stderr(&out));
    assert!(err.contains("in place") && err.contains("busy"), "{err}");
    let written = fs::read_to_string(env.path().join("source.key")).unwrap();
    assert!(bedrock_keyd::key::decode::decode(&written).is_ok());
    // The target's lock file (`.mounted.key.bedrock-keyd.lock`) stays by design.
    assert_eq!(
        fs::read_dir(env.path())
            .unwrap()
            .filter(|e| !is_lock_file(e.as_ref().unwrap()))
            .count(),
        4,
        "no temp file left"
    );
}

#[test]
fn once_exit_codes_for_credentials_configuration_and_usage() {
    let env = TestEnv::new();
    // No credentials anywhere: 69, and no sink is touched.
    let out = env
        .cmd()
        .args(["once", "--region", "us-east-1", "--file", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", util::stderr(&out));
    assert!(!env.path().join("k").exists());
    // No region: 78.
    let out = env
        .cmd_with_example_creds()
        .args(["once", "--file", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", util::stderr(&out));
    // Malformed flags: 2.
    for bad in [
        &["--keyring", ":acct"][..],
        &["--keyring", "svc:"],
        &["--keyring-backend", "wallet", "--keyring", "s"],
        &["--env-variable", "1BAD", "--env-file", "e"],
        &["--mode", "0800", "--file", "k"],
        &["--file-format", "yaml", "--file", "k"],
    ] {
        let out = once(&env, bad);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{bad:?}: {}",
            util::stderr(&out)
        );
    }
}

#[test]
fn syscalls_happen_in_the_safe_order() {
    // The order is the guarantee: created owner-only and exclusively, owner and final
    // mode set before the first byte, fsync, rename, fsync of the directory.
    if !util::have("strace") {
        return util::skip("strace not found (apt-get install strace)");
    }
    let env = TestEnv::new();
    let uid = nix::unistd::geteuid().as_raw().to_string();
    let out = env.script(
        &format!(
            r#"exec strace -f -o trace -e trace=openat,fchmod,fchown,write,fsync,rename,renameat,renameat2 "$BKD" once --region us-east-1 --file k --mode 0640 --owner {uid}"#
        ),
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", util::stderr(&out));
    let trace = fs::read_to_string(env.path().join("trace")).unwrap();
    let joined = join_interrupted_calls(&trace);
    let lines: Vec<&str> = joined.iter().map(String::as_str).collect();
    let find = |from: usize, what: &dyn Fn(&str) -> bool| -> usize {
        from + lines[from..]
            .iter()
            .position(|l| what(l))
            .unwrap_or_else(|| panic!("not found after line {from}:\n{trace}"))
    };
    let create = find(0, &|l| {
        l.contains("openat(")
            && l.contains(".k.bedrock-keyd.")
            && l.contains("O_CREAT|O_EXCL")
            && l.contains("O_NOFOLLOW")
            && l.contains(", 0600)")
    });
    let fd = lines[create].rsplit("= ").next().unwrap().trim().to_owned();
    let chown = find(create, &|l| l.contains(&format!("fchown({fd}, {uid}")));
    let chmod = find(create, &|l| l.contains(&format!("fchmod({fd}, 0640)")));
    let write = find(create, &|l| {
        l.contains(&format!("write({fd}, \"bedrock-api-key-"))
    });
    let fsync_of = |l: &str, fd: &str| l.contains(&format!("fsync({fd})"));
    let sync = find(write, &|l| fsync_of(l, &fd));
    // Relative to the directory the safe walk opened (issue 13), never by full path.
    let rename = find(sync, &|l| l.contains("renameat") && l.contains(", \"k\")"));
    let open_dir = find(rename, &|l| {
        l.contains("openat(") && l.contains(", \".\", O_RDONLY")
    });
    let dir_fd = lines[open_dir]
        .rsplit("= ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let dir_sync = find(open_dir, &|l| fsync_of(l, &dir_fd));
    assert!(chown < chmod && chmod < write, "{trace}");
    assert!(
        write < sync && sync < rename && rename < dir_sync,
        "{trace}"
    );
    // No other write to the temp file before its mode was final.
    assert!(
        !lines[create..chmod]
            .iter()
            .any(|l| l.contains(&format!("write({fd},"))),
        "{trace}"
    );
}

/// strace -f splits a call when another process's line cuts in:
/// `7 openat(12, ".", O_RDONLY <unfinished ...>` … `7 <... openat resumed>) = 10`.
/// Each such pair becomes one line, at the place of the call, so that a call, its
/// arguments and its result are read from one line whatever the interleaving.
fn join_interrupted_calls(trace: &str) -> Vec<String> {
    const UNFINISHED: &str = " <unfinished ...>";
    let mut lines: Vec<String> = Vec::new();
    // pid → index in `lines` of its call waiting for its result.
    let mut waiting: std::collections::HashMap<String, usize> = Default::default();
    for line in trace.lines() {
        let pid = line
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Some(call) = line.strip_suffix(UNFINISHED) {
            waiting.insert(pid, lines.len());
            lines.push(call.to_owned());
        } else if let Some((_, rest)) = line.split_once(" resumed>") {
            match waiting.remove(&pid) {
                Some(at) => lines[at].push_str(rest),
                None => lines.push(line.to_owned()),
            }
        } else {
            lines.push(line.to_owned());
        }
    }
    lines
}

#[test]
fn interrupted_strace_calls_are_joined() {
    // From a CI run where a log-copying process interleaved with the daemon.
    let trace = "\
27927 renameat(12, \".k.tmp\", 12, \"k\") = 0
27930 <... openat resumed>)             = 3
27927 openat(12, \".\", O_RDONLY|O_CLOEXEC|O_DIRECTORY <unfinished ...>
27930 write(1, \"x\"..., 548 <unfinished ...>
27927 <... openat resumed>)             = 10
27927 fsync(10 <unfinished ...>
27930 <... write resumed>)              = 548
27927 <... fsync resumed>)              = 0
";
    assert_eq!(
        join_interrupted_calls(trace),
        [
            "27927 renameat(12, \".k.tmp\", 12, \"k\") = 0",
            "27930 <... openat resumed>)             = 3",
            "27927 openat(12, \".\", O_RDONLY|O_CLOEXEC|O_DIRECTORY)             = 10",
            "27930 write(1, \"x\"..., 548)              = 548",
            "27927 fsync(10)              = 0",
        ]
    );
}
