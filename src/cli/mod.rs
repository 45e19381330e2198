//! The command line: argument types, dispatch, and the one place where errors become
//! exit codes (see "Exit codes" in the design contract).

mod check;
mod completions;
mod exec;
mod flags;
mod inspect;
mod mint;
mod once;
mod run;
mod status;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use flags::CredentialFlags;

/// Exit codes of the contract; `main` returns one of these.
pub mod exit {
    pub const OK: u8 = 0;
    pub const RUNTIME: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const KEY_INVALID: u8 = 3;
    pub const CREDENTIALS: u8 = 69;
    pub const SINK: u8 = 73;
    pub const CONFIG: u8 = 78;

    /// `exec`: the command's own exit code (the low 8 bits, as a shell sees it).
    pub fn child(code: i32) -> std::process::ExitCode {
        std::process::ExitCode::from((code & 0xff) as u8)
    }

    /// `exec`: the command was killed by signal `sig`: 128 + sig, the shell convention.
    pub fn signalled(sig: i32) -> std::process::ExitCode {
        std::process::ExitCode::from((128 + (sig & 0x7f)) as u8)
    }
}

const AFTER_HELP: &str = "\
Exit codes: 0 success, 1 runtime failure, 2 usage, 3 key invalid or expired,
69 credentials unavailable, 73 a sink could not be written, 78 configuration invalid.

Logging goes to stderr; RUST_LOG (e.g. RUST_LOG=debug) overrides the level.
The key itself never appears in logs or errors.";

/// Keeps short-term Amazon Bedrock API keys fresh.
///
/// A short-term key is minted offline from AWS credentials (a SigV4 presign, exactly as
/// the official aws-bedrock-token-generator does) and is valid for at most 12 hours, or
/// until the signing credentials expire if that is sooner.
#[derive(Debug, Parser)]
#[command(name = "bedrock-keyd", version, after_help = AFTER_HELP, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

pub use crate::config::LogFormat;

/// The subcommands. Their arguments are built only for the one that runs (`defer`):
/// building all eight took a tenth of the CPU time of a `once` run. So the one-line
/// summaries `--help` lists are here, on the variants (each repeats the first line of
/// its command's own doc, which a test checks); the rest stays with each command.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
enum Command {
    // In the order of the design contract: the service first, the tools after.
    /// Keep every configured key fresh, until stopped.
    Run(Box<run::RunArgs>),
    /// Mint every key once, write it to all its sinks, notify its dependents, and exit.
    Once(Box<once::OnceArgs>),
    /// Mint one key and print it to stdout.
    Mint(mint::MintArgs),
    /// Print a key valid for at least --min-valid: from the sinks if one holds it, else minted.
    Token(Box<token::TokenArgs>),
    /// Decode a key offline: region, access key id, signing time, lifetime, expiry.
    Inspect(inspect::InspectArgs),
    /// Probe: exit 0 only if every sink holds a key valid long enough.
    Status(status::StatusArgs),
    /// Validate the config file and print what the daemon would do, without doing it.
    Check(check::CheckArgs),
    /// Run CMD with AWS_BEARER_TOKEN_BEDROCK (and AWS_REGION) set, and keep the key fresh.
    Exec(Box<exec::ExecArgs>),
    /// Print a shell completion script to stdout.
    Completions(completions::CompletionsArgs),
}

