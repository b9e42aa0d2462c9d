//! pglb: a PostgreSQL-aware layer-4 load balancer that reads HAProxy's
//! configuration language.

pub mod admin;
pub mod balance;
pub mod cli;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod health;
pub mod healthd;
#[cfg(test)]
mod layering;
pub mod os;
pub mod pg;
pub mod proxy;
pub mod run;
pub mod state;
pub mod stats;
pub mod syslog;
pub mod tls;
