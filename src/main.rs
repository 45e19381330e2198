//! The `bedrock-keyd` binary: parse argv, set up logging, run, map errors to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use bedrock_keyd::cli::{self, Cli};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    bedrock_keyd::logging::init(cli.default_log_level(), cli.log_format());
    match cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!(
                "bedrock-keyd: error: {}",
                bedrock_keyd::credentials::error_chain(&err)
            );
            ExitCode::from(err.exit_code())
        }
    }
}
