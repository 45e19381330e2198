//! The `bedrock-keyd` binary: parse argv, set up logging, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bedrock_keyd::cli::{self, Cli, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.default_log_level(), cli.log_format());
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bedrock-keyd: error: {}", error_chain(&err));
            ExitCode::from(err.exit_code())
        }
    }
}

/// Log targets capped below the level at which they print credentials, whatever
/// RUST_LOG says: aws-sigv4's canonical requests (session tokens), the SDK
/// orchestrator's trace of every request sent (SSO bearer tokens, security-token
/// headers), the HTTP stack's wire logs. A cap only lowers: it never enables a level
/// the EnvFilter left off.
const SECRET_BEARING_TARGETS: &[(&str, LevelFilter)] = &[
    ("aws_sigv4", LevelFilter::INFO),
    ("aws_smithy_runtime", LevelFilter::DEBUG),
    ("aws_smithy_runtime_api", LevelFilter::DEBUG),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
];

fn init_logging(default_level: &str, format: LogFormat) {
    // The AWS SDK warns about things our own errors already explain (a missing
    // ~/.aws/config, no IMDS on a laptop); keep it to errors unless RUST_LOG asks.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},aws_config=error,aws_runtime=error,aws_smithy_runtime=error"
        ))
    });
    let caps = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(SECRET_BEARING_TARGETS.iter().copied());
    let layer = tracing_subscriber::fmt::layer()
        // Colour codes only for a person at a terminal, not for journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter.and(caps)))
            .init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter.and(caps)))
            .init(),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    bedrock_keyd::credentials::error_chain(err)
}
