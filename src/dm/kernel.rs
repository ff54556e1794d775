//! The kernel backend: device-mapper ioctls through the `devicemapper` crate.

/// Talks to /dev/mapper/control.
pub struct KernelDm;
