//! `wss://` with rustls (features `client-tls` and `client-tls-native-roots`): the default TLS
//! configuration, built from the root certificates the enabled features provide.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use super::ClientError;

/// The crypto provider of every configuration wsu builds, named explicitly: with
/// `ClientConfig::builder()` rustls picks a process-wide default and panics when it cannot
/// choose (for example when another crate of the program enables `aws-lc-rs` too).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The root certificates of the enabled features: Mozilla's (`client-tls`, compiled in) and the
/// operating system's (`client-tls-native-roots`, read now).
fn roots() -> Result<RootCertStore, ClientError> {
    #[allow(unused_mut)] // Only one of the blocks below may be compiled.
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "client-tls")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "client-tls-native-roots")]
    {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(%error, "could not load a root certificate of the operating system");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "root certificates of the operating system");
    }
    if roots.is_empty() {
        return Err(ClientError::Tls(
            "no root certificates: the operating system's store is empty (pass a \
             configuration with `ClientBuilder::tls_config`)"
                .into(),
        ));
    }
    Ok(roots)
}

/// The configuration of `wss://` connections without [`ClientBuilder::tls_config`]: the
/// features' root certificates, TLS 1.2 and 1.3, no client certificate, no ALPN.
///
/// [`ClientBuilder::tls_config`]: super::ClientBuilder::tls_config
pub(crate) fn default_config() -> Result<Arc<ClientConfig>, ClientError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(Box::new(e)))?
        .with_root_certificates(roots()?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether an I/O error of a connection attempt is a TLS failure (tokio-rustls wraps rustls'
/// errors, such as an untrusted certificate, in `io::Error`).
pub(crate) fn is_tls_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the compiled-in roots (the operating system's store may be empty on a bare machine).
    #[cfg(feature = "client-tls")]
    #[test]
    fn the_default_configuration_has_roots() {
        let config = default_config().expect("default config");
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn rustls_errors_are_told_apart() {
        let error = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(is_tls_error(&error));
        assert!(!is_tls_error(&std::io::Error::other("refused")));
    }
}
