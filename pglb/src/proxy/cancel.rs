//! CancelRequest routing. A CancelRequest arrives on a new connection and
//! names a backend session by (pid, secret); it must reach the server that
//! runs that session. pglb learns each session's key from the server's
//! BackendKeyData during the (unencrypted) startup; when the key is unknown
//! (TLS sessions, or a session opened through another pglb instance) the
//! cancel goes to every usable server of the backend: PostgreSQL ignores a
//! cancel whose pid/secret does not match, so that is harmless.

use crate::pg::startup::CancelKey;
use crate::state::BackendState;
use crate::state::cancel::CancelRegistry;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest pglb spends delivering one cancel to one server.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a cancel was delivered, for the connection log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Routed,
    Broadcast,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Routed => "routed",
            Delivery::Broadcast => "broadcast",
        }
    }
}

/// Delivers `packet` (the client's 16-byte CancelRequest) to the server
/// that holds `key`, or to every usable server of `backend`.
pub async fn deliver(registry: &CancelRegistry, key: CancelKey, packet: &[u8], backend: Option<&BackendState>) -> Delivery {
    if let Some(addr) = registry.lookup(&key) {
        registry.routed.fetch_add(1, Relaxed);
        send(addr, packet.to_vec()).await;
        return Delivery::Routed;
    }
    registry.broadcast.fetch_add(1, Relaxed);
    if let Some(be) = backend {
        // Every server with an address, not only the routable tier: the
        // session may be on a backup or on a server now draining.
        let targets: Vec<SocketAddr> = be.servers.iter().filter_map(|s| s.addr()).collect();
        let handles: Vec<_> = targets.into_iter().map(|addr| tokio::spawn(send(addr, packet.to_vec()))).collect();
        for handle in handles {
            let _ = handle.await;
        }
    }
    Delivery::Broadcast
}

async fn send(addr: SocketAddr, packet: Vec<u8>) {
    let attempt = async move {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(&packet).await?;
        s.shutdown().await?;
        // Wait for the server to close: it does once it has read the request.
        let mut buf = [0u8; 1];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(CANCEL_TIMEOUT, attempt).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "cancel request not delivered"),
        Err(_) => tracing::debug!(%addr, "cancel request timed out"),
    }
}
