//! Failing politely: a client pglb cannot serve gets a PostgreSQL
//! ErrorResponse (FATAL) that psql prints, instead of a closed socket.

use super::session::read_first_after_no;
use crate::pg::{self, startup::FirstPacket};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Longest pglb spends on one refusal.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `first` so that the client reads `message`: an SSLRequest or
/// GSSENCRequest is declined with 'N' and the StartupMessage that follows
/// is read (bounded) before the ErrorResponse is sent. `rest` is what the
/// client sent after `first` without waiting for an answer (already read).
pub async fn refuse(client: &mut TcpStream, first: &FirstPacket, rest: &[u8], code: &str, message: &str, limit: Duration) {
    let limit = limit.min(REFUSE_TIMEOUT);
    let work = async {
        let mut current = first.clone();
        let mut rest = rest.to_vec();
        // At most GSSENCRequest then SSLRequest then StartupMessage.
        for _ in 0..3 {
            match current {
                FirstPacket::SslRequest | FirstPacket::GssEncRequest => {
                    client.write_all(b"N").await?;
                    match read_first_after_no(client, limit, &rest).await {
                        Some((next, after)) => (current, rest) = (next, after),
                        None => return Ok(()),
                    }
                }
                _ => break,
            }
        }
        client.write_all(&pg::fatal(code, message, None, None)).await?;
        client.flush().await?;
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(limit, work).await;
}
