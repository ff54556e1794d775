//! The WBEM server: CIM operations over HTTP(S) in CIM-XML (DMTF DSP0200 and DSP0201), so
//! that WBEM and SMI-S clients call AttachReplica as the method page defines it.
//!
//! - [`xml`]: the CIM-XML codec, knowing nothing of the classes;
//! - [`classes`]: the classes served, `LIO_` subclasses of the DMTF ones;
//! - [`provider`]: the operations, answered from the same [`Service`] as JSON-RPC;
//! - [`http`]: HTTP/1.1 over TCP or TLS, authentication and limits;
//! - [`users`]: the accounts file.

pub mod classes;
pub mod http;
pub mod provider;
pub mod users;
pub mod xml;

#[cfg(test)]
mod tests;

use crate::service::Service;
use anyhow::{bail, Context};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;

/// How `serve` runs the CIM server; off unless a listen address is given.
#[derive(Debug, Clone, Default)]
pub struct WbemOptions {
    /// Plain HTTP: loopback addresses only.
    pub listen: Option<SocketAddr>,
    /// HTTPS.
    pub tls_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub users: PathBuf,
}

impl WbemOptions {
    pub fn enabled(&self) -> bool {
        self.listen.is_some() || self.tls_listen.is_some()
    }
}

/// The host name the CIM instances carry (ComputerSystem.Name, the HOST of paths).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Checks the options and binds every socket before anything is served, so that a mistake
/// stops `serve` at once with a clear message.
pub fn bind(opts: &WbemOptions) -> anyhow::Result<Vec<http::Listener>> {
    let mut out = Vec::new();
    if let Some(addr) = opts.listen {
        if !addr.ip().is_loopback() {
            bail!(
                "--cim-listen {addr}: plain HTTP is accepted on loopback addresses only \
                 (credentials would cross the network in clear); use --cim-tls-listen"
            );
        }
        let socket = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        out.push(http::Listener { socket, tls: None });
    }
    if let Some(addr) = opts.tls_listen {
        let (Some(cert), Some(key)) = (&opts.tls_cert, &opts.tls_key) else {
            bail!("--cim-tls-listen needs --tls-cert and --tls-key");
        };
        let tls = http::tls_config(cert, key)?;
        let socket = TcpListener::bind(addr).with_context(|| format!("listening on {addr}"))?;
        out.push(http::Listener {
            socket,
            tls: Some(tls),
        });
    } else if opts.tls_cert.is_some() || opts.tls_key.is_some() {
        bail!("--tls-cert and --tls-key are for --cim-tls-listen");
    }
    Ok(out)
}

/// Starts serving `service` on the bound `listeners`.
pub fn start(
    listeners: Vec<http::Listener>,
    service: Arc<dyn Service>,
    opts: &WbemOptions,
) -> anyhow::Result<http::Server> {
    let users = users::Users::new(opts.users.clone());
    if let Err(e) = users.version() {
        // not fatal: accounts can be added while the daemon runs
        tracing::warn!(error = %e, "the CIM server has no usable accounts yet; every login fails");
    }
    let provider = provider::Provider::new(service, host_name());
    Ok(http::Server::start(
        listeners,
        provider,
        users,
        http::Limits::default(),
    )?)
}
