//! TLS on both sides of the proxy.
//!
//! Listener (`tls = true`): botocore sends a bearer token only over HTTPS, so the
//! proxy can serve HTTPS on loopback with a self-signed certificate for `127.0.0.1`,
//! `::1` and `localhost`. It is written beside the token file as `proxy.crt` (the CA
//! bundle clients are given, e.g. `AWS_CA_BUNDLE`) and `proxy.key` (`0600`), and
//! reused at the next start while it is ours, private and more than
//! [`RENEW_BEFORE`] from its end, so the bundle clients were given stays valid across
//! restarts. A new pair is written atomically (temporary file, then rename).
//!
//! Upstream: verified against the system roots (rustls-native-certs) plus the PEM
//! certificates of `AWS_CA_BUNDLE` and `ca_bundle` (TLS-inspecting corporate proxies,
//! local stand-ins in tests). All on ring, like the rest of the binary.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// How long a generated certificate is valid: long enough that clients' bundles
/// rarely change, short enough that a stolen key file does not last for ever.
const CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A certificate with less than this left is replaced at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The certificate's file name, beside the token file.
pub const CERT_FILE: &str = "proxy.crt";
/// Its private key's file name.
pub const KEY_FILE: &str = "proxy.key";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("proxy TLS: {0}")]
pub struct TlsError(pub String);

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key paths for a token file.
pub fn cert_paths(token_file: &Path) -> (PathBuf, PathBuf) {
    let dir = token_file.parent().unwrap_or(Path::new("/"));
    (dir.join(CERT_FILE), dir.join(KEY_FILE))
}

/// A server config for the listener: the pair beside `token_file`, generated when
/// missing, not ours, or near its end. ALPN offers h2 and HTTP/1.1.
pub fn server_config(token_file: &Path, now: SystemTime) -> Result<rustls::ServerConfig, TlsError> {
    let (cert_path, key_path) = cert_paths(token_file);
    let (cert, key) = match reuse(&cert_path, &key_path, now) {
        Some(pair) => pair,
        None => generate(&cert_path, &key_path, now)?,
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .map_err(|e| TlsError(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The existing pair, when both files are ours, the key is private and the
/// certificate (judged by its file's age: we wrote it with [`CERT_VALIDITY`]) is
/// not near its end.
fn reuse(
    cert_path: &Path,
    key_path: &Path,
    now: SystemTime,
) -> Option<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let euid = nix::unistd::geteuid().as_raw();
    let cert_meta = fs::symlink_metadata(cert_path).ok()?;
    let key_meta = fs::symlink_metadata(key_path).ok()?;
    let ours = |m: &fs::Metadata| m.file_type().is_file() && m.uid() == euid;
    if !ours(&cert_meta) || !ours(&key_meta) || key_meta.mode() & 0o077 != 0 {
        return None;
    }
    let written = cert_meta.modified().ok()?;
    // A file from the future (the clock was set back since) says nothing reliable
    // about the certificate's age: make a new one. Minutes of slack for the write
    // itself and small clock steps.
    if written > now + Duration::from_secs(300) || written + CERT_VALIDITY < now + RENEW_BEFORE {
        return None;
    }
    let cert = CertificateDer::from_pem_file(cert_path).ok()?;
    let key = PrivateKeyDer::from_pem_file(key_path).ok()?;
    Some((cert, key))
}

fn generate(
    cert_path: &Path,
    key_path: &Path,
    now: SystemTime,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| TlsError(format!("{what}: {e}"));
    let mut params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
        "localhost".to_owned(),
    ])
    .map_err(|e| fail("certificate parameters", &e))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "bedrock-keyd local proxy");
    // A minute back, for clients whose clock is a little behind.
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + CERT_VALIDITY).into();
    let key = rcgen::KeyPair::generate().map_err(|e| fail("key generation", &e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| fail("self-signing", &e))?;
    write_atomic(key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(certificate = %cert_path.display(), "generated the proxy's TLS certificate (give it to clients as their CA bundle)");
    let key_der =
        PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| fail("private key", &e))?;
    Ok((cert.der().clone(), key_der))
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let fail = |e: std::io::Error| TlsError(format!("cannot write {}: {e}", path.display()));
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(fail)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    fs::rename(&tmp, path).map_err(fail)
}

/// A client config for the upstream: system roots plus `extra` PEM bundles.
pub fn client_config(extra: &[PathBuf]) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut pinned = Vec::new();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::debug!(error = %e, "a system root certificate could not be loaded");
    }
    roots.add_parsable_certificates(native.certs);
    for path in extra {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsError(format!("CA bundle {}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(TlsError(format!(
                "CA bundle {} holds no PEM certificate",
                path.display()
            )));
        }
        pinned.extend(certs.iter().cloned());
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsError(format!(
                "CA bundle {}: no usable certificate",
                path.display()
            )));
        }
    }
    if roots.is_empty() {
        return Err(TlsError(
            "no trusted root certificate: install ca-certificates or set AWS_CA_BUNDLE".to_owned(),
        ));
    }
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError(e.to_string()))?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { webpki, pinned }))
        .with_no_client_auth())
}

/// WebPKI verification, plus one case OpenSSL-based clients (botocore, curl) accept
/// and webpki does not: a server presenting exactly a certificate from the CA bundle
/// the operator gave, which is itself a CA (what `openssl req -x509` makes by
/// default). That certificate is trusted as given; its names must still match.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<rustls::client::WebPkiServerVerifier>,
    /// The certificates of `AWS_CA_BUNDLE` and `ca_bundle`, not the system roots.
    pinned: Vec<CertificateDer<'static>>,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(e)))
                if format!("{e:?}").contains("CaUsedAsEndEntity")
                    && self
                        .pinned
                        .iter()
                        .any(|p| p.as_ref() == end_entity.as_ref()) =>
            {
                let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
                rustls::client::verify_server_name(&parsed, server_name)?;
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused_then_renewed_near_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("proxy.token");
        let now = SystemTime::now();
        server_config(&token, now).unwrap();
        let (cert, key) = cert_paths(&token);
        let first = fs::read(&cert).unwrap();
        assert_eq!(fs::metadata(&key).unwrap().mode() & 0o777, 0o600);
        server_config(&token, now).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), first, "reused");
        server_config(&token, now + CERT_VALIDITY - RENEW_BEFORE / 2).unwrap();
        assert_ne!(fs::read(&cert).unwrap(), first, "renewed");
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        fs::write(&path, "nothing here\n").unwrap();
        assert!(client_config(&[path]).is_err());
    }
}
