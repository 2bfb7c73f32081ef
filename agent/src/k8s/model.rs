//! Pod and namespace metadata as sonde keeps it, and the pure decisions made from it: the
//! workload a pod belongs to, its `service.name`, and whether it is traced (and why).
//!
//! Only the labels and annotations sonde reads are kept, so a pod costs a few hundred bytes
//! whatever its manifest holds.

use std::{collections::BTreeMap, fmt};

use serde::Serialize;

/// The annotation that turns tracing on or off, on a namespace or a pod (the pod wins).
pub const TRACING_ANNOTATION: &str = "sonde.dev/tracing";
/// The OpenTelemetry operator's annotation for a pod's service name.
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// The recommended label naming the application.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label the Deployment controller puts on its ReplicaSets' pods.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";

/// Labels and annotations worth keeping; everything else is dropped when a pod is stored.
pub const KEPT_LABELS: &[&str] = &[APP_NAME_LABEL, POD_TEMPLATE_HASH_LABEL];
pub const KEPT_ANNOTATIONS: &[&str] = &[TRACING_ANNOTATION, SERVICE_NAME_ANNOTATION];

/// The controller that owns a pod, from `metadata.ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
}

/// One container of a pod, from its status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerMeta {
    pub name: String,
    /// 64 hex digits (the runtime prefix stripped); `None` until the container started.
    pub id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The controlling owner (`controller: true`), else the first owner.
    pub owner: Option<OwnerRef>,
    pub containers: Vec<ContainerMeta>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NamespaceMeta {
    pub name: String,
    /// The value of [`TRACING_ANNOTATION`], if set.
    pub tracing: Option<String>,
}

/// Kinds of workload, as OpenTelemetry names their resource attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
}

impl WorkloadKind {
    /// The resource attribute naming a workload of this kind.
    pub fn attribute(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "k8s.deployment.name",
            WorkloadKind::ReplicaSet => "k8s.replicaset.name",
            WorkloadKind::StatefulSet => "k8s.statefulset.name",
            WorkloadKind::DaemonSet => "k8s.daemonset.name",
            WorkloadKind::Job => "k8s.job.name",
            WorkloadKind::CronJob => "k8s.cronjob.name",
        }
    }
}

/// The workloads a pod belongs to, outermost first: a Deployment and its ReplicaSet, a CronJob
/// and its Job, or one StatefulSet, DaemonSet, Job or ReplicaSet.
pub type Workloads = Vec<(WorkloadKind, String)>;

/// The characters the Kubernetes name generator uses for hashes (`rand.SafeEncodeString`).
fn is_safe_hash(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
}

/// Derives the workload from the owner reference and names alone (sonde watches no
/// ReplicaSets or Jobs): a ReplicaSet named `<deployment>-<pod-template-hash>` belongs to that
/// Deployment; a Job named `<cronjob>-<minutes since the epoch>` to that CronJob.
pub fn workloads(pod: &PodMeta) -> Workloads {
    let Some(owner) = &pod.owner else {
        return Vec::new();
    };
    let name = owner.name.clone();
    match owner.kind.as_str() {
        "ReplicaSet" => {
            let deployment = match pod.labels.get(POD_TEMPLATE_HASH_LABEL) {
                Some(hash) => name.strip_suffix(&format!("-{hash}")).map(str::to_owned),
                None => name
                    .rsplit_once('-')
                    .filter(|(d, h)| {
                        !d.is_empty() && (5..=10).contains(&h.len()) && is_safe_hash(h)
                    })
                    .map(|(d, _)| d.to_owned()),
            };
            match deployment {
                Some(d) if !d.is_empty() => vec![
                    (WorkloadKind::Deployment, d),
                    (WorkloadKind::ReplicaSet, name),
                ],
                _ => vec![(WorkloadKind::ReplicaSet, name)],
            }
        }
        "Job" => {
            // CronJob jobs are suffixed with the scheduled time in minutes (8+ digits today).
            let cronjob = name
                .rsplit_once('-')
                .filter(|(c, t)| {
                    !c.is_empty() && t.len() >= 8 && t.bytes().all(|b| b.is_ascii_digit())
                })
                .map(|(c, _)| c.to_owned());
            match cronjob {
                Some(c) => vec![(WorkloadKind::CronJob, c), (WorkloadKind::Job, name)],
                None => vec![(WorkloadKind::Job, name)],
            }
        }
        "StatefulSet" => vec![(WorkloadKind::StatefulSet, name)],
        "DaemonSet" => vec![(WorkloadKind::DaemonSet, name)],
        _ => Vec::new(),
    }
}

