//! Fetching a JWKS document from a URL (`ULTRACORE_JWKS_URL`): one HTTP/1.1 GET on hyper's
//! client connection (hyper is already in the tree through axum; no client crate), with a
//! time limit and a size limit. [`super::jwt::JwtKeys`] calls it at start and again when a
//! token names a key it does not know, at most once per refresh interval.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{ACCEPT, HOST};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Largest JWKS document accepted (bytes).
pub const JWKS_BYTES_MAX: usize = 1024 * 1024;
/// Longest a fetch may take, connection included.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the JWKS is: `http://host[:port]/path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksUrl {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port (80 when not given).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    /// The `Host` header value: `host[:port]` as written.
    authority: String,
}

impl std::str::FromStr for JwksUrl {
    type Err = String;
    fn from_str(url: &str) -> Result<JwksUrl, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some(("https", _)) => {
                return Err(
                    "https JWKS URLs are not supported yet; use http to a trusted local proxy or the JWKS file"
                        .into(),
                )
            }
            _ => return Err(format!("{url:?} is not an http:// URL")),
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
            None => 80,
            Some(p) => p.parse().map_err(|_| format!("{url:?} has a bad port"))?,
        };
        Ok(JwksUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for JwksUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// GETs the JWKS document at `url` (status 200, at most [`JWKS_BYTES_MAX`] bytes, within
/// [`JWKS_FETCH_TIMEOUT`]).
pub async fn fetch(url: &JwksUrl) -> Result<String, String> {
    tokio::time::timeout(JWKS_FETCH_TIMEOUT, get(url))
        .await
        .map_err(|_| format!("JWKS {url}: no answer within {JWKS_FETCH_TIMEOUT:?}"))?
}

async fn get(url: &JwksUrl) -> Result<String, String> {
    let err = |what: &str, e: &dyn std::fmt::Display| format!("JWKS {url}: {what}: {e}");
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| err("connect", &e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
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
    fn urls_parse_and_https_is_refused_for_now() {
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
        for bad in [
            "https://idp/jwks",
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
