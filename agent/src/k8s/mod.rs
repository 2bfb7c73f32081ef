//! Kubernetes: which pod a traced process belongs to, what to call it, and whether to trace it.
//!
//! ```text
//! API server ──watch (this node's pods, namespaces)──► store ──► enrich: pid → container → pod
//!                                                        │        → k8s.* + service.name
//!                                                        └─► toggle: annotations → traced
//!                                                             cgroup ids → kernel filter map
//! ```
//!
//! `cgroup_path` and `model` are pure; `watch` is the only code that talks to the API server.

pub mod cgroup_path;
pub mod enrich;
pub mod model;
pub mod store;
pub mod toggle;
pub mod watch;

use std::path::PathBuf;

pub use model::{DefaultPolicy, TogglePolicy};

/// What `sonde run --kubernetes` needs, resolved from file, environment and flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubePlan {
    /// This node's name (`spec.nodeName`, from the downward API).
    pub node: String,
    pub cluster: Option<String>,
    pub policy: TogglePolicy,
    /// None: in-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The cgroup v2 root the container cgroups are found under.
    pub cgroup_root: PathBuf,
    pub limits: store::StoreLimits,
}
