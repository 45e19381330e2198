//! The `bedrock-keyd` binary: parse argv, set up logging, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bedrock_keyd::cli::{self, Cli, LogFormat};
use clap::Parser;
use tracing_subscriber::EnvFilter;

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

/// Log targets capped below the level at which they print credentials: aws-sigv4's
/// canonical requests (session tokens), the SDK orchestrator's trace of every request
/// sent (SSO bearer tokens, `X-Amz-Security-Token` headers), the HTTP stack's wire logs.
const SECRET_BEARING_TARGETS: &[&str] = &[
    "aws_sigv4=info",
    "aws_smithy_runtime=debug",
    "aws_smithy_runtime_api=debug",
    "hyper=info",
    "hyper_util=info",
    "h2=info",
];

fn init_logging(default_level: &str, format: LogFormat) {
    // The AWS SDK warns about things our own errors already explain (a missing
    // ~/.aws/config, no IMDS on a laptop); keep it to errors unless RUST_LOG asks.
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},aws_config=error,aws_runtime=error,aws_smithy_runtime=error"
        ))
    });
    // Whatever RUST_LOG says, these targets stay below the level at which they log
    // secrets. Added last, so they override RUST_LOG's directives for them.
    for clamp in SECRET_BEARING_TARGETS {
        if let Ok(directive) = clamp.parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a person at a terminal, not for journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    bedrock_keyd::credentials::error_chain(err)
}
