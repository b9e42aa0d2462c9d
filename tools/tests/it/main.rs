//! pglb's integration tests: one binary, against real PostgreSQL servers
//! that the lab starts (a primary and streaming replicas on loopback).

mod argo;
mod common;
mod config_cli;
mod conformance;
mod demo;
mod deploy;
mod dns;
mod drain;
mod failover;
mod faults;
mod health;
mod healthd;
mod lab;
mod observe;
mod proxy;
mod reload;
mod routing;
mod scenario;
mod shutdown;
mod tls;
