//! The file sink: the key alone (`raw`) or with its metadata (`json`) in a file of its
//! own, replaced atomically by [`super::atomic`] on every change.
//!
//! Both formats end with a newline, so `$(cat file)` and `jq` read them as they are.

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
        self.file.write_with(|_| Ok(content))
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
