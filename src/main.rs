//! The `bedrock-keyd` binary: parse argv, set up logging, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bedrock_keyd::cli::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.resolve_config();
    bedrock_keyd::logging::init(cli.default_log_level(), cli.log_format(config.as_ref()));
    match cli::run(cli, config) {
        Ok(code) => code,
        Err(err) => {
            eprintln!(
                "bedrock-keyd: error: {}",
                bedrock_keyd::error::error_chain(&err)
            );
            ExitCode::from(err.exit_code())
        }
    }
}
