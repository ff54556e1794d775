//! lio-replica: the CIM `AttachReplica` method for Linux LIO targets, built from configfs and
//! device-mapper.
//!
//! Layers, each testable on its own: [`configfs`] (root injectable) -> [`dm`] (a trait with the
//! kernel backend and a simulated one) -> [`engine`] (one module per copy type) -> [`jobs`] ->
//! [`api`] (JSON-RPC over a Unix socket) and [`wbem`] (CIM-XML over HTTPS) -> the CLI in the
//! binary.

pub mod api;
pub mod cim;
pub mod cli;
pub mod configfs;
pub mod dm;
pub mod engine;
pub mod error;
pub mod jobs;
pub mod names;
mod par;
pub mod service;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wbem;

pub use error::{Error, Result, ReturnCode};
