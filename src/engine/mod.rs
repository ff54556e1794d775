//! Replication engine.
