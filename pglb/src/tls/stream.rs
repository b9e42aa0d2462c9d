//! A session's connection to a client or a server: plain TCP, or TLS that
//! pglb ends (client) or begins (server). Plain TCP is what almost every
//! byte goes through, so that arm costs one `match` over `TcpStream`.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

pub enum Stream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and most sessions have none.
    Tls(Box<SslStream<TcpStream>>),
    /// Only while a plain stream becomes a TLS one (or after that failed
    /// before the stream could be kept): reads and writes fail.
    Detached,
}

impl Stream {
    /// The TCP connection underneath.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref()),
            Stream::Detached => None,
        }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().ok_or_else(detached)?.local_addr()
    }

    /// Takes the TCP connection out to wrap it (leaves `Detached`).
    pub(super) fn take_plain(&mut self) -> Option<TcpStream> {
        match std::mem::replace(self, Stream::Detached) {
            Stream::Plain(s) => Some(s),
            other => {
                *self = other;
                None
            }
        }
    }

    /// The TLS session, when there is one.
    pub fn ssl(&self) -> Option<&openssl::ssl::SslRef> {
        match self {
            Stream::Tls(s) => Some(s.ssl()),
            _ => None,
        }
    }

    /// Forwards a half-close: a FIN on plain TCP (at once); on TLS a
    /// close_notify, then the FIN, which waits while the socket cannot take
    /// the alert. Errors count as done: the peer is gone.
    pub fn poll_half_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self {
            Stream::Plain(s) => {
                let _ = socket2::SockRef::from(&*s).shutdown(Shutdown::Write);
                Poll::Ready(())
            }
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx).map(|_| ()),
            Stream::Detached => Poll::Ready(()),
        }
    }

    /// Reads and discards what has arrived (raw bytes, TLS or not), so a
    /// close does not turn into a reset.
    pub fn discard_pending(&self) {
        if let Some(tcp) = self.tcp() {
            let mut sink = [0u8; 512];
            while matches!(tcp.try_read(&mut sink), Ok(n) if n > 0) {}
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(s) => f.debug_tuple("Tls").field(s.get_ref()).finish(),
            Stream::Detached => f.write_str("Detached"),
        }
    }
}

fn detached() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the connection was lost while TLS was being set up")
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
            Stream::Detached => Poll::Ready(Err(detached())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
            Stream::Detached => Poll::Ready(Ok(())),
        }
    }
}
