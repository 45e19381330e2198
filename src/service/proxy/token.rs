//! The local token: the one secret clients of the proxy hold. It never expires, so
//! a client configured once keeps working across key rotations.
//!
//! Read from `token_file` at start; when the file is absent it is created (`0600`,
//! `O_EXCL`, before a byte is written) with 256 random bits as 64 lowercase hex
//! digits and no newline. An existing file is refused when another user owns it or
//! its group or others may read it: a token others can read is a Bedrock key others
//! can use. Missing parent directories are created `0700`. The token is compared in
//! constant time and never logged.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// 256 bits: far beyond guessing, even at the proxy's full request rate.
const TOKEN_BYTES: usize = 32;
/// A hand-written token shorter than this (in bytes) is refused as guessable.
const MIN_TOKEN_LEN: usize = 16;

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
#[error("proxy token file {}: {reason}", path.display())]
pub struct TokenError {
    pub path: PathBuf,
    pub reason: String,
}

/// The local token; `Debug` does not show it.
pub struct LocalToken(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for LocalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalToken(…)")
    }
}

impl LocalToken {
    /// Whether an `Authorization` header value is `Bearer <this token>`. Constant
    /// time in the token's content (the length of a wrong guess may show).
    pub fn matches_header(&self, header: &[u8]) -> bool {
        let Some(given) = strip_bearer(header) else {
            return false;
        };
        given.ct_eq(&self.0).into()
    }

    /// Reads `path`, creating it with a fresh random token when absent.
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let err = |reason: String| TokenError {
            path: path.to_owned(),
            reason,
        };
        match fs::symlink_metadata(path) {
            Ok(meta) => {
                if !meta.file_type().is_file() {
                    return Err(err("is not a regular file".to_owned()));
                }
                let euid = nix::unistd::geteuid().as_raw();
                if meta.uid() != euid {
                    return Err(err(format!(
                        "is owned by uid {}, not by this process (uid {euid}); refusing a token another user controls",
                        meta.uid()
                    )));
                }
                if meta.mode() & 0o077 != 0 {
                    return Err(err(format!(
                        "has mode {:04o}: group or others may read it; chmod 600 it",
                        meta.mode() & 0o7777
                    )));
                }
                let bytes = Zeroizing::new(fs::read(path).map_err(|e| err(e.to_string()))?);
                let token = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
                if token.len() < MIN_TOKEN_LEN {
                    return Err(err(format!(
                        "holds a token of {} bytes; use at least {MIN_TOKEN_LEN} (delete the file to have a random one created)",
                        token.len()
                    )));
                }
                if !token.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(err(
                        "the token must be printable ASCII without spaces (it is sent in an HTTP header)".to_owned(),
                    ));
                }
                Ok(Self(Zeroizing::new(token.to_vec())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path).map_err(err),
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn create(path: &Path) -> Result<Self, String> {
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create its directory: {e}"))?;
        }
        let mut random = Zeroizing::new([0u8; TOKEN_BYTES]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random[..])
            .map_err(|_| "the system random source failed".to_owned())?;
        let mut hex = Zeroizing::new(Vec::with_capacity(TOKEN_BYTES * 2));
        for b in random.iter() {
            hex.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| format!("cannot create it: {e}"))?;
        file.write_all(&hex)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write it: {e}"))?;
        tracing::info!(token_file = %path.display(), "created a new local proxy token");
        Ok(Self(hex))
    }
}

/// The credentials of `Bearer <credentials>` (scheme case-insensitive, RFC 9110 §11.1).
fn strip_bearer(header: &[u8]) -> Option<&[u8]> {
    if header.len() < 7 || !header[..7].eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(header[7..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn created_private_and_random_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/proxy.token");
        let a = LocalToken::load_or_create(&path).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(a.matches_header(format!("Bearer {text}").as_bytes()));
        assert!(a.matches_header(format!("bearer {text}").as_bytes()));
        assert!(!a.matches_header(text.as_bytes()));
        assert!(!a.matches_header(format!("Bearer {}x", &text).as_bytes()));
        assert!(!a.matches_header(b"Bearer "));
        let b = LocalToken::load_or_create(&path).unwrap();
        assert!(b.matches_header(format!("Bearer {text}").as_bytes()));
        assert!(!format!("{b:?}").contains(&text));
    }

    #[test]
    fn readable_by_others_or_short_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        fs::write(&path, "0123456789abcdef0123\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let e = LocalToken::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("0640"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let t = LocalToken::load_or_create(&path).unwrap();
        assert!(t.matches_header(b"Bearer 0123456789abcdef0123"));
        fs::write(&path, "short").unwrap();
        assert!(LocalToken::load_or_create(&path).is_err());
    }
}
