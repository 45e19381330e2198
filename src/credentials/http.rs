//! The one HTTP client behind every AWS call (STS, SSO, container endpoint, IMDS).
//!
//! The SDK's default client is used as is, with one difference: it is not asked to
//! validate itself when an SDK client is *built*. That validation builds a TLS
//! connector, and building one reads every root certificate of the system (~150 files
//! under /etc/ssl/certs: several milliseconds and megabytes) — even for keys signed
//! with environment or static credentials, which never touch the network. With this
//! wrapper the connector, and the certificates, are loaded on the first request
//! instead. One client is shared, so its connection pool is too.

use std::sync::OnceLock;

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

#[derive(Debug)]
struct DeferredTls(SharedHttpClient);

impl HttpClient for DeferredTls {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // Called per request attempt; the inner client caches connectors by settings.
        self.0.http_connector(settings, components)
    }

    // `validate_base_client_config` / `validate_final_config` keep their no-op
    // defaults: the inner client's would build a connector (and load certificates)
    // just to check its configuration. It still checks it on the first request.

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The shared client: the SDK's (hyper 1, rustls with ring; see Cargo.toml), TLS set
/// up on first use.
pub(super) fn shared() -> SharedHttpClient {
    static CLIENT: OnceLock<SharedHttpClient> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let inner = aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
                .build_https();
            SharedHttpClient::new(DeferredTls(inner))
        })
        .clone()
}
