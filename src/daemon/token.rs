//! `token`: one key valid for at least a given time, for tools that run a command to
//! get their key (credential helpers, `apiKeyHelper`, `$(bedrock-keyd token)`).
//!
//! Such tools call often, sometimes many at once, so the common case must cost no
//! more than reading a file:
//! - **fast path**: the key's sinks are read ([`held`]) and the first that holds a
//!   key valid for long enough serves it. No credentials are loaded, no async runtime
//!   is started, nothing is written.
//! - **slow path**: under the key's locks ([`lock_targets`]), the sinks are read again
//!   (another caller may have minted meanwhile), and only if they still hold nothing
//!   usable is a key minted ([`mint_for`]) and delivered to every sink. So twenty
//!   callers started together mint once: the first mints, the others wait on the lock
//!   and then find its key.
//! - a key given by flags that name no sink is kept in a per-user cache file
//!   ([`cache_dir`], [`cache_file_name`]) that stands in for the sink: the AWS CLI
//!   keeps its SSO tokens the same way, in a directory only its user can enter.
//!
//! A key is "usable" ([`is_usable`]) when it decodes, has at least the wanted time
//! left, is not signed in the future beyond the allowed clock skew and, when the
//! key's region is configured, is scoped to that region.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::{RefreshError, deliver_here};
use crate::config::KeyConfig;
use crate::credentials::{CredentialSource, CredentialsError, SdkSource};
use crate::inspect::DecodedKey;
use crate::key::{ApiKey, KeyMeta, MintedKey};
use crate::mint::MintError;
use crate::sink::lock::{LockError, TargetLock};
use crate::sink::{Sink, SinkError, SinkSpec};

/// How long a caller waits for another one's mint before giving up. A mint is a
/// credential fetch (an STS or SSO call; the SDK's own timeouts are a few seconds per
/// attempt, with retries) and a few file writes; twice that budget covers a slow but
/// working source, while a caller stuck behind a wedged one still gets an answer.
pub const LOCK_WAIT: Duration = Duration::from_secs(30);

/// The name of our directory under `$XDG_RUNTIME_DIR` or the user's cache directory.
pub const CACHE_DIR_NAME: &str = "bedrock-keyd";

/// Why `token` could not serve a key (credential and mint errors keep their own types,
/// so the command line maps them as it maps `once`'s).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A new key cannot satisfy `--min-valid`: the credentials expire sooner.
    #[error(
        "a new key would be valid for only {} (its signing credentials expire at {credentials_expire_at}), less than the {} asked for; renew the credentials (e.g. aws sso login) or ask for less",
        crate::duration::format(*.remaining),
        crate::duration::format(*.min_valid)
    )]
    TooShort {
        remaining: Duration,
        min_valid: Duration,
        credentials_expire_at: String,
    },
    /// Some sinks could not be written (the others were); `total` were attempted.
    #[error("{}", super::join_sink_errors(.failures))]
    Sinks {
        failures: Vec<SinkError>,
        total: usize,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The cache directory is missing and cannot be made, or is not private.
    #[error("the key cache {}: {why}", .path.display())]
    Cache { path: PathBuf, why: String },
}

/// The first sink (files before keyrings: a file is cheaper to read) that holds a key
/// usable at `now`, with what the key says about itself. Unreadable sinks are skipped:
/// the slow path writes them anew.
pub fn held(
    sinks: &[Arc<dyn Sink>],
    key: &KeyConfig,
    now: SystemTime,
    min_valid: Duration,
) -> Option<(ApiKey, KeyMeta)> {
    let region = key.source.region.as_ref().map(|r| r.as_str());
    let files_first = sinks
        .iter()
        .zip(&key.sinks)
        .filter(|(_, spec)| !matches!(spec, SinkSpec::Keyring(_)))
        .chain(
            sinks
                .iter()
                .zip(&key.sinks)
                .filter(|(_, spec)| matches!(spec, SinkSpec::Keyring(_))),
        );
    for (sink, _) in files_first {
        let held = match sink.read() {
            Ok(Some(held)) => held,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(sink = %sink.describe(), error = %e, "cannot read the held key");
                continue;
            }
        };
        let Ok(decoded) = crate::inspect::decode(held.expose()) else {
            continue;
        };
        if is_usable(&decoded, now, min_valid, region) {
            tracing::debug!(sink = %sink.describe(), fingerprint = %held.fingerprint(), "served from the sink");
            let meta = meta_of(&decoded);
            return Some((held, meta));
        }
    }
    None
}