/// Where a span's `service.name` came from, in order of precedence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum ServiceNameSource {
    /// The process's own `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
    ProcessEnvironment,
    /// The pod annotation `resource.opentelemetry.io/service.name`.
    Annotation,
    /// The pod label `app.kubernetes.io/name`.
    Label,
    /// The name of the workload that owns the pod (Deployment, StatefulSet, ...).
    Workload,
    /// The container's name.
    Container,
}

/// `service.name` for a process in a container of `pod`. `process_env` is what the process's
/// own environment says, if anything.
pub fn service_name(
    process_env: Option<&str>,
    pod: &PodMeta,
    workloads: &Workloads,
    container: &str,
) -> (String, ServiceNameSource) {
    let non_empty = |s: Option<&String>| s.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if let Some(s) = process_env.map(str::trim).filter(|s| !s.is_empty()) {
        return (s.to_owned(), ServiceNameSource::ProcessEnvironment);
    }
    if let Some(s) = non_empty(pod.annotations.get(SERVICE_NAME_ANNOTATION)) {
        return (s, ServiceNameSource::Annotation);
    }
    if let Some(s) = non_empty(pod.labels.get(APP_NAME_LABEL)) {
        return (s, ServiceNameSource::Label);
    }
    if let Some((_, w)) = workloads.first() {
        return (w.clone(), ServiceNameSource::Workload);
    }
    (container.to_owned(), ServiceNameSource::Container)
}

/// What happens to pods whose namespace and pod carry no tracing annotation.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Trace every pod except those in `kube-system` and sonde's own namespace.
    #[default]
    AllExceptSystem,
    /// Trace only pods whose namespace or pod is annotated `sonde.dev/tracing: enabled`.
    OptIn,
}

impl fmt::Display for DefaultPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefaultPolicy::AllExceptSystem => "all-except-system",
            DefaultPolicy::OptIn => "opt-in",
        })
    }
}

/// The toggle policy: the default and the namespaces it leaves out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TogglePolicy {
    pub default: DefaultPolicy,
    /// Namespaces `all-except-system` does not trace (kube-system and sonde's own).
    pub system_namespaces: Vec<String>,
}

impl TogglePolicy {
    pub fn new(default: DefaultPolicy, own_namespace: Option<&str>) -> Self {
        let mut system_namespaces = vec!["kube-system".to_owned()];
        if let Some(ns) = own_namespace.filter(|n| !n.is_empty() && *n != "kube-system") {
            system_namespaces.push(ns.to_owned());
        }
        Self {
            default,
            system_namespaces,
        }
    }
}

/// Why a pod is traced or not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Reason {
    /// `sonde.dev/tracing` on the pod.
    PodAnnotation,
    /// `sonde.dev/tracing` on its namespace.
    NamespaceAnnotation,
    /// Neither is set: the default policy decided.
    DefaultPolicy { policy: String },
    /// Neither is set and the namespace is kube-system or sonde's own.
    SystemNamespace,
    /// The namespace is not known yet (its watch has not listed it): not traced until it is.
    NamespaceUnknown,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::PodAnnotation => write!(f, "pod annotation {TRACING_ANNOTATION}"),
            Reason::NamespaceAnnotation => write!(f, "namespace annotation {TRACING_ANNOTATION}"),
            Reason::DefaultPolicy { policy } => write!(f, "default policy {policy}"),
            Reason::SystemNamespace => {
                write!(f, "system namespace (default policy all-except-system)")
            }
            Reason::NamespaceUnknown => write!(f, "namespace not known yet"),
        }
    }
}

/// The toggle's verdict on one pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub traced: bool,
    #[serde(flatten)]
    pub reason: Reason,
    /// Annotation values that were neither `enabled` nor `disabled` and so were ignored.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

fn parse_toggle(v: &str) -> Option<bool> {
    match v.trim() {
        "enabled" => Some(true),
        "disabled" => Some(false),
        _ => None,
    }
}

