//! `bedrock-keyd run`: the command line of the long-running service
//! ([`crate::service::serve`] does the work: key tasks, reloads, watches, health,
//! systemd, proxies; SIGTERM/SIGINT stop it, SIGHUP reloads).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Args;

use super::flags::{KeyFlags, PolicyFlags, ProxyFlags};
use super::{CliError, block_on};

/// Keep every configured key fresh, until stopped.
///
/// Each key is minted at start, then re-minted at refresh_at of its effective lifetime
/// (± jitter) and never later than min_remaining before it expires; failures keep the
/// last good key in place and are retried with backoff. Deadlines follow the wall
/// clock, so a laptop that slept through one re-mints on wake.
///
/// After every sink of a key holds a new key, its dependents ([[key.notify]], or
/// --pid-file/--signal) are told, at most once per second per key (a burst of
/// refreshes gives one notification, of the latest key).
///
/// With --proxy (or [[key.proxy]]), also serves a local Bedrock endpoint per key:
/// clients send a constant local token and each request is forwarded with the current
/// key, so programs that read a key only once never see it expire.
///
/// Signals: SIGHUP reloads the config and re-mints now; SIGTERM/SIGINT finish any
/// write in progress and exit 0.
///
/// Example: bedrock-keyd run --config /etc/bedrock-keyd/config.toml
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    keys: KeyFlags,

    #[command(flatten)]
    policy: PolicyFlags,

    #[command(flatten)]
    proxy: ProxyFlags,

    /// Serve /healthz, /readyz and /metrics on this IP address and port, e.g.
    /// 127.0.0.1:9464 (single-key mode; with a config file, set `listen` there)
    /// [default: no listener].
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    listen: Option<SocketAddr>,
}

/// As the config file's `listen`: an IP address and a non-zero port, no host names.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address and port such as 127.0.0.1:9464"))?;
    if addr.port() == 0 {
        return Err(format!(
            "{s:?} has port 0; give the port to scrape, e.g. 9464"
        ));
    }
    Ok(addr)
}

impl RunArgs {
    /// The config to run: the key flags (with `--proxy` as a delivery target) or the
    /// config file.
    pub fn resolve(&self) -> super::Resolved {
        self.keys
            .resolve_with_proxies(&self.policy, self.proxy.specs()?)
    }
}

pub fn run(args: RunArgs, config: super::Resolved) -> Result<ExitCode, CliError> {
    let (location, mut config) = config?;
    if let Some(addr) = args.listen {
        if let Some(location) = &location {
            return Err(CliError::Usage(format!(
                "--listen only applies to a single key given by --file, --env-file or --keyring; with a config file ({}), set listen there",
                location.path.display()
            )));
        }
        config.listen = Some(addr);
    }
    block_on(crate::service::run(location, config))??;
    Ok(ExitCode::SUCCESS)
}
