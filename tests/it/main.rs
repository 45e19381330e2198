//! Integration tests: the real binary against temp dirs and real local servers.
//!
//! One test binary (faster to build and link than one per file); `util` holds the
//! shared harness, and `daemon` the one for tests that run `bedrock-keyd` in the
//! background. Tests that need an external component (the official Python generator,
//! moto, gnome-keyring, …) skip with a printed reason on a developer machine, and
//! fail when `BEDROCK_KEYD_REQUIRE_ALL=1` (as CI sets it).

mod daemon;
mod fake_http;
mod leaks;
mod util;

mod attacks;
mod check;
mod cli_mint;
mod clients;
mod clients_rotation;
mod credentials;
mod daemon_run;
mod daemon_sim;
mod exec;
mod faults;
mod first_day;
mod health;
mod interop;
mod keyring;
mod notify;
mod props;
mod proxy;
mod sinks;
mod standin;
mod status;
mod token;