/// Everything a command can fail with, each mapped to one exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    KeyInvalid(#[from] crate::inspect::InspectError),
    /// `inspect`: the key expired, or is signed in the future.
    #[error("{0}")]
    KeyExpired(String),
    #[error("{0}")]
    KeyUnreadable(String),
    /// `status`: one or more sinks hold no key valid long enough (one line each).
    #[error("{0}")]
    Probe(String),
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    /// `check`: a key the run would fail for, with that failure.
    #[error("key {key:?}: {error}")]
    KeyCredentials {
        key: String,
        error: crate::credentials::CredentialsError,
    },
    #[error(transparent)]
    Mint(#[from] crate::mint::MintError),
    #[error(transparent)]
    Sinks(SinkFailures),
    /// A target is held by another writer (`run` at start, `once` after its wait).
    #[error(transparent)]
    Locked(#[from] crate::sink::lock::LockError),
    #[error("{0}")]
    Runtime(String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `token`: what is particular to it (credential, mint and sink errors use the
    /// variants above).
    #[error(transparent)]
    Token(crate::daemon::token::TokenError),
}

/// The sinks `once` could not write (the others were written).
#[derive(Debug)]
pub struct SinkFailures {
    pub failures: Vec<crate::sink::SinkError>,
    /// How many sinks were attempted.
    pub total: usize,
}

impl std::fmt::Display for SinkFailures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let [only] = self.failures.as_slice() {
            return write!(f, "{only}");
        }
        write!(
            f,
            "{} of {} sinks could not be written: ",
            self.failures.len(),
            self.total
        )?;
        for (i, e) in self.failures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SinkFailures {}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        use crate::credentials::CredentialsError as C;
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::KeyInvalid(_) | Self::KeyExpired(_) | Self::KeyUnreadable(_) | Self::Probe(_) => {
                exit::KEY_INVALID
            }
            Self::Credentials(C::NoRegion { .. } | C::BadRegion(_))
            | Self::KeyCredentials {
                error: C::NoRegion { .. } | C::BadRegion(_),
                ..
            } => exit::CONFIG,
            Self::Credentials(_) | Self::KeyCredentials { .. } => exit::CREDENTIALS,
            Self::Mint(crate::mint::MintError::CredentialsExpired { .. }) => exit::CREDENTIALS,
            Self::Sinks(_) | Self::Locked(_) => exit::SINK,
            Self::Mint(_) | Self::Runtime(_) => exit::RUNTIME,
            Self::Config(_) => exit::CONFIG,
            Self::Token(e) => {
                use crate::daemon::token::TokenError as T;
                match e {
                    T::Credentials(C::NoRegion { .. } | C::BadRegion(_)) => exit::CONFIG,
                    T::Credentials(_) | T::TooShort { .. } => exit::CREDENTIALS,
                    T::Mint(crate::mint::MintError::CredentialsExpired { .. }) => exit::CREDENTIALS,
                    T::Mint(_) => exit::RUNTIME,
                    // Another caller's mint did not finish in time, or the cache that
                    // stands in for the sink cannot be used: the key was not delivered.
                    T::Sinks { .. } | T::Lock(_) | T::Cache { .. } => exit::SINK,
                }
            }
        }
    }
}

impl Cli {
    /// The log level used when RUST_LOG is not set: commands whose stdout is the
    /// product stay quiet, long-running ones report their milestones.
    pub fn default_log_level(&self) -> &'static str {
        match self.command {
            Command::Mint(_)
            | Command::Token(_)
            | Command::Inspect(_)
            | Command::Check(_)
            | Command::Completions(_)
            | Command::Status(_) => "warn",
            // `once` reports its milestones (key minted, sink written) like the daemon.
            Command::Once(_) | Command::Run(_) | Command::Exec(_) => "info",
        }
    }

    /// The config of the commands that read one (`run`, `once`, `exec --config`),
    /// resolved once before logging starts, because the log format may come from it;
    /// the command then gets this result instead of reading the file again. An error
    /// is kept for the command to report.
    pub fn resolve_config(&self) -> Option<Resolved> {
        match &self.command {
            Command::Run(args) => Some(args.resolve()),
            Command::Once(args) => Some(args.resolve()),
            Command::Exec(args) => args.resolve_config(),
            _ => None,
        }
    }

    /// `--log-format`, else the config's `log_format`, else text.
    pub fn log_format(&self, config: Option<&Resolved>) -> crate::logging::Format {
        let from_config = || config?.as_ref().ok()?.1.log_format;
        match self.log_format.or_else(from_config) {
            Some(LogFormat::Json) => crate::logging::Format::Json,
            Some(LogFormat::Text) | None => crate::logging::Format::Text,
        }
    }
}

/// A resolved config: where it came from (`None` for a single key given by flags)
/// and what it says, or why it could not be used.
pub type Resolved =
    Result<(Option<crate::config::ConfigLocation>, crate::config::Config), CliError>;

/// Runs the command with the config `Cli::resolve_config` returned (read here when
/// `None`). Errors carry their exit code; `main` prints them once.
pub fn run(cli: Cli, config: Option<Resolved>) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Mint(args) => mint::run(args),
        Command::Token(args) => token::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Check(args) => check::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Once(args) => {
            let config = config.unwrap_or_else(|| args.resolve());
            once::run(*args, config)
        }
        Command::Run(args) => {
            let config = config.unwrap_or_else(|| args.resolve());
            run::run(*args, config)
        }
        Command::Exec(args) => {
            let config = config.or_else(|| args.resolve_config());
            exec::run(*args, config)
        }
        Command::Status(args) => status::run(args),
    }
}

/// Blocking-pool threads the runtime may run at once (tokio's default is 512). Sink
/// writes run there, so with many keys the first round of deliveries would otherwise
/// start a thread per key, each of which leaves a glibc malloc arena behind when it
/// retires: 1,000 keys measured ~31 MiB RSS with the default and ~21 MiB with 16,
/// while delivering all 1,000 first keys took 0.85 s instead of 0.72 s (BENCHMARKS.md,
/// "Idle cost"). A sink write that hangs (a dead NFS server) holds one thread; 16
/// leaves room for others.
const MAX_BLOCKING_THREADS: usize = 16;

/// A small runtime for the commands that talk to credential providers. One thread is
/// plenty: the work is a few HTTP calls at most.
pub(crate) fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the async runtime: {e}")))?;
    Ok(runtime.block_on(future))
}
