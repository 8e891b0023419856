//! Fetching a JWKS document from a URL (`ULTRACORE_JWKS_URL`): one HTTP/1.1 GET on hyper's
//! client connection (hyper is already in the tree through axum; no client crate), over TLS
//! for `https://` (rustls with ring, as the listeners; the provider's certificate is checked
//! against Mozilla's roots from `webpki-roots`, or only against `ULTRACORE_JWKS_CA_FILE` when
//! set), with a time limit and a size limit. [`super::jwt::JwtKeys`] calls it at start and
//! again when a token names a key it does not know, at most once per refresh interval.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{crypto, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Largest JWKS document accepted (bytes).
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;
/// Longest a fetch may take, connection included.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the JWKS is: `http(s)://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUrl {
    /// `https://`.
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (80 or 443 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header value: `host[:port]` as written.
    authority: String,
}

impl std::str::FromStr for JwksUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<JwksUrl, String> {
        let (tls, rest) = match url.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed [ in the URL's host")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} has no usable host"));
        }
        let port = match port {
            None if tls => 443,
            None => 80,
            Some(p) => p.parse().map_err(|_| format!("{url:?} has a bad port"))?,
        };
        Ok(JwksUrl {
            tls,
            host: host.to_string(),
            port,
            path: path.to_string(),
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

/// A JWKS URL and, for `https://`, the TLS client that checks its certificate.
#[derive(Clone)]
pub struct JwksClient {
    /// The URL.
    pub url: JwksUrl,
    tls: Option<TlsConnector>,
}

impl JwksClient {
    /// A client for `url`. An `https://` URL's certificate must chain to `ca_file` (PEM) when
    /// given, and to Mozilla's roots (`webpki-roots`) otherwise.
    pub fn new(url: JwksUrl, ca_file: Option<&Path>) -> Result<JwksClient, String> {
        if !url.tls {
            return Ok(JwksClient { url, tls: None });
        }
        let mut roots = RootCertStore::empty();
        match ca_file {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(path) => {
                let bad =
                    |e: &dyn std::fmt::Display| format!("JWKS CA file {}: {e}", path.display());
                let pem = std::fs::read(path).map_err(|e| bad(&e))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                }
                if roots.is_empty() {
                    return Err(bad(&"no certificate"));
                }
            }
        }
        let mut config =
            ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("JWKS TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(JwksClient {
            url,
            tls: Some(TlsConnector::from(Arc::new(config))),
        })
    }

    /// GETs the JWKS document (status 200, at most [`JWKS_BYTES_MAX`] bytes, within
    /// [`JWKS_FETCH_TIMEOUT`]).
    pub async fn fetch(&self) -> Result<String, String> {
        let url = &self.url;
        tokio::time::timeout(JWKS_FETCH_TIMEOUT, self.connect_and_get())
            .await
            .map_err(|_| format!("JWKS {url}: no answer within {JWKS_FETCH_TIMEOUT:?}"))?
    }

    async fn connect_and_get(&self) -> Result<String, String> {
        let url = &self.url;
        let tcp = TcpStream::connect((url.host.as_str(), url.port))
            .await
            .map_err(|e| format!("JWKS {url}: connect: {e}"))?;
        match &self.tls {
            None => get(url, tcp).await,
            Some(connector) => {
                let name = ServerName::try_from(url.host.clone())
                    .map_err(|e| format!("JWKS {url}: host name: {e}"))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("JWKS {url}: TLS: {e}"))?;
                get(url, tls).await
            }
        }
    }
}

async fn get<IO>(url: &JwksUrl, io: IO) -> Result<String, String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let err = |what: &str, e: &dyn std::fmt::Display| format!("JWKS {url}: {what}: {e}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| err("handshake", &e))?;
    // The connection task ends when the response is read and `sender` is dropped.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::get(url.path.as_str())
        .header(HOST, url.authority.as_str())
        .header(ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| err("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| err("request", &e))?;
    if response.status() != hyper::StatusCode::OK {
        return Err(format!("JWKS {url}: status {}", response.status()));
    }
    let body = Limited::new(response.into_body(), JWKS_BYTES_MAX)
        .collect()
        .await
        .map_err(|e| err("body", &e))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| err("body", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let u: JwksUrl = "http://127.0.0.1:8080/.well-known/jwks.json"
            .parse()
            .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8080));
        assert_eq!(u.path, "/.well-known/jwks.json");
        assert_eq!(u.to_string(), "http://127.0.0.1:8080/.well-known/jwks.json");
        let u: JwksUrl = "http://idp.internal".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("idp.internal", 80, "/")
        );
        let u: JwksUrl = "http://[::1]:9/k".parse().unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9));
        let u: JwksUrl = "https://idp.example/keys".parse().unwrap();
        assert!(u.tls);
        assert_eq!(
            (u.port, u.to_string().as_str()),
            (443, "https://idp.example/keys")
        );
        for bad in [
            "ftp://x/",
            "idp/jwks",
            "http://:80/",
            "http://h:x/",
            "http://u@h/",
        ] {
            assert!(bad.parse::<JwksUrl>().is_err(), "{bad}");
        }
    }
}
