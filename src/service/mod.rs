//! The service layer: what `run` serves besides the key tasks.
//!
//! Today it holds the local Bedrock [`proxy`]. Per issue 14 it will also take the
//! rest of the long-running service (`serve`, signals, watches, the health endpoint
//! and systemd notifications) out of the CLI; until then those stay where they are.

pub mod proxy;
