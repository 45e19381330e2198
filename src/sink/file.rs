//! The file sink: the key alone (`raw`) or with its metadata (`json`) in a file of its
//! own, replaced atomically by [`super::atomic`] on every change.
//!
//! `raw` is exactly the key, with no newline, so readers that take the file verbatim
//! (LiteLLM's `oidc/file/…`, a credential helper's `cat`) send the key and nothing
//! else; `$(cat file)` reads it as well. `json` ends with a newline, as `jq` prints.
//!
//! Older versions wrote `raw` with a trailing newline. Such a file holding the current
//! key counts as unchanged (nothing is written, as for any unchanged key): the next
//! new key is written in the current form.

use zeroize::Zeroizing;

use super::atomic::AtomicFile;
use super::{FileFormat, FileSpec, Sink, SinkError, WriteOutcome};
use crate::key::{ApiKey, KeyMeta};

/// A file sink built from its spec.
#[derive(Debug)]
pub struct FileSink {
    format: FileFormat,
    file: AtomicFile,
}

impl FileSink {
    pub fn new(spec: &FileSpec) -> Self {
        Self {
            format: spec.format,
            file: AtomicFile::new(
                format!("file {}", spec.path.display()),
                spec.path.clone(),
                spec.access.clone(),
            ),
        }
    }
}

/// The exact bytes a file sink holds for `key`.
pub fn render(format: FileFormat, key: &ApiKey, meta: &KeyMeta) -> Zeroizing<Vec<u8>> {
    let text = match format {
        FileFormat::Raw => crate::keyfile::raw(key),
        FileFormat::Json => {
            let mut json = crate::keyfile::json(key, meta);
            json.push('\n');
            json
        }
    };
    Zeroizing::new(text.as_bytes().to_vec())
}

impl Sink for FileSink {
    fn describe(&self) -> String {
        format!("file {}", self.file.path().display())
    }

    fn write(&self, key: &ApiKey, meta: &KeyMeta) -> Result<WriteOutcome, SinkError> {
        let content = render(self.format, key, meta);
        let format = self.format;
        self.file.write_with(|current| {
            // An older version's raw file (`key\n`) of this very key: keep it as it is.
            if format == FileFormat::Raw
                && let Some(current) = current
                && crate::keyfile::parse_raw(current) == Some(key.expose())
            {
                return Ok(Zeroizing::new(current.to_vec()));
            }
            Ok(content)
        })
    }

    fn read(&self) -> Result<Option<ApiKey>, SinkError> {
        let Some(bytes) = self.file.read()? else {
            return Ok(None);
        };
        // Not UTF-8 or no key in it: the sink holds no usable key, which `write` repairs.
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Ok(None);
        };
        Ok(crate::inspect::extract_key(text, None)
            .ok()
            .map(ApiKey::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{FileAccess, FileSpec};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn an_older_versions_raw_file_of_the_same_key_counts_as_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        let sink = FileSink::new(&FileSpec {
            path: path.clone(),
            format: FileFormat::Raw,
            access: FileAccess::default(),
        });
        let key = ApiKey::new("bedrock-api-key-YmVkcm9jaw==".to_owned());
        let meta = KeyMeta {
            region: "us-east-1".into(),
            access_key_id: "AKIAEXAMPLE".into(),
            issued_at: UNIX_EPOCH,
            expires_at: UNIX_EPOCH + Duration::from_secs(60),
            has_session_token: false,
        };
        assert_eq!(sink.write(&key, &meta).unwrap(), WriteOutcome::Written);
        assert_eq!(std::fs::read(&path).unwrap(), key.expose().as_bytes());
        std::fs::write(&path, format!("{}\n", key.expose())).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        std::fs::set_permissions(&path, mode).unwrap();
        assert_eq!(sink.write(&key, &meta).unwrap(), WriteOutcome::Unchanged);
        assert_eq!(sink.read().unwrap(), Some(key));
        // Another key replaces it, in the current form.
        let other = ApiKey::new("bedrock-api-key-b3RoZXI=".to_owned());
        assert_eq!(sink.write(&other, &meta).unwrap(), WriteOutcome::Written);
        assert_eq!(std::fs::read(&path).unwrap(), other.expose().as_bytes());
    }
}