/// Whether a decoded key may be handed out at `now` to a caller that needs
/// `min_valid` of it (see the module doc).
pub fn is_usable(
    decoded: &DecodedKey,
    now: SystemTime,
    min_valid: Duration,
    region: Option<&str>,
) -> bool {
    decoded.invalid_at(now).is_none()
        && decoded.remaining(now) >= min_valid
        && region.is_none_or(|r| r == decoded.region)
}

fn meta_of(decoded: &DecodedKey) -> KeyMeta {
    KeyMeta {
        region: decoded.region.clone(),
        access_key_id: decoded.access_key_id.clone(),
        issued_at: decoded.issued_at,
        expires_at: decoded.expires_at,
        has_session_token: decoded.has_session_token,
    }
}

/// The paths whose locks `token` holds across check-and-mint: every file and env-file
/// target of `key`, sorted (the order `once` takes them in too, so two writers never
/// wait for each other crosswise), the first of which serializes the callers. A key
/// kept only in keyrings is locked through a file in the cache directory, `cache`
/// (made on demand).
pub fn lock_targets(
    key: &KeyConfig,
    cache: impl FnOnce() -> Result<PathBuf, TokenError>,
) -> Result<Vec<PathBuf>, TokenError> {
    let mut targets = super::locks::targets(&key.sinks);
    if targets.is_empty() {
        let name = key
            .sinks
            .iter()
            .map(crate::config::sink_target)
            .collect::<Vec<_>>()
            .join("\n");
        targets.push(cache()?.join(format!("keyring-{}", short_hash(&[&name]))));
    }
    Ok(targets)
}

/// Takes the locks of `targets` in order, waiting up to [`LOCK_WAIT`] in all for other
/// writers; only a holder stops us (see [`super::locks::take_within`]).
pub fn lock(targets: &[PathBuf]) -> Result<Vec<TargetLock>, TokenError> {
    Ok(super::locks::take_within(targets, LOCK_WAIT)?)
}

/// Mints a key for `key` at the current time and writes it to every sink. Fails,
/// writing nothing, when the key would not last `min_valid`.
pub async fn mint_for(
    key: &KeyConfig,
    sinks: &[Arc<dyn Sink>],
    min_valid: Duration,
) -> Result<MintedKey, TokenError> {
    let source = SdkSource::new(&key.source).await?;
    // Credentials good for the whole lifetime if the source can: a key is never longer
    // than they are.
    let credentials = source.credentials(key.lifetime.get()).await?;
    let now = SystemTime::now();
    let minted = crate::mint::mint(&credentials, source.region(), key.lifetime, now)?;
    crate::mint::log_minted(&minted);
    let remaining = minted.meta.remaining(now);
    if remaining < min_valid {
        return Err(TokenError::TooShort {
            remaining,
            min_valid,
            credentials_expire_at: minted
                .credentials_expiry
                .map_or_else(|| "never".to_owned(), crate::time::rfc3339),
        });
    }
    match deliver_here(sinks, &minted) {
        Ok(_) => Ok(minted),
        Err(RefreshError::Sinks(failures)) => Err(TokenError::Sinks {
            failures,
            total: sinks.len(),
        }),
        Err(RefreshError::Credentials(e)) => Err(e.into()),
        Err(RefreshError::Mint(e)) => Err(e.into()),
        Err(RefreshError::SinkTask(why)) => Err(TokenError::Sinks {
            failures: vec![SinkError::new("sinks", "writing", io::Error::other(why))],
            total: sinks.len(),
        }),
    }
}

/// What a cached key depends on: the parts of a key given by flags that change which
/// key is minted. Unset flags fall back to what the SDK would read from the
/// environment (`AWS_PROFILE`, `AWS_REGION`, an access key id), so a shell that
/// switches profile or region does not get the other one's key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheIdentity {
    pub profile: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub region: Option<String>,
    pub lifetime: Duration,
    /// The environment's access key id, when the environment provides credentials
    /// (not secret: it is in every key it signs).
    pub access_key_id: Option<String>,
}

