//! A simulated device-mapper for tests and demos.

/// In-memory devices and tables.
pub struct SimDm;
