//! What a `[[key.proxy]]` (or `run --proxy …`) says, validated: where to listen,
//! where to forward, where the local token lives, whether to serve TLS.
//!
//! Pure parsing, no side effects: `check` and a reload run it freely. The rules:
//! - `listen` is a loopback IP literal and a non-zero port (`127.0.0.1:8790`,
//!   `[::1]:8790`), or `unix:/absolute/path.sock`. Host names are not resolved (what
//!   `localhost` means is the resolver's choice) and any other address is refused:
//!   the proxy hands out a live Bedrock key to whoever holds the local token, so it
//!   never listens beyond the machine.
//! - `upstream` is an `https://` origin (no path). Plain `http://` is accepted only
//!   for a loopback IP literal or `localhost` (local stand-ins in tests, a local
//!   gateway): a key must not cross a network in clear text.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use http::uri::{Authority, Scheme};

use crate::sink::FileMode;

/// A socket accessible by its owner only, unless `mode` widens it.
pub const DEFAULT_SOCKET_MODE: FileMode = FileMode::DEFAULT;

/// One proxy of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySpec {
    pub listen: Listen,
    /// `None`: `https://bedrock-runtime.<region>.amazonaws.com`, the region of the key
    /// current at each request.
    pub upstream: Option<Upstream>,
    /// The local token clients present; created if absent.
    pub token_file: PathBuf,
    /// Serve HTTPS with a self-signed certificate written beside the token file.
    pub tls: bool,
    /// Extra trusted CAs for the upstream (PEM), besides the system roots and
    /// `AWS_CA_BUNDLE`.
    pub ca_bundle: Option<PathBuf>,
}

/// Where a proxy accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A loopback address and port.
    Tcp(SocketAddr),
    /// A unix socket, chmod-ed to `mode` after binding.
    Unix { path: PathBuf, mode: FileMode },
}

impl Listen {
    /// Parses `listen` (without `mode`, which only a unix socket takes).
    pub fn parse(s: &str, mode: Option<FileMode>) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let path = PathBuf::from(path);
            if !path.is_absolute() || path.as_os_str().len() > 100 {
                return Err(format!(
                    "{s:?}: a unix socket needs an absolute path of at most 100 bytes, e.g. \"unix:/run/bedrock-keyd/bedrock.sock\""
                ));
            }
            return Ok(Self::Unix {
                path,
                mode: mode.unwrap_or(DEFAULT_SOCKET_MODE),
            });
        }
        if mode.is_some() {
            return Err(
                "`mode` applies to a unix socket (listen = \"unix:/path.sock\") only".to_owned(),
            );
        }
        let addr: SocketAddr = s.parse().map_err(|_| {
            format!(
                "{s:?} is not a loopback address and port such as \"127.0.0.1:8790\" or \"[::1]:8790\", nor \"unix:/path.sock\" (host names are not resolved)"
            )
        })?;
        if !addr.ip().is_loopback() {
            return Err(format!(
                "{s:?} is not a loopback address: the proxy serves a live Bedrock key and listens on 127.0.0.1, ::1 or a unix socket only"
            ));
        }
        if addr.port() == 0 {
            return Err(format!(
                "{s:?} has port 0; give the port clients will use, e.g. 8790"
            ));
        }
        Ok(Self::Tcp(addr))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The origin requests are forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub scheme: Scheme,
    pub authority: Authority,
}

impl Upstream {
    /// Amazon Bedrock's runtime endpoint in `region`.
    pub fn for_region(region: &str) -> Result<Self, String> {
        Self::parse(&format!("https://bedrock-runtime.{region}.amazonaws.com"))
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|_| {
            format!(
                "{s:?} is not a URL such as \"https://bedrock-runtime.us-west-2.amazonaws.com\""
            )
        })?;
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(format!(
                "{s:?} is not an absolute URL such as \"https://bedrock-runtime.us-west-2.amazonaws.com\""
            ));
        };
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            return Err(format!(
                "{s:?} has a path or query; give the origin only (requests keep their own path)"
            ));
        }
        if authority.as_str().contains('@') {
            return Err(format!(
                "{s:?} contains user information; give the origin only"
            ));
        }
        if *scheme == Scheme::HTTP {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "{s:?} is plain http to a remote host: the key would cross the network in clear text; use https (http is allowed for loopback upstreams only)"
                ));
            }
        } else if *scheme != Scheme::HTTPS {
            return Err(format!("{s:?}: the scheme must be https"));
        }
        Ok(Self {
            scheme: scheme.clone(),
            authority: authority.clone(),
        })
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.authority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_loopback_or_a_socket() {
        assert!(matches!(
            Listen::parse("127.0.0.1:8790", None),
            Ok(Listen::Tcp(_))
        ));
        assert!(matches!(
            Listen::parse("[::1]:8790", None),
            Ok(Listen::Tcp(_))
        ));
        assert!(matches!(
            Listen::parse("unix:/run/x.sock", None),
            Ok(Listen::Unix { mode, .. }) if mode == DEFAULT_SOCKET_MODE
        ));
        for bad in [
            "0.0.0.0:8790",
            "192.168.1.2:80",
            "[::]:8790",
            "localhost:8790",
            "127.0.0.1:0",
            "unix:rel.sock",
        ] {
            assert!(Listen::parse(bad, None).is_err(), "{bad}");
        }
        assert!(Listen::parse("127.0.0.1:8790", Some(FileMode::DEFAULT)).is_err());
    }

    #[test]
    fn upstream_is_https_or_loopback_http() {
        assert!(Upstream::parse("https://bedrock-runtime.us-west-2.amazonaws.com").is_ok());
        assert!(Upstream::parse("https://bedrock-runtime.us-west-2.amazonaws.com/").is_ok());
        assert!(Upstream::parse("http://127.0.0.1:9000").is_ok());
        assert!(Upstream::parse("http://[::1]:9000").is_ok());
        assert!(Upstream::parse("http://localhost:9000").is_ok());
        for bad in [
            "http://example.com",
            "ftp://x",
            "https://x/path",
            "https://x?q=1",
            "x",
            "https://u:p@x",
        ] {
            assert!(Upstream::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Upstream::for_region("eu-west-1").unwrap().to_string(),
            "https://bedrock-runtime.eu-west-1.amazonaws.com"
        );
    }
}
