//! A minimal HTTP/1.1 client for the admin listener tests: plain TCP or TLS 1.3 with an
//! optional client certificate (hyper's client connection, one request per connection).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use http_body_util::BodyExt;
use qwire::transport::certs::{load_certs, Identity};

/// How to reach the listener.
#[derive(Clone)]
pub enum Via {
    /// Plain HTTP.
    Plain,
    /// HTTPS trusting the dev CA, presenting this client certificate (or none).
    Tls(Arc<rustls::ClientConfig>),
}

impl Via {
    /// HTTPS from a `qwire certs` directory, as client `name` (`None`: no certificate).
    pub fn tls(certs: &Path, name: Option<&str>) -> Via {
        let ca = load_certs(&certs.join("ca.crt")).unwrap();
        let id = name.map(|n| Identity::load(certs, n).unwrap());
        let mut cfg = qwire::transport::tls::client_tls(id.as_ref(), &ca).unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Via::Tls(Arc::new(cfg))
    }
}

/// A response: status and body text.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// `GET path`. Errors (refused handshake, closed connection) come back as text.
pub async fn get(addr: SocketAddr, path: &str, via: &Via) -> Result<Reply, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    match via {
        Via::Plain => request(hyper_util::rt::TokioIo::new(tcp), path).await,
        Via::Tls(cfg) => {
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            request(hyper_util::rt::TokioIo::new(tls), path).await
        }
    }
}

async fn request<I>(io: I, path: &str) -> Result<Reply, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path).header("host", "localhost").body(http_body_util::Empty::new()).unwrap();
    let resp = send.send_request(req).await.map_err(|e| format!("request: {e:?}"))?;
    let status = resp.status().as_u16();
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Reply { status, content_type, body: String::from_utf8_lossy(&body).into_owned() })
}