impl CacheIdentity {
    /// The identity of `key`, with unset parts read from the environment through `env`.
    pub fn of(key: &KeyConfig, env: impl Fn(&str) -> Option<OsString>) -> Self {
        let var = |name: &str| {
            env(name)
                .and_then(|v| v.into_string().ok())
                .filter(|v| !v.is_empty())
        };
        let source = &key.source;
        let profile = source.profile.clone().or_else(|| var("AWS_PROFILE"));
        Self {
            region: source
                .region
                .as_ref()
                .map(|r| r.as_str().to_owned())
                .or_else(|| var("AWS_REGION"))
                .or_else(|| var("AWS_DEFAULT_REGION")),
            role_arn: source.role_arn.clone(),
            external_id: source.external_id.clone(),
            lifetime: key.lifetime.get(),
            // A named profile ignores environment credentials (see `--profile`).
            access_key_id: if source.profile.is_none() {
                var("AWS_ACCESS_KEY_ID")
            } else {
                None
            },
            profile,
        }
    }
}

/// `key-<16 hex digits>`: a hash of the identity, so the name reveals nothing about
/// the profile or role and two identities never share a file.
pub fn cache_file_name(identity: &CacheIdentity) -> String {
    let lifetime = identity.lifetime.as_secs().to_string();
    let parts = [
        identity.profile.as_deref().unwrap_or(""),
        identity.role_arn.as_deref().unwrap_or(""),
        identity.external_id.as_deref().unwrap_or(""),
        identity.region.as_deref().unwrap_or(""),
        &lifetime,
        identity.access_key_id.as_deref().unwrap_or(""),
    ];
    format!("key-{}", short_hash(&parts))
}

