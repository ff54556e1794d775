//! The local API: JSON-RPC 2.0 over a Unix stream socket, one JSON object per line.
//!
//! Method names follow the CIM ones. CIM outcomes (return values 0-6 and 4096) are results
//! carrying `ReturnValue` and `Description`; JSON-RPC errors are kept for malformed requests,
//! unknown methods, bad parameters, unknown job ids and internal failures. See [`protocol`]
//! for the method table, [`server`] for the daemon side and [`client`] for the caller side.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{Client, RpcError};
pub use server::{
    bind_socket, RunningServer, Server, ServerError, ServerOptions, ShutdownHandle, SocketFile,
};

/// Where `lio-replica serve` listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/lio-replica/lio-replica.sock";
