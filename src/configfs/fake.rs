//! A plain directory that behaves like LIO's configfs for tests and demos.
