//! The tooling's commands, beside the product's ([`pglb::cli`]): `lab`
//! (and its scenarios), `demo` and `bench`.

pub mod bench;
pub mod demo;
pub mod lab;
