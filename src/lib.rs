//! bedrock-keyd keeps short-term Amazon Bedrock API keys fresh.
//!
//! # Layout
//! - [`key`]: the secret type ([`key::ApiKey`]) and its metadata;
//! - [`mint`]: credentials + region + lifetime + instant → key (pure, via `aws-sigv4`);
//! - [`inspect`]: key → what it says about itself (offline, strict);
//! - [`credentials`]: all AWS SDK setup: where credentials and the region come from;
//! - [`sink`]: where keys are delivered (file, env-file, keyring), one writer per target
//!   (`sink::lock`), paths walked safely (`sink::path`), every file read bounded
//!   (`sink::bounded`);
//! - [`notify`]: how dependents learn about a new key (specifications, sending, debounce);
//! - [`config`]: the config file: lookup, parsing, validation into a [`config::Config`];
//! - [`schedule`]: when to refresh and retry, and whether a key is healthy (pure);
//! - [`daemon`]: the long-running service: one task per key, status board; and
//!   `token`'s read-or-mint-once ([`daemon::token`]);
//! - [`health`]: `/healthz`, `/readyz`, `/metrics` (when `listen` is set);
//! - [`sdnotify`]: systemd readiness, status, watchdog and reload notifications;
//! - [`service`]: what `run` serves besides the key tasks: the local Bedrock proxy;
//! - [`keyfile`]: the raw and JSON formats a key is written in;
//! - [`clock`]: the injected wall clock and its jumps (suspend, clock set);
//! - [`duration`], [`time`]: human durations and RFC 3339 timestamps;
//! - [`logging`]: tracing setup with a floor that keeps SDK internals (secrets) out;
//! - [`redact`]: the one redaction step for outside text shown in errors;
//! - [`watch`]: file watching (config, sink files, AWS files);
//! - [`cli`]: the command line and the mapping of errors to exit codes.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod duration;
pub mod health;
pub mod inspect;
pub mod key;
pub mod keyfile;
pub mod logging;
pub mod mint;
pub mod notify;
pub mod redact;
pub mod schedule;
pub mod sdnotify;
pub mod service;
pub mod sink;
pub mod time;
pub mod watch;
