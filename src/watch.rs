//! File watching (inotify on Linux, FSEvents on macOS): the config file, the sink
//! files, and the AWS shared config/credentials files and SSO cache.
//!
//! Directories are watched rather than files, because the things we watch are
//! replaced by rename (editors, `aws sso login`, our own atomic writes): a watch on
//! the old inode would go deaf after the first replacement. Events are mapped to
//! [`Change`]s; the daemon debounces and acts on them. Our own writes also produce
//! events; acting on them is harmless, because a sink that already holds the key
//! writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::KeyConfig;
use crate::sink::SinkSpec;

/// Something on disk that the daemon cares about changed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The config file was written, replaced or removed.
    Config,
    /// A sink file of this key was altered or removed.
    Sink(String),
    /// The AWS shared config/credentials files or the SSO token cache changed.
    AwsFiles,
}

/// What to watch.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub config: Option<PathBuf>,
    /// Sink file path → the key it belongs to.
    pub sinks: BTreeMap<PathBuf, String>,
    /// Files whose change means credentials may have changed.
    pub aws_files: Vec<PathBuf>,
    /// Directories whose every change means credentials may have changed.
    pub aws_dirs: Vec<PathBuf>,
}

impl Targets {
    /// The sink files of `keys`, the config file, and the AWS files found through the
    /// environment (`AWS_CONFIG_FILE`, `AWS_SHARED_CREDENTIALS_FILE`, `HOME`).
    pub fn for_config(
        config: Option<&Path>,
        keys: &[KeyConfig],
        env: impl Fn(&str) -> Option<std::ffi::OsString>,
    ) -> Self {
        let mut sinks = BTreeMap::new();
        for key in keys {
            for sink in &key.sinks {
                let path = match sink {
                    SinkSpec::File(f) => &f.path,
                    SinkSpec::EnvFile(e) => &e.path,
                    SinkSpec::Keyring(_) => continue,
                };
                sinks.insert(path.clone(), key.name.to_string());
            }
        }
        let home = env("HOME").map(PathBuf::from);
        // Events name absolute paths: a relative AWS_CONFIG_FILE would never match.
        let aws_file = |var: &str, default: &str| {
            env(var)
                .map(PathBuf::from)
                .map(|p| std::path::absolute(&p).unwrap_or(p))
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let aws_files = [
            aws_file("AWS_CONFIG_FILE", "config"),
            aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let aws_dirs = home
            .map(|h| vec![h.join(".aws/sso/cache")])
            .unwrap_or_default();
        Self {
            config: config.map(Path::to_path_buf),
            sinks,
            aws_files,
            aws_dirs,
        }
    }

    fn classify(&self, path: &Path) -> Option<Change> {
        if self.config.as_deref() == Some(path) {
            return Some(Change::Config);
        }
        if let Some(key) = self.sinks.get(path) {
            return Some(Change::Sink(key.clone()));
        }
        if self.aws_files.iter().any(|f| f == path)
            || self
                .aws_dirs
                .iter()
                .any(|d| path.parent() == Some(d.as_path()))
        {
            return Some(Change::AwsFiles);
        }
        None
    }
}

/// Refuses to watch a directory on a path another user controls ([`crate::sink::path`]):
/// they could point the watch elsewhere and make the daemon act on their events. An
/// event only ever makes the daemon re-check (re-read the config, restore a sink), and
/// those steps walk their paths safely themselves, so this is a second line.
fn safe_dir(dir: &Path) -> std::io::Result<()> {
    use crate::sink::path::{Policy, resolve};
    let found = resolve(dir, true, Policy::Strict).map_err(|e| e.into_io())?;
    match found.dir.stat_of(&found.name)? {
        Some(stat) if stat.st_mode & 0o170000 == 0o040000 => Ok(()),
        Some(_) => Err(std::io::Error::from(nix::errno::Errno::ENOTDIR)),
        None => Err(std::io::Error::from(nix::errno::Errno::ENOENT)),
    }
}

/// A running watcher; dropping it stops watching.
pub struct Watches {
    _watcher: RecommendedWatcher,
}

/// Starts watching `targets`, sending each relevant change on `tx`. Directories that
/// do not exist are skipped (logged at debug); a watcher that cannot start at all is
/// an error the caller reports (the daemon still works, without restore-on-change).
pub fn start(targets: Targets, tx: mpsc::UnboundedSender<Change>) -> notify::Result<Watches> {
    let mut dirs = BTreeSet::new();
    let files = targets
        .config
        .iter()
        .chain(targets.sinks.keys())
        .chain(targets.aws_files.iter());
    for file in files {
        if let Some(dir) = file.parent() {
            dirs.insert(dir.to_path_buf());
        }
    }
    dirs.extend(targets.aws_dirs.iter().cloned());

    let handler_targets = targets.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if event.kind.is_access() {
            return;
        }
        let changes: BTreeSet<Change> = event
            .paths
            .iter()
            .filter_map(|p| handler_targets.classify(p))
            .collect();
        for change in changes {
            let _ = tx.send(change);
        }
    })?;
    for dir in &dirs {
        match safe_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(dir = %dir.display(), error = %e, "not watching");
                continue;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "not watching this directory");
                continue;
            }
        }
        match watcher.watch(dir, RecursiveMode::NonRecursive) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "watching"),
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "not watching"),
        }
    }
    Ok(Watches { _watcher: watcher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reports_config_sink_and_aws_changes() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let sink = dir.path().join("k.key");
        let aws = dir.path().join("credentials");
        let sso = dir.path().join("sso");
        std::fs::create_dir(&sso).unwrap();
        let targets = Targets {
            config: Some(config.clone()),
            sinks: BTreeMap::from([(sink.clone(), "default".to_owned())]),
            aws_files: vec![aws.clone()],
            aws_dirs: vec![sso.clone()],
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _w = start(targets, tx).unwrap();

        let expect = |rx: &mut mpsc::UnboundedReceiver<Change>, want: Change| {
            let got = rx.try_recv();
            assert_eq!(got.ok(), Some(want));
            while rx.try_recv().is_ok() {}
        };
        let settle = || tokio::time::sleep(Duration::from_millis(200));
        std::fs::write(&config, "x").unwrap();
        settle().await;
        expect(&mut rx, Change::Config);
        std::fs::write(&sink, "x").unwrap();
        settle().await;
        expect(&mut rx, Change::Sink("default".to_owned()));
        std::fs::remove_file(&sink).unwrap();
        settle().await;
        expect(&mut rx, Change::Sink("default".to_owned()));
        std::fs::write(&aws, "x").unwrap();
        settle().await;
        expect(&mut rx, Change::AwsFiles);
        std::fs::write(sso.join("token.json"), "x").unwrap();
        settle().await;
        expect(&mut rx, Change::AwsFiles);
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        settle().await;
        assert!(rx.try_recv().is_err());
    }
}
