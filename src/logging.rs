//! Logging setup: tracing to stderr, text or JSON, with a secret-safety floor.
//!
//! `RUST_LOG` chooses the level, but some dependencies log secrets at their most
//! verbose levels: `aws-sigv4` writes the canonical request at TRACE, and for a
//! query-signed key that includes the session token. So events from the signing and
//! HTTP layers of the AWS SDK are dropped below a floor, whatever `RUST_LOG` says.
//!
//! What a dependency logs passes through [`crate::redact`] too: the SDK's warning about
//! a failing `credential_process` quotes the process's stderr, which may hold a
//! secret. Our own events are not rewritten (they log access key ids on purpose, and
//! their errors are already redacted by `error_chain`).

use std::io::Write;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;

/// The most verbose level let through per target prefix (checked in order).
/// `aws_sigv4` logs canonical requests (session tokens) at TRACE and string-to-sign at
/// DEBUG; the smithy runtime and HTTP client may log request headers (Authorization,
/// X-Amz-Security-Token) at TRACE.
const SECRET_SAFE_FLOOR: &[(&str, Level)] = &[
    ("aws_sigv4", Level::INFO),
    ("aws_smithy_runtime", Level::DEBUG),
    ("aws_smithy_http_client", Level::DEBUG),
    ("aws_smithy_runtime_api", Level::DEBUG),
    ("hyper", Level::INFO),
    ("hyper_util", Level::INFO),
    ("h2", Level::INFO),
    ("rustls", Level::DEBUG),
];

/// Dependencies whose warnings repeat what our own errors already say (a missing
/// `~/.aws/config`, no IMDS on a laptop): errors only, unless `RUST_LOG` asks.
const QUIET_BY_DEFAULT: &str = "aws_config=error,aws_runtime=error,aws_smithy_runtime=error";

/// Output format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `default_level` applies when `RUST_LOG` is unset.
pub fn init(default_level: &str, format: Format) {
    let env = from_env(default_level);
    let registry = tracing_subscriber::registry()
        .with(env)
        .with(secret_safe_floor());
    let fmt = tracing_subscriber::fmt::layer()
        // Colour codes only for a person at a terminal, not for journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(Stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        Format::Text => registry.with(fmt).try_init(),
        Format::Json => registry.with(fmt.json()).try_init(),
    };
}

/// Standard error, through [`crate::redact`] for events of other crates.
#[derive(Debug, Clone, Copy)]
struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter::Direct
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        let ours = meta.target() == "bedrock_keyd" || meta.target().starts_with("bedrock_keyd::");
        if ours {
            EventWriter::Direct
        } else {
            EventWriter::Redacted(Vec::new())
        }
    }
}

/// The writer of one event. A redacted event is collected whole and written when the
/// formatter drops the writer, so a secret split across two writes is still seen.
enum EventWriter {
    Direct,
    Redacted(Vec<u8>),
}

impl Write for EventWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Direct => std::io::stderr().write(buf),
            Self::Redacted(event) => {
                event.extend_from_slice(buf);
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if let Self::Redacted(event) = self
            && !event.is_empty()
        {
            let text = String::from_utf8_lossy(event);
            // Nowhere to report a failed write to stderr.
            let _ = std::io::stderr().write_all(crate::redact::redact(&text).as_bytes());
        }
    }
}

/// `RUST_LOG` as `target=level` directives and a bare default level (`debug`,
/// `info,bedrock_keyd=trace`): tracing-subscriber's `Targets`, which needs no regex
/// engine, unlike `EnvFilter` (about a megabyte of binary for span-field filters
/// nobody uses on this daemon). An unparsable `RUST_LOG` is reported and ignored.
fn from_env(default_level: &str) -> Targets {
    let fallback = || -> Targets {
        format!("{default_level},{QUIET_BY_DEFAULT}")
            .parse()
            .unwrap_or_default()
    };
    match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => spec.parse().unwrap_or_else(|e| {
            eprintln!("bedrock-keyd: ignoring RUST_LOG={spec:?}: {e}");
            fallback()
        }),
        _ => fallback(),
    }
}

/// A filter that drops events above the per-target floor in `SECRET_SAFE_FLOOR`.
pub fn secret_safe_floor() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    filter_fn(|meta| allowed(meta.target(), *meta.level()))
}

fn allowed(target: &str, level: Level) -> bool {
    for (prefix, floor) in SECRET_SAFE_FLOOR {
        let matches = target == *prefix
            || target
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with("::"));
        if matches {
            // In tracing, more verbose levels compare greater: TRACE > DEBUG > INFO.
            return level <= *floor;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_internals_are_never_logged_verbosely() {
        assert!(!allowed("aws_sigv4::http_request::sign", Level::TRACE));
        assert!(!allowed("aws_sigv4", Level::DEBUG));
        assert!(allowed("aws_sigv4", Level::WARN));
        assert!(!allowed(
            "aws_smithy_runtime::client::orchestrator",
            Level::TRACE
        ));
        assert!(allowed(
            "aws_smithy_runtime::client::orchestrator",
            Level::DEBUG
        ));
        assert!(allowed("aws_sigv4x", Level::TRACE));
        assert!(allowed("bedrock_keyd::daemon", Level::TRACE));
    }
}
