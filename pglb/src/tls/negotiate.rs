//! PostgreSQL's two ways into TLS, on either side: an SSLRequest answered
//! `S`, then a handshake; or (PostgreSQL 17) a ClientHello first, with ALPN
//! `postgresql`.

use super::stream::Stream;
use super::{Acceptor, Connector};
use std::pin::Pin;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_openssl::SslStream;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("direct TLS without ALPN 'postgresql' (PostgreSQL 17 refuses it too)")]
    NoAlpn,
    #[error("the server does not accept TLS (it answered the SSLRequest with {0:?})")]
    Refused(char),
    #[error("the server closed the connection during TLS negotiation: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS setup failed: {0}")]
    Setup(#[from] openssl::error::ErrorStack),
}

/// Whether the client's first byte starts a TLS handshake record (direct
/// TLS) rather than a PostgreSQL packet, whose length's first byte is 0.
/// Peeks; waits at most `limit` for the byte. `None`: nothing came in time.
pub async fn starts_with_client_hello(stream: &Stream, limit: Duration) -> Option<bool> {
    let tcp = stream.tcp()?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(limit, tcp.peek(&mut b)).await {
        Err(_) => None,
        Ok(Ok(1)) => Some(b[0] == 0x16),
        // Closed or failed: reading the first packet says how.
        Ok(_) => Some(false),
    }
}

/// Terminates the client's TLS on `stream` (plain until now). `direct`: the
/// client began with a ClientHello, so it must have chosen ALPN
/// `postgresql`. The stream stays TLS (or detached) even when the handshake
/// fails: the session then ends.
pub async fn accept(stream: &mut Stream, acceptor: &Acceptor, direct: bool) -> Result<(), HandshakeError> {
    let Some(tcp) = stream.take_plain() else { return Err(HandshakeError::Handshake("the connection is not plain TCP".into())) };
    let mut tls = SslStream::new(acceptor.ssl()?, tcp)?;
    let result = Pin::new(&mut tls).accept().await;
    let alpn = tls.ssl().selected_alpn_protocol().is_some();
    *stream = Stream::Tls(Box::new(tls));
    result.map_err(|e| HandshakeError::Handshake(describe(&e)))?;
    if direct && !alpn {
        return Err(HandshakeError::NoAlpn);
    }
    Ok(())
}

/// Encrypts `stream` (a new server connection) as the server line says:
/// SSLRequest, `S`, handshake with certificate checks.
pub async fn connect(stream: &mut Stream, connector: &Connector) -> Result<(), HandshakeError> {
    stream.write_all(&crate::pg::SSL_REQUEST_PACKET).await?;
    let mut answer = [0u8; 1];
    stream.read_exact(&mut answer).await?;
    if answer[0] != b'S' {
        return Err(HandshakeError::Refused(answer[0] as char));
    }
    let Some(tcp) = stream.take_plain() else { return Err(HandshakeError::Handshake("the connection is not plain TCP".into())) };
    let mut tls = SslStream::new(connector.ssl()?, tcp)?;
    let result = Pin::new(&mut tls).connect().await;
    let verdict = tls.ssl().verify_result();
    *stream = Stream::Tls(Box::new(tls));
    result.map_err(|e| match verdict {
        openssl::x509::X509VerifyResult::OK => HandshakeError::Handshake(describe(&e)),
        v => HandshakeError::Handshake(format!("{} ({})", describe(&e), v.error_string())),
    })
}

/// OpenSSL's reason, with the certificate check's verdict when that failed.
fn describe(e: &openssl::ssl::Error) -> String {
    match e.ssl_error() {
        Some(stack) => stack.errors().iter().map(|e| e.reason().unwrap_or("unknown reason").to_string()).collect::<Vec<_>>().join("; "),
        None => e.to_string(),
    }
}