/// Whether a pod is traced: its own annotation, else its namespace's, else the default.
/// `namespace` is `None` while the namespace is unknown.
pub fn resolve_toggle(
    pod: &PodMeta,
    namespace: Option<&NamespaceMeta>,
    policy: &TogglePolicy,
) -> Verdict {
    let mut ignored = Vec::new();
    if let Some(v) = pod.annotations.get(TRACING_ANNOTATION) {
        match parse_toggle(v) {
            Some(traced) => {
                return Verdict {
                    traced,
                    reason: Reason::PodAnnotation,
                    ignored,
                };
            }
            None => ignored.push(format!("pod {TRACING_ANNOTATION}={v:?}")),
        }
    }
    let Some(ns) = namespace else {
        return Verdict {
            traced: false,
            reason: Reason::NamespaceUnknown,
            ignored,
        };
    };
    if let Some(v) = &ns.tracing {
        match parse_toggle(v) {
            Some(traced) => {
                return Verdict {
                    traced,
                    reason: Reason::NamespaceAnnotation,
                    ignored,
                };
            }
            None => ignored.push(format!("namespace {TRACING_ANNOTATION}={v:?}")),
        }
    }
    let (traced, reason) = match policy.default {
        DefaultPolicy::OptIn => (
            false,
            Reason::DefaultPolicy {
                policy: policy.default.to_string(),
            },
        ),
        DefaultPolicy::AllExceptSystem if policy.system_namespaces.contains(&pod.namespace) => {
            (false, Reason::SystemNamespace)
        }
        DefaultPolicy::AllExceptSystem => (
            true,
            Reason::DefaultPolicy {
                policy: policy.default.to_string(),
            },
        ),
    };
    Verdict {
        traced,
        reason,
        ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn pod(ns: &str, name: &str) -> PodMeta {
        PodMeta {
            uid: "u1".into(),
            namespace: ns.into(),
            name: name.into(),
            node: Some("node-1".into()),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            owner: None,
            containers: vec![ContainerMeta {
                name: "app".into(),
                id: None,
            }],
        }
    }

    fn owned(kind: &str, name: &str) -> PodMeta {
        let mut p = pod("shop", "x");
        p.owner = Some(OwnerRef {
            kind: kind.into(),
            name: name.into(),
        });
        p
    }

    #[test]
    fn workloads_from_owners_and_names() {
        use WorkloadKind::*;
        let mut p = owned("ReplicaSet", "checkout-api-7d4b9c8f6d");
        p.labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "7d4b9c8f6d".into());
        assert_eq!(
            workloads(&p),
            vec![
                (Deployment, "checkout-api".into()),
                (ReplicaSet, "checkout-api-7d4b9c8f6d".into())
            ]
        );
        // Without the label: the hash alphabet decides.
        p.labels.clear();
        assert_eq!(workloads(&p)[0], (Deployment, "checkout-api".into()));
        assert_eq!(
            workloads(&owned("ReplicaSet", "legacy-rs-final")),
            vec![(ReplicaSet, "legacy-rs-final".into())]
        );
        // A label that does not match the name: a bare ReplicaSet.
        let mut p = owned("ReplicaSet", "web-abc");
        p.labels
            .insert(POD_TEMPLATE_HASH_LABEL.into(), "zzz".into());
        assert_eq!(workloads(&p), vec![(ReplicaSet, "web-abc".into())]);
        assert_eq!(
            workloads(&owned("Job", "nightly-backup-29120160")),
            vec![
                (CronJob, "nightly-backup".into()),
                (Job, "nightly-backup-29120160".into())
            ]
        );
        assert_eq!(
            workloads(&owned("Job", "migrate-v2")),
            vec![(Job, "migrate-v2".into())]
        );
        assert_eq!(
            workloads(&owned("StatefulSet", "db")),
            vec![(StatefulSet, "db".into())]
        );
        assert_eq!(
            workloads(&owned("DaemonSet", "fluent-bit")),
            vec![(DaemonSet, "fluent-bit".into())]
        );
        assert_eq!(workloads(&owned("Node", "n1")), vec![]);
        assert_eq!(workloads(&pod("a", "b")), vec![]);
    }

    #[test]
    fn service_name_precedence() {
        use ServiceNameSource::*;
        let mut p = owned("StatefulSet", "db");
        p.annotations
            .insert(SERVICE_NAME_ANNOTATION.into(), "orders-db".into());
        p.labels.insert(APP_NAME_LABEL.into(), "postgres".into());
        let w = workloads(&p);
        assert_eq!(
            service_name(Some("from-env"), &p, &w, "pg"),
            ("from-env".into(), ProcessEnvironment)
        );
        assert_eq!(
            service_name(Some("  "), &p, &w, "pg"),
            ("orders-db".into(), Annotation)
        );
        p.annotations.clear();
        assert_eq!(service_name(None, &p, &w, "pg"), ("postgres".into(), Label));
        p.labels.insert(APP_NAME_LABEL.into(), "".into());
        assert_eq!(service_name(None, &p, &w, "pg"), ("db".into(), Workload));
        // A Deployment, not its ReplicaSet, names the service.
        let d = owned("ReplicaSet", "web-5c8f7b6d9f");
        assert_eq!(
            service_name(None, &d, &workloads(&d), "nginx"),
            ("web".into(), Workload)
        );
        let bare = pod("a", "standalone");
        assert_eq!(
            service_name(None, &bare, &workloads(&bare), "nginx"),
            ("nginx".into(), Container)
        );
    }

    #[test]
    fn toggle_resolution_and_reasons() {
        let all = TogglePolicy::new(DefaultPolicy::AllExceptSystem, Some("sonde"));
        let opt_in = TogglePolicy::new(DefaultPolicy::OptIn, Some("sonde"));
        let ns = |name: &str, v: Option<&str>| NamespaceMeta {
            name: name.into(),
            tracing: v.map(str::to_owned),
        };
        let shop = pod("shop", "web");
        let r = resolve_toggle(&shop, Some(&ns("shop", None)), &all);
        assert!(r.traced);
        assert_eq!(
            r.reason,
            Reason::DefaultPolicy {
                policy: "all-except-system".into()
            }
        );
        let r = resolve_toggle(&shop, Some(&ns("shop", None)), &opt_in);
        assert!(!r.traced);
        for system in ["kube-system", "sonde"] {
            let p = pod(system, "x");
            let r = resolve_toggle(&p, Some(&ns(system, None)), &all);
            assert_eq!(
                (r.traced, r.reason),
                (false, Reason::SystemNamespace),
                "{system}"
            );
        }
        // The namespace annotation wins over the default, both ways.
        let r = resolve_toggle(&shop, Some(&ns("shop", Some("disabled"))), &all);
        assert_eq!((r.traced, r.reason), (false, Reason::NamespaceAnnotation));
        let r = resolve_toggle(&shop, Some(&ns("shop", Some("enabled"))), &opt_in);
        assert_eq!((r.traced, r.reason), (true, Reason::NamespaceAnnotation));
        let ks = pod("kube-system", "dns");
        let r = resolve_toggle(&ks, Some(&ns("kube-system", Some("enabled"))), &all);
        assert!(r.traced);
        // The pod annotation wins over its namespace.
        let mut p = pod("shop", "web");
        p.annotations
            .insert(TRACING_ANNOTATION.into(), "disabled".into());
        let r = resolve_toggle(&p, Some(&ns("shop", Some("enabled"))), &opt_in);
        assert_eq!((r.traced, r.reason), (false, Reason::PodAnnotation));
        p.annotations
            .insert(TRACING_ANNOTATION.into(), "enabled".into());
        let r = resolve_toggle(&p, Some(&ns("shop", Some("disabled"))), &opt_in);
        assert_eq!((r.traced, r.reason), (true, Reason::PodAnnotation));
        // Without its namespace known, only a pod annotation decides.
        assert!(resolve_toggle(&p, None, &all).traced);
        let r = resolve_toggle(&shop, None, &all);
        assert_eq!((r.traced, r.reason), (false, Reason::NamespaceUnknown));
        // Values other than enabled/disabled are ignored, and reported.
        p.annotations
            .insert(TRACING_ANNOTATION.into(), "yes".into());
        let r = resolve_toggle(&p, Some(&ns("shop", Some("on"))), &opt_in);
        assert!(!r.traced);
        assert_eq!(
            r.ignored,
            vec![
                "pod sonde.dev/tracing=\"yes\"".to_string(),
                "namespace sonde.dev/tracing=\"on\"".to_string()
            ]
        );
        assert_eq!(r.reason.to_string(), "default policy opt-in");
    }
}
