//! # als-net
//!
//! The network plumbing every long-running program of the project shares,
//! in one place so each rule is written once: how a listen address is
//! written ([`listen`]), when a server stops ([`shutdown`]), and how TLS
//! settings are read from PEM files ([`tls`]), and how one program of the
//! cluster calls a worker, over the network or in this process ([`client`],
//! [`transport`]): the coordinator calls its workers, and workers their peers. The cluster token's rule
//! lives with the protocol (`als_proto::token`), since it is part of it.

#![forbid(unsafe_code)]

pub mod client;
pub mod listen;
pub mod shutdown;
pub mod tls;
pub mod transport;
