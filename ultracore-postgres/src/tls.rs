//! TLS to PostgreSQL: a `tokio-postgres` connector on rustls (ring provider, the same TLS
//! stack as the server's listeners), verifying the server's certificate and host name against
//! a CA file or, without one, Mozilla's roots (`webpki-roots`). With TLS on, every connection
//! requires it (`sslmode=require` semantics plus verification, i.e. libpq's `verify-full`);
//! with it off, connections never attempt it (`sslmode=disable`).

use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::PgError;

/// How connections to PostgreSQL are made: plain, or TLS verified against `roots`.
#[derive(Clone)]
pub struct Connector {
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.tls.is_some() {
            "Connector(tls)"
        } else {
            "Connector(plain)"
        })
    }
}

impl Connector {
    /// Plain TCP (or Unix socket) connections.
    pub fn plain() -> Connector {
        Connector { tls: None }
    }

    /// TLS, trusting the PEM certificates in `ca_file`, or Mozilla's roots when `None`.
    pub fn tls(ca_file: Option<&Path>) -> Result<Connector, PgError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    PgError::Config(format!("PostgreSQL CA file {}: {e}", path.display()))
                })?;
                let certs: Vec<CertificateDer<'static>> = pem_certificates(&pem).map_err(|e| {
                    PgError::Config(format!("PostgreSQL CA file {}: {e}", path.display()))
                })?;
                if certs.is_empty() {
                    return Err(PgError::Config(format!(
                        "PostgreSQL CA file {} holds no certificate",
                        path.display()
                    )));
                }
                for c in certs {
                    roots.add(c).map_err(|e| {
                        PgError::Config(format!("PostgreSQL CA file {}: {e}", path.display()))
                    })?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector {
            tls: Some(Arc::new(config)),
        })
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Sets the SSL mode of `config` to match: required with TLS, never attempted without.
    pub(crate) fn apply(&self, config: &mut tokio_postgres::Config) {
        config.ssl_mode(if self.is_tls() {
            tokio_postgres::config::SslMode::Require
        } else {
            tokio_postgres::config::SslMode::Disable
        });
    }
}

/// The certificates of a PEM file (every `CERTIFICATE` block).
fn pem_certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{e:?}"))
}

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = Connect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
        // tokio-postgres asks for a connector for every host before it looks at the SSL mode,
        // so a plain connector (sslmode=disable) must not fail here: it fails only if a
        // handshake were ever attempted, which `apply` rules out.
        Ok(Connect {
            config: self.tls.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One connection's TLS handshake.
pub struct Connect {
    config: Option<Arc<ClientConfig>>,
    domain: String,
}

impl<S> TlsConnect<S> for Connect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS requested on a plain PostgreSQL connector"))?;
            let name = ServerName::try_from(self.domain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            connector.connect(name, stream).await.map(Stream)
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        // SCRAM channel binding (tls-server-end-point) is not offered; the certificate and host
        // name are verified by rustls instead.
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
