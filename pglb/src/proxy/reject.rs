//! Failing politely: a client pglb cannot serve gets a PostgreSQL
//! ErrorResponse (FATAL) that psql prints, instead of a closed socket,
//! worded so that programs retry it.
//!
//! Drivers and pools retry what looks like a network failure and give up
//! on what looks like an answer from the database. Argo Workflows (lib/pq)
//! reconnects only when the error text contains phrases such as
//! "connection closed" or "connection refused"; no SQLSTATE counts. So
//! every refusal ends with [`RETRY_HINT`]: true (pglb closes the
//! connection), readable, and retried.

use super::session::read_first_after_no;
use crate::pg::{self, startup::FirstPacket};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Ends every refusal's message (see the module's doc).
pub const RETRY_HINT: &str = "connection closed, try again";

/// Longest pglb spends on one refusal.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `first` so that the client reads `message`: a GSSENCRequest is
/// declined with 'N' and what follows is read (bounded) before the
/// ErrorResponse is sent. An SSLRequest is not answered at all: the
/// connection is closed. A client that requires TLS would read 'N' as "SSL
/// is not enabled on the server", which is untrue and which no driver
/// retries, and lib/pq reads no ErrorResponse there; a close is retried by
/// drivers and pools, and libpq's `sslmode=prefer` reconnects without TLS
/// and then reads the message. `rest` is what the client sent after
/// `first` without waiting for an answer (already read).
pub async fn refuse(client: &mut crate::tls::Stream, first: &FirstPacket, rest: &[u8], code: &str, message: &str, limit: Duration) {
    let limit = limit.min(REFUSE_TIMEOUT);
    let work = async {
        let mut current = first.clone();
        let mut rest = rest.to_vec();
        // At most GSSENCRequest then SSLRequest then StartupMessage.
        for _ in 0..3 {
            match current {
                FirstPacket::SslRequest => return Ok(()),
                FirstPacket::GssEncRequest => {
                    client.write_all(b"N").await?;
                    match read_first_after_no(client, limit, &rest).await {
                        Some((next, after)) => (current, rest) = (next, after),
                        None => return Ok(()),
                    }
                }
                _ => break,
            }
        }
        client.write_all(&pg::fatal(code, &format!("{message}; {RETRY_HINT}"), None, None)).await?;
        client.flush().await?;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(limit, work).await;
}
