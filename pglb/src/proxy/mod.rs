//! The PostgreSQL-aware TCP proxy: listeners, sessions, the relay, and the
//! few places where it speaks PostgreSQL (first packet, polite refusals,
//! cancel routing).

pub mod cancel;
pub mod connect;
mod handshake;
pub mod listener;
pub mod log;
mod reject;
pub mod relay;
pub mod session;
pub mod sniff;
pub mod track;
pub mod workers;
