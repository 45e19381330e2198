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

fn init_logging(default_level: &str, format: LogFormat) {
    // The AWS SDK warns about things our own errors already explain (a missing
    // ~/.aws/config, no IMDS on a laptop); keep it to errors unless RUST_LOG asks.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default_level},aws_config=error,aws_runtime=error,aws_smithy_runtime=error"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    bedrock_keyd::credentials::error_chain(err)
}
