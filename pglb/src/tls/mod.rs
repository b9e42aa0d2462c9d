//! TLS that pglb ends or begins itself: `bind ... ssl crt FILE` terminates
//! the client's TLS, `server ... ssl` encrypts to the server.
//!
//! PostgreSQL does not start TLS with a ClientHello: the client sends an
//! SSLRequest and the server answers `S` (or `N`); only PostgreSQL 17's
//! direct TLS starts with a ClientHello, and then ALPN must say
//! `postgresql`. So this module has the two negotiations as well as the
//! contexts (`context`, read from the configuration's files) and the stream
//! a session reads and writes whichever way it is encrypted (`stream`).
//! Without `ssl` on the bind pglb passes the client's TLS through untouched,
//! as before: none of this runs.

pub mod context;
mod negotiate;
pub mod stream;

pub use context::{Acceptor, Connector, TlsError, Verify};
pub use negotiate::{HandshakeError, accept, connect, starts_with_client_hello};
pub use stream::Stream;

/// The ALPN protocol id PostgreSQL registered (wire form: length first).
pub const ALPN_POSTGRESQL: &[u8] = b"\x0apostgresql";
