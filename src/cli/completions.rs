//! `bedrock-keyd completions SHELL`: shell completion scripts, generated from the
//! same clap definitions as `--help`, so they never drift from the real flags.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CliError};

/// Print a shell completion script to stdout.
///
/// Examples:
///   bedrock-keyd completions bash > /etc/bash_completion.d/bedrock-keyd
///   bedrock-keyd completions zsh > "${fpath[1]}/_bedrock-keyd"
///   bedrock-keyd completions fish > ~/.config/fish/completions/bedrock-keyd.fish
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    #[arg(value_enum)]
    shell: Shell,
}

pub fn run(args: CompletionsArgs) -> Result<ExitCode, CliError> {
    let mut command = Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "bedrock-keyd",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}
