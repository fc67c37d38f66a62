//! TLS for `corral serve`: a certificate and key given as PEM files, or a self-signed one
//! made on first start and kept (so clients can pin it), served with rustls.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::ServeError;

/// Where the certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files given by the admin.
    Files { cert: PathBuf, key: PathBuf },
    /// `cert.pem`/`key.pem` in this directory, made self-signed on first start.
    SelfSigned { dir: PathBuf },
}

fn tls_err(what: impl Into<String>) -> ServeError {
    ServeError::Tls(what.into())
}

/// Makes (once) a self-signed certificate for `localhost`, the host name and the loopback
/// addresses; returns the paths of cert and key. The key file is private to root.
pub fn ensure_self_signed(dir: &Path) -> Result<(PathBuf, PathBuf), ServeError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(dir).map_err(|e| tls_err(format!("cannot create {}: {e}", dir.display())))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    let made =
        rcgen::generate_simple_self_signed(names).map_err(|e| tls_err(format!("cannot make a certificate: {e}")))?;
    let write = |p: &Path, text: String, mode: u32| -> Result<(), ServeError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(p)
            .map_err(|e| tls_err(format!("cannot write {}: {e}", p.display())))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| tls_err(format!("cannot write {}: {e}", p.display())))
    };
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(&key);
    write(&key, made.key_pair.serialize_pem(), 0o600)?;
    write(&cert, made.cert.pem(), 0o644)?;
    Ok((cert, key))
}

/// The rustls server configuration for `source`.
pub fn server_config(source: &TlsSource) -> Result<(Arc<rustls::ServerConfig>, PathBuf), ServeError> {
    let (cert_path, key_path) = match source {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::SelfSigned { dir } => ensure_self_signed(dir)?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_err(format!("{}: not a PEM certificate chain ({e})", cert_path.display())))?;
    if certs.is_empty() {
        return Err(tls_err(format!("{}: holds no certificate", cert_path.display())));
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| tls_err(format!("{}: not a PEM private key ({e})", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            tls_err(format!(
                "{} and {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), cert_path))
}

/// Serves `router` over TLS on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    config: Arc<rustls::ServerConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    continue;
                }
            },
        };
        let (acceptor, router) = (acceptor.clone(), router.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
            };
            // The peer's address for handlers (login rate limits), as axum::serve gives it.
            let router = router.layer(axum::Extension(axum::extract::ConnectInfo(peer)));
            let service = hyper_util::service::TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}
