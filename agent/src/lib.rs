//! sonde: a zero-code distributed-tracing agent.
//!
//! Pipeline stages, one module each (see `docs/` and DESIGN.md): `probes` (kernel programs),
//! `events` (typed kernel records), `conn` (per-connection reassembly), then protocol parsing,
//! spans and export. `capture` runs the live pipeline; `cli` is the command line.

pub mod alloc;
pub mod capture;
pub mod cgroup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod conn;
pub mod context;
pub mod debug_view;
pub mod doctor;
pub mod elfread;
pub mod enrich;
pub mod events;
pub mod k8s;
pub mod pipeline;
pub mod privacy;
pub mod probes;
pub mod procfs;
pub mod replay;
pub mod sampling;
pub mod span;
pub mod telemetry;
pub mod tls;
