//! # als-net
//!
//! The network plumbing every long-running program of the project shares,
//! in one place so each rule is written once: how a listen address is
//! written ([`listen`]), when a server stops ([`shutdown`]), and how TLS
//! settings are read from PEM files ([`tls`]). The cluster token's rule
//! lives with the protocol (`als_proto::token`), since it is part of it.

#![forbid(unsafe_code)]

pub mod listen;
pub mod shutdown;
pub mod tls;
