//! What leaves the node, and how: the exporters of the span model ([`span`], the `sonde-model`
//! crate, re-exported here).
//!
//! The pipeline hands finished spans to a [`batch::SpanQueue`] that never blocks it; a worker
//! turns them into OTLP ([`otlp`]) and sends them over gRPC or HTTP ([`transport`]), retrying
//! what the OTLP spec calls retryable ([`retry`]), or writes them as text ([`console`],
//! [`jsonl`]). Every span that enters is accounted for in [`stats`], which the agent exposes
//! with [`metrics_http`] and [`prom`].

pub mod batch;
pub mod config;
pub mod console;
pub(crate) mod http_serve;
pub mod jsonl;
pub mod metrics;
pub mod metrics_http;
pub mod otlp;
pub mod prom;
pub mod retry;
pub mod stats;
pub mod transport;
pub mod ui;
pub mod wire;

pub use sonde_model as span;