/// 16 hex digits of SHA-256 over the parts, each length-prefixed so that no two
/// different lists hash the same text.
fn short_hash(parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the cache lives: `$XDG_RUNTIME_DIR/bedrock-keyd` (a per-user tmpfs that is
/// emptied at logout: keys need not outlive the session), else the user's cache
/// directory (`$XDG_CACHE_HOME`, `~/.cache`; `~/Library/Caches` on macOS).
pub fn cache_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let var = |name: &str| env(name).map(PathBuf::from).filter(|p| p.is_absolute());
    let base = var("XDG_RUNTIME_DIR")
        .or_else(|| var("XDG_CACHE_HOME"))
        .or_else(|| {
            let home = var("HOME")?;
            Some(if cfg!(target_os = "macos") {
                home.join("Library/Caches")
            } else {
                home.join(".cache")
            })
        })?;
    Some(base.join(CACHE_DIR_NAME))
}

/// Makes `dir` (and its parents) if missing, the last one `0700`; an existing `dir`
/// must be a real directory owned by this user that no one else may enter, since it
/// holds keys.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TokenError> {
    let refuse = |why: String| TokenError::Cache {
        path: dir.to_owned(),
        why,
    };
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| refuse(format!("cannot create: {e}")))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask can only take bits away from 0700; set it anyway, so the mode
            // does not depend on it.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| refuse(format!("cannot set its mode to 0700: {e}")))?;
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refuse(format!("cannot create: {e}"))),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| refuse(format!("cannot examine: {e}")))?;
    if !meta.file_type().is_dir() {
        return Err(refuse(
            "it is not a directory (a symbolic link?)".to_owned(),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refuse(format!(
            "it is owned by uid {}, not by this user ({me})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "its mode {:04o} lets other users in; it must be 0700 (chmod 700 it)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KeyName;
    use crate::credentials::SourceSpec;
    use crate::mint::{Lifetime, Region};
    use crate::schedule::RefreshPolicy;

    fn key(source: SourceSpec) -> KeyConfig {
        KeyConfig::without_sinks(
            KeyName::new("default").unwrap(),
            source,
            Lifetime::MAX,
            RefreshPolicy::default(),
            Vec::new(),
        )
        .unwrap()
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn the_cache_file_follows_profile_role_region_lifetime_and_environment_credentials() {
        let base = key(SourceSpec::default());
        let name = |k: &KeyConfig, vars: &[(&str, &str)]| {
            cache_file_name(&CacheIdentity::of(k, env(vars)))
        };
        let plain = name(&base, &[]);
        assert!(
            plain.starts_with("key-") && plain.len() == 4 + 16,
            "{plain}"
        );
        assert_eq!(plain, name(&base, &[("UNRELATED", "x")]));
        let mut names = vec![plain];
        names.push(name(&base, &[("AWS_PROFILE", "work")]));
        names.push(name(&base, &[("AWS_REGION", "eu-west-1")]));
        names.push(name(&base, &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")]));
        let with = |edit: fn(&mut KeyConfig)| {
            let mut k = base.clone();
            edit(&mut k);
            name(&k, &[])
        };
        names.push(with(|k| {
            k.source.region = Some(Region::new("us-west-2").unwrap())
        }));
        names.push(with(|k| {
            k.source.role_arn = Some("arn:aws:iam::123456789012:role/r".into())
        }));
        names.push(with(|k| k.lifetime = Lifetime::from_secs(3600).unwrap()));
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        // The flag wins over the environment, and a profile ignores env credentials.
        let mut profiled = base.clone();
        profiled.source.profile = Some("work".into());
        assert_eq!(
            name(&profiled, &[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")]),
            name(&base, &[("AWS_PROFILE", "work")])
        );
    }

    #[test]
    fn the_cache_prefers_the_runtime_dir_then_the_cache_dir() {
        assert_eq!(
            cache_dir(env(&[
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                ("HOME", "/home/a")
            ])),
            Some(PathBuf::from("/run/user/1000/bedrock-keyd"))
        );
        assert_eq!(
            cache_dir(env(&[("XDG_CACHE_HOME", "/c"), ("HOME", "/home/a")])),
            Some(PathBuf::from("/c/bedrock-keyd"))
        );
        let home = cache_dir(env(&[("XDG_RUNTIME_DIR", "relative"), ("HOME", "/home/a")]));
        assert!(home.unwrap().starts_with("/home/a"));
        assert_eq!(cache_dir(env(&[])), None);
    }

    #[test]
    fn the_cache_dir_is_made_private_and_a_shared_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/bedrock-keyd");
        ensure_private_dir(&dir).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&dir), 0o700);
        ensure_private_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = ensure_private_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("0755 lets other users in"), "{err}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
    }

    #[test]
    fn every_file_target_is_locked_in_sorted_order_and_keyrings_through_the_cache() {
        use crate::sink::{EnvFileSpec, FileAccess, FileFormat, FileSpec, KeyringSpec};
        let file = |p: &str| {
            SinkSpec::File(FileSpec {
                path: PathBuf::from(p),
                format: FileFormat::Raw,
                access: FileAccess::default(),
            })
        };
        let mut k = key(SourceSpec::default());
        k.sinks = vec![
            file("/run/b.key"),
            SinkSpec::Keyring(KeyringSpec::new("svc", "acct")),
            SinkSpec::EnvFile(EnvFileSpec {
                path: PathBuf::from("/etc/a.env"),
                variable: "V".into(),
                access: FileAccess::default(),
            }),
        ];
        let no_cache = || -> Result<PathBuf, TokenError> { panic!("the cache is not needed") };
        assert_eq!(
            lock_targets(&k, no_cache).unwrap(),
            [PathBuf::from("/etc/a.env"), PathBuf::from("/run/b.key")]
        );
        k.sinks = vec![SinkSpec::Keyring(KeyringSpec::new("svc", "acct"))];
        let targets = lock_targets(&k, || Ok(PathBuf::from("/cache"))).unwrap();
        assert_eq!(targets.len(), 1);
        assert!(
            targets[0].starts_with("/cache/") && targets[0].to_str().unwrap().contains("keyring-")
        );
    }

    #[test]
    fn only_a_key_valid_long_enough_now_and_for_the_region_is_usable() {
        let decoded = DecodedKey {
            region: "us-east-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            issued_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            lifetime: Duration::from_secs(3600),
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_003_600),
            has_session_token: false,
        };
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let five = Duration::from_secs(300);
        assert!(is_usable(&decoded, at(1_000_000), five, None));
        assert!(is_usable(&decoded, at(1_003_300), five, Some("us-east-1")));
        assert!(!is_usable(&decoded, at(1_003_301), five, None));
        assert!(!is_usable(&decoded, at(1_000_000), five, Some("eu-west-1")));
        // Signed more than five minutes ahead of our clock.
        assert!(is_usable(&decoded, at(1_000_000 - 300), five, None));
        assert!(!is_usable(&decoded, at(1_000_000 - 301), five, None));
    }
}
