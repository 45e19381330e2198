//! `bedrock-keyd inspect`: decode a key offline.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;
use serde::Serialize;
use zeroize::Zeroizing;

use super::CliError;
use crate::duration;
use crate::inspect::{DecodedKey, decode, extract_key};
use crate::key::Fingerprint;
use crate::time::rfc3339;

/// Decode a key offline: region, access key id, signing time, lifetime, expiry.
///
/// Reads the key from the argument, from stdin ("-", or when no argument is given and
/// stdin is not a terminal), or from a file written by a sink (raw, JSON or env-file).
/// The signature and the session token are never printed. Exits 3 when the input is
/// not a valid key, the key has expired, or it is signed in the future (more than 5m
/// after this machine's clock: forged, or minted with a wrong clock).
///
/// Prefer "-" or --file over passing the key as an argument: arguments are visible to
/// other users in the process list. An argument that names a file is refused with a
/// pointer to --file.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The key, or "-" to read it from stdin.
    #[arg(value_name = "KEY", conflicts_with = "file")]
    key: Option<String>,

    /// Read the key from this file (raw key, the JSON sink format, or a dotenv file).
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    region: &'a str,
    access_key_id: &'a str,
    issued_at: String,
    lifetime_seconds: u64,
    expires_at: String,
    remaining_seconds: u64,
    expired: bool,
    /// Signed more than 5 minutes after this machine's clock: invalid.
    signed_in_future: bool,
    session_token: bool,
    fingerprint: String,
}

pub fn run(args: InspectArgs) -> Result<ExitCode, CliError> {
    let text = read_input(&args)?;
    let key = Zeroizing::new(extract_key(&text, None)?);
    let decoded = decode(&key)?;
    let now = SystemTime::now();
    let report = report(&decoded, Fingerprint::of(&key), now);

    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_string_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|s| writeln!(out, "{s}"))
    } else {
        write_text(&mut out, &report, &decoded, now)
    };
    written.map_err(|e| CliError::Runtime(format!("cannot write to stdout: {e}")))?;

    if let Some(why) = decoded.invalid_at(now) {
        return Err(CliError::KeyExpired(format!("the key {why}")));
    }
    Ok(ExitCode::SUCCESS)
}

fn report(decoded: &DecodedKey, fingerprint: Fingerprint, now: SystemTime) -> Report<'_> {
    Report {
        region: &decoded.region,
        access_key_id: &decoded.access_key_id,
        issued_at: rfc3339(decoded.issued_at),
        lifetime_seconds: decoded.lifetime.as_secs(),
        expires_at: rfc3339(decoded.expires_at),
        remaining_seconds: decoded.remaining(now).as_secs(),
        expired: decoded.is_expired(now),
        signed_in_future: decoded.signed_in_future(now).is_some(),
        session_token: decoded.has_session_token,
        fingerprint: fingerprint.to_string(),
    }
}

fn write_text(
    out: &mut impl Write,
    report: &Report<'_>,
    decoded: &DecodedKey,
    now: SystemTime,
) -> std::io::Result<()> {
    let remaining = if report.signed_in_future {
        format!(
            "{} (but signed in the future: invalid)",
            duration::format(decoded.remaining(now))
        )
    } else if report.expired {
        format!(
            "expired {} ago",
            duration::format(now.duration_since(decoded.expires_at).unwrap_or_default())
        )
    } else {
        duration::format(decoded.remaining(now))
    };
    writeln!(out, "region:         {}", report.region)?;
    writeln!(out, "access key id:  {}", report.access_key_id)?;
    writeln!(out, "issued at:      {}", report.issued_at)?;
    writeln!(
        out,
        "lifetime:       {} ({}s)",
        duration::format(decoded.lifetime),
        report.lifetime_seconds
    )?;
    writeln!(out, "expires at:     {}", report.expires_at)?;
    writeln!(out, "remaining:      {remaining}")?;
    writeln!(
        out,
        "session token:  {}",
        if report.session_token {
            "embedded (temporary credentials)"
        } else {
            "none (long-term credentials)"
        }
    )?;
    writeln!(out, "fingerprint:    {}", report.fingerprint)
}

/// The most `inspect` reads from a file or stdin: a key is 1-2 KiB and a key file
/// or env-file a little more; the cap keeps `inspect - </dev/zero` from growing
/// without end.
const MAX_INPUT_BYTES: u64 = 64 * 1024;

fn read_input(args: &InspectArgs) -> Result<Zeroizing<String>, CliError> {
    if let Some(path) = &args.file {
        let bytes = crate::sink::bounded::read_path(path, MAX_INPUT_BYTES)
            .map_err(|e| CliError::KeyUnreadable(format!("cannot read {}: {e}", path.display())))?;
        return text(bytes, &path.display().to_string());
    }
    match args.key.as_deref() {
        Some("-") => read_stdin(),
        Some(arg) if looks_like_path(arg) => Err(CliError::Usage(format!(
            "{arg:?} looks like a file, not a key: read a key file with --file {arg}"
        ))),
        Some(key) => Ok(Zeroizing::new(key.to_owned())),
        None if std::io::stdin().is_terminal() => Err(CliError::Usage(
            "no key given: pass KEY, \"-\" to read stdin, or --file PATH".to_owned(),
        )),
        None => read_stdin(),
    }
}

/// Whether the KEY argument is a path given by mistake (`inspect k.raw`): not a key
/// (no key prefix), and an existing file or short and path-shaped. A real key is over
/// a thousand characters, so a key pasted without its prefix is never echoed back.
fn looks_like_path(arg: &str) -> bool {
    /// Longer than any path anyone types; far shorter than a key.
    const MAX_PATH_LIKE: usize = 256;
    if arg.starts_with(crate::key::KEY_PREFIX) || arg.len() > MAX_PATH_LIKE {
        return false;
    }
    let path = std::path::Path::new(arg);
    path.exists() || arg.contains('/') || path.extension().is_some()
}

fn read_stdin() -> Result<Zeroizing<String>, CliError> {
    let bytes = crate::sink::bounded::read_stream(std::io::stdin().lock(), MAX_INPUT_BYTES)
        .map_err(|e| CliError::KeyUnreadable(format!("cannot read the key from stdin: {e}")))?;
    text(bytes, "stdin")
}

fn text(bytes: Zeroizing<Vec<u8>>, from: &str) -> Result<Zeroizing<String>, CliError> {
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(e) => {
            let mut rejected = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut rejected);
            Err(CliError::KeyUnreadable(format!(
                "cannot read {from}: not UTF-8 text"
            )))
        }
    }
}
