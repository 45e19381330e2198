//! bedrock-keyd keeps short-term Amazon Bedrock API keys fresh.
//!
//! # Layout
//! Imports run one way: [`cli`] → [`service`] → [`daemon`] → {[`schedule`],
//! [`credentials`], [`key`], [`sink`], [`dependents`]} → [`clock`]; [`config`] turns
//! the file into their validated types; [`error`], [`redact`] and [`logging`] serve
//! every layer (the `[[key.proxy]]` types are config's, [`config::proxy`], which the
//! proxy in `service` serves). One import still runs the other way (issue 14): the
//! dependents' debounced hook implements the daemon's `OnDelivered` on its status
//! board.
//! - [`cli`]: clap types and thin per-command glue; exit codes are decided here only;
//! - [`service`]: what `run` and `exec` serve around the key tasks: [`service::serve`]
//!   (taking its shutdown as a future), signals set up once, the `exec` supervisor,
//!   file watches, the HTTP `/healthz`/`/readyz`/`/metrics` endpoint (metrics text in
//!   [`service::metrics`]), systemd notifications ([`service::systemd`]) and the local
//!   Bedrock proxy;
//! - [`daemon`]: one task per key, the status board with its readiness wording, and
//!   the one refresh path ([`daemon::refresh`]) that `run`, `exec`, `once`
//!   ([`daemon::once`]) and `token` ([`daemon::token`]) share, on the injected clock;
//!   target locks ([`daemon::locks`]);
//! - [`key`]: the secret type ([`key::ApiKey`]), its metadata, [`key::Lifetime`],
//!   [`key::Region`], [`key::KeyName`]; minting ([`key::mint`], pure, via
//!   `aws-sigv4`), decoding a key offline ([`key::decode`]), and the key-file formats
//!   ([`key::format`]: render, and read raw/JSON/dotenv; the one reader of key files,
//!   whose dotenv scanner the env-file sink also edits with);
//! - [`credentials`]: all AWS SDK setup: where credentials and the region come from;
//! - [`sink`]: where keys are delivered (file, env-file, keyring), one writer per target
//!   (`sink::lock`), paths walked safely (`sink::path`), every file read bounded
//!   (`sink::bounded`);
//! - [`dependents`]: how dependents learn about a new key (specifications, sending,
//!   debounce);
//! - [`config`]: the config file: lookup, parsing, validation into a [`config::Config`];
//! - [`schedule`]: when to refresh and retry, and whether a key is healthy (pure);
//! - [`clock`]: the injected wall clock and its jumps (suspend, clock set), human
//!   durations ([`clock::duration`]) and RFC 3339 timestamps ([`clock::time`]);
//! - [`error`]: an error and its causes as one redacted line;
//! - [`logging`]: tracing setup with a floor that keeps SDK internals (secrets) out;
//! - [`redact`]: the one redaction step for outside text shown in errors.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod dependents;
pub mod error;
pub mod key;
pub mod logging;
pub mod redact;
pub mod schedule;
pub mod service;
pub mod sink;
