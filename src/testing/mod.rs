//! Test support shared by the unit tests, the integration tests and the benches: a real engine
//! on a fake configfs tree and the simulated device-mapper ([`world`]), a mock [`Service`]
//! with canned answers and a server running it on a temporary socket ([`mock`]), a client
//! speaking raw lines to the API socket ([`raw`]), and a CIM-XML client ([`cim`]).
//!
//! Compiled for the crate's own tests, and with the `testing` feature, which the integration
//! tests and benches enable through the crate's dev-dependency on itself; a normal build
//! leaves it out.
//!
//! [`Service`]: crate::service::Service

pub mod cim;
pub mod mock;
pub mod raw;
pub mod world;

pub use mock::{Mock, TestServer, BAD_JOB_ERROR, FAIL_JOB_ERROR};
pub use raw::{error_code, Raw};
pub use world::{fast_options, Guard, World, WorldBuilder, MB};

/// Make `path` a sparse file of `bytes` bytes: a disk image that takes no space.
pub fn sparse_file(path: &std::path::Path, bytes: u64) -> std::io::Result<()> {
    std::fs::File::create(path)?.set_len(bytes)
}
