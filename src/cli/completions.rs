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
    clap_complete::generate(
        args.shell,
        &mut eager_command(),
        "bedrock-keyd",
        &mut std::io::stdout(),
    );
    Ok(ExitCode::SUCCESS)
}

/// The command line with every subcommand's arguments added up front. Parsing defers
/// them (see `Command` in the parent module), but then the global `--log-format`
/// would reach each subcommand before its own flags, and the scripts would list it
/// first. Added here eagerly, the scripts are what they were before deferral.
fn eager_command() -> clap::Command {
    let mut command = Cli::command();
    for sub in command.get_subcommands_mut() {
        // The identity replaces the derive's deferral, which would add them twice.
        let deferred = std::mem::take(sub).defer(|sub| sub);
        *sub = match deferred.get_name() {
            "run" => super::run::RunArgs::augment_args(deferred),
            "once" => super::once::OnceArgs::augment_args(deferred),
            "mint" => super::mint::MintArgs::augment_args(deferred),
            "token" => super::token::TokenArgs::augment_args(deferred),
            "inspect" => super::inspect::InspectArgs::augment_args(deferred),
            "status" => super::status::StatusArgs::augment_args(deferred),
            "check" => super::check::CheckArgs::augment_args(deferred),
            "exec" => super::exec::ExecArgs::augment_args(deferred),
            "completions" => CompletionsArgs::augment_args(deferred),
            // A new subcommand lands here; the test below notices.
            _ => deferred,
        };
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every subcommand gets the same arguments and help text eagerly as when parsing
    /// builds it, and the variant's summary is the first line of the command's doc.
    #[test]
    fn the_eager_command_matches_the_deferred_one() {
        let mut deferred = Cli::command();
        let summaries: Vec<(String, Option<String>)> = deferred
            .get_subcommands()
            .map(|s| {
                (
                    s.get_name().to_owned(),
                    s.get_about().map(|a| a.to_string()),
                )
            })
            .collect();
        deferred.build();
        let mut eager = eager_command();
        eager.build();
        for (name, summary) in summaries {
            let d = deferred.find_subcommand(&name).unwrap();
            let e = eager.find_subcommand(&name).unwrap();
            let ids = |c: &clap::Command| {
                let mut ids: Vec<String> =
                    c.get_arguments().map(|a| a.get_id().to_string()).collect();
                ids.sort();
                ids
            };
            assert_eq!(ids(d), ids(e), "arguments of {name}");
            let about = |c: &clap::Command| c.get_about().map(|a| a.to_string());
            let long_about = |c: &clap::Command| c.get_long_about().map(|a| a.to_string());
            assert_eq!(about(d), about(e), "summary of {name}");
            assert_eq!(long_about(d), long_about(e), "description of {name}");
            assert_eq!(summary, about(d), "the variant's summary of {name}");
        }
    }
}
