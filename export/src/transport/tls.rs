//! Certificates and keys from the PEM files the configuration names, read and checked once at
//! start so a wrong path is a start-up error naming the variable, not a retry loop.

use std::{path::Path, sync::Arc};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::ClientError;
use crate::config::TlsFiles;

/// A PEM file's bytes and its parsed content.
pub(crate) struct Pem<T> {
    pub(crate) bytes: Vec<u8>,
    pub(crate) parsed: T,
}

fn read(path: &Path, var: &'static str) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::ReadFile {
        path: path.to_owned(),
        var,
        source,
    })
}

pub(crate) fn load_certs(
    path: &Path,
    var: &'static str,
) -> Result<Pem<Vec<CertificateDer<'static>>>, ClientError> {
    let bytes = read(path, var)?;
    let parsed: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|_| ClientError::NoCertificate {
            path: path.to_owned(),
            var,
        })?;
    if parsed.is_empty() {
        return Err(ClientError::NoCertificate {
            path: path.to_owned(),
            var,
        });
    }
    Ok(Pem { bytes, parsed })
}

pub(crate) fn load_key(
    path: &Path,
    var: &'static str,
) -> Result<Pem<PrivateKeyDer<'static>>, ClientError> {
    let bytes = read(path, var)?;
    let parsed = PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| ClientError::NoKey {
        path: path.to_owned(),
        var,
    })?;
    Ok(Pem { bytes, parsed })
}

/// The CA (if configured) and the client identity (if configured).
pub(crate) struct Material {
    pub(crate) ca: Option<Pem<Vec<CertificateDer<'static>>>>,
    pub(crate) identity: Option<(
        Pem<Vec<CertificateDer<'static>>>,
        Pem<PrivateKeyDer<'static>>,
    )>,
}

pub(crate) fn load(files: &TlsFiles) -> Result<Material, ClientError> {
    let ca = files
        .certificate
        .as_deref()
        .map(|p| load_certs(p, "OTEL_EXPORTER_OTLP_CERTIFICATE"))
        .transpose()?;
    let identity = match (&files.client_certificate, &files.client_key) {
        (Some(c), Some(k)) => Some((
            load_certs(c, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE")?,
            load_key(k, "OTEL_EXPORTER_OTLP_CLIENT_KEY")?,
        )),
        _ => None,
    };
    Ok(Material { ca, identity })
}

/// A rustls client config on the ring provider: the configured CA alone, else the system
/// roots (unless `system_roots` is false: plain-http endpoints never verify anything); the
/// client identity when configured.
pub(crate) fn rustls_config(
    material: Material,
    system_roots: bool,
) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match material.ca {
        Some(ca) => {
            for cert in ca.parsed {
                roots
                    .add(cert)
                    .map_err(|source| ClientError::Tls { source })?;
            }
        }
        None if system_roots => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        None => {}
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|source| ClientError::Tls { source })?
    .with_root_certificates(roots);
    match material.identity {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs.parsed, key.parsed)
            .map_err(|source| ClientError::Tls { source }),
        None => Ok(builder.with_no_client_auth()),
    }
}
