//! One proxied request: check the local token, swap in the current key, forward to
//! the configured upstream, stream the answer back.
//!
//! Never an open proxy: the destination is always the configured upstream, whatever
//! the request says. HTTP/1 absolute-form targets (`GET http://host/ HTTP/1.1`) are
//! refused with 400 and CONNECT with 405 rather than reinterpreted. Hop-by-hop
//! headers (RFC 9110 §7.6.1: `Connection` and the fields it names, `Keep-Alive`,
//! `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`,
//! `Proxy-Authorization`) are dropped both ways; `Host` is rewritten to the upstream.
//!
//! Bodies are passed through as hyper streams, never collected, so eventstream
//! frames and server-sent events reach the client as the upstream sends them. The
//! proxy's own answers are JSON `{"message": …}` like Bedrock's: 401 (token), 503
//! (no valid key: nothing is sent upstream), 502 (the upstream cannot be reached).
//! Whatever the upstream answers (403, 429, 5xx) passes through unchanged.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::current::KeyWatch;
use super::metrics::{InFlight, ProxyMetrics};
use super::token::LocalToken;
use crate::clock::Clock;
use crate::config::proxy::Upstream;

/// What the proxy answers with: the upstream's stream, or its own small JSON.
pub type ProxyBody = Either<Tracked, Full<Bytes>>;

/// The pooled upstream client.
pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Incoming>;

/// Everything a request needs; shared by every connection of one listener.
pub struct Forwarder {
    pub key_name: String,
    pub token: LocalToken,
    pub current: KeyWatch,
    /// `None`: Bedrock runtime in the current key's region.
    pub upstream: Option<Upstream>,
    pub client: UpstreamClient,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<ProxyMetrics>,
}

impl Forwarder {
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let guard = self.metrics.in_flight();
        let (response, fingerprint) = self.forward(req, guard).await;
        let status = response.status().as_u16();
        self.metrics.count(status);
        tracing::debug!(
            key = %self.key_name,
            %method,
            %path,
            status,
            duration_ms = started.elapsed().as_secs_f64() * 1e3,
            fingerprint = %fingerprint.map(|f| f.to_string()).unwrap_or_default(),
            "proxied"
        );
        Ok(response)
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        guard: InFlight,
    ) -> (Response<ProxyBody>, Option<crate::key::Fingerprint>) {
        if req.method() == Method::CONNECT {
            return (
                reply(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "CONNECT is not supported: this is a Bedrock endpoint, not a forward proxy",
                ),
                None,
            );
        }
        // HTTP/2 requests always carry :scheme and :authority; HTTP/1 ones only in
        // absolute form, which is what a client configured to use a forward proxy sends.
        if req.version() < Version::HTTP_2 && req.uri().scheme().is_some() {
            return (
                reply(
                    StatusCode::BAD_REQUEST,
                    "absolute-form request targets are refused: this is a Bedrock endpoint, not a forward proxy; send the path only",
                ),
                None,
            );
        }
        let authorized = req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| self.token.matches_header(v.as_bytes()));
        if !authorized {
            let mut r = reply(
                StatusCode::UNAUTHORIZED,
                "missing or wrong local token: send Authorization: Bearer <the token in the proxy's token_file>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return (r, None);
        }
        let Some(key) = self.current.borrow().clone() else {
            return (
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no Bedrock key yet: the first key has not been minted and delivered (see the daemon's log and /readyz)",
                ),
                None,
            );
        };
        if key.expires_at <= self.clock.now() {
            return (
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the current Bedrock key has expired and no new one could be minted (see the daemon's log and /readyz)",
                ),
                Some(key.fingerprint),
            );
        }
        let Some(upstream) = self.upstream.as_ref().or(key.region_upstream.as_ref()) else {
            let why = format!(
                "the key's region {:?} gives no Bedrock endpoint; set `upstream`",
                key.region
            );
            return (reply(StatusCode::BAD_GATEWAY, &why), Some(key.fingerprint));
        };
        let path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let uri = Uri::builder()
            .scheme(upstream.scheme.clone())
            .authority(upstream.authority.clone())
            .path_and_query(path_and_query)
            .build();
        let uri = match uri {
            Ok(u) => u,
            Err(e) => {
                return (
                    reply(StatusCode::BAD_REQUEST, &e.to_string()),
                    Some(key.fingerprint),
                );
            }
        };
        *req.uri_mut() = uri;
        // The pool picks HTTP/1.1 or h2 per connection (ALPN); the client's own
        // version says nothing about the upstream's.
        *req.version_mut() = Version::HTTP_11;
        let headers = req.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(header::HOST);
        headers.insert(header::AUTHORIZATION, key.bearer.clone());

        let sent = Instant::now();
        match self.client.request(req).await {
            Ok(response) => {
                self.metrics.upstream(sent.elapsed());
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let body = Either::Left(Tracked {
                    inner: body,
                    _in_flight: guard,
                });
                (Response::from_parts(parts, body), Some(key.fingerprint))
            }
            Err(e) => {
                let reason = crate::error::error_chain(&e);
                tracing::warn!(key = %self.key_name, upstream = %upstream, error = %reason, "the upstream could not be reached");
                (
                    reply(
                        StatusCode::BAD_GATEWAY,
                        &format!("cannot reach the upstream {upstream}: {reason}"),
                    ),
                    Some(key.fingerprint),
                )
            }
        }
    }
}

/// RFC 9110 §7.6.1: fields meant for one connection only.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
}

/// The proxy's own answer: `{"message": …}`, as Bedrock words its errors.
pub fn reply(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The upstream's body, counted in flight until it ends or the client goes away.
pub struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_go() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("trailer", "x"),
            ("content-type", "application/json"),
            ("x-standin-chunks", "3"),
        ] {
            h.append(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "x-standin-chunks"]);
    }
}
