//! pglb's tooling: a local PostgreSQL primary + streaming replicas
//! ([`lab`]), the operators' scenarios run against it ([`scenario`]), the
//! benchmark ([`bench`]), and their commands ([`cli`]). It depends on the
//! product crate (`pglb`), never the other way round; the integration tests
//! under `tests/` use both.

pub mod bench;
pub mod cli;
pub mod lab;
pub mod scenario;
