//! The toggle controller: which cgroups the kernel traces, following the pods of this node and
//! their annotations, within a fraction of a second of a change.
//!
//! Every [`ControllerOptions::interval`] it reads the store; when something changed (or a walk
//! is due) it maps each container id to its cgroup v2 directories (found by walking the cgroup
//! tree: a container's directory is named after its id, see `cgroup_path`), resolves every
//! pod's toggle, and publishes the traced cgroup ids to the capture ([`CgroupUpdates`]), which
//! writes them to the kernel's cgroup filter map. Context injection follows, since the kernel
//! programs decide whether to inject from the same map. It also keeps the `/targets` report.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use sonde_proto::Decision;

use super::{
    cgroup_path::from_path,
    model::{ServiceNameSource, TogglePolicy, Verdict, WorkloadKind, resolve_toggle, service_name},
    store::{SharedStore, Store, StoreStats},
};
use crate::capture::CgroupUpdates;

/// Deepest cgroup directory looked at below the v2 root.
const MAX_DEPTH: usize = 12;
/// Most directories looked at per walk (a node has hundreds to a few thousand).
const MAX_DIRS: usize = 200_000;

/// Container id → cgroup ids of its directory and sub-directories.
pub type CgroupIndex = HashMap<String, Vec<u64>>;

/// cgroup id → container id, from the last walk: the enricher names the container of a
/// connection by the cgroup id the kernel reported, even once its process is gone.
pub type SharedCgroupMap = Arc<std::sync::RwLock<HashMap<u64, String>>>;

/// Walks the cgroup v2 tree under `root` and indexes every directory that names a container.
/// Returns the index and the number of directories seen.
pub fn walk(root: &Path) -> (CgroupIndex, usize) {
    use std::os::unix::fs::MetadataExt as _;
    let mut index = CgroupIndex::new();
    let mut seen = 0usize;
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.to_path_buf(), String::new(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if seen >= MAX_DIRS {
                return (index, seen);
            }
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            seen += 1;
            let name = e.file_name().to_string_lossy().into_owned();
            let rel = format!("{rel}/{name}");
            if let Some(c) = from_path(&rel)
                && let Ok(md) = e.metadata()
            {
                index.entry(c.id).or_default().push(md.ino());
            }
            if depth + 1 < MAX_DEPTH {
                stack.push((e.path(), rel, depth + 1));
            }
        }
    }
    (index, seen)
}

/// One container in the `/targets` report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerTarget {
    pub name: String,
    pub id: Option<String>,
    /// cgroup v2 ids of the container (empty until its directory is found).
    pub cgroups: Vec<u64>,
}

/// One pod in the `/targets` report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PodTarget {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub traced: bool,
    /// Machine-readable reason (`pod-annotation`, `namespace-annotation`, `default-policy`,
    /// `system-namespace`, `namespace-unknown`) and a sentence.
    pub reason: String,
    pub why: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
    pub service_name: String,
    pub service_name_source: ServiceNameSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<(WorkloadKind, String)>,
    pub containers: Vec<ContainerTarget>,
}

/// The whole `/targets` report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Targets {
    pub node: String,
    pub policy: String,
    /// Both watches have listed at least once.
    pub synced: bool,
    /// Unix ms of the last change applied.
    pub updated_unix_ms: u64,
    pub traced_cgroups: usize,
    pub stats: StoreStats,
    pub pods: Vec<PodTarget>,
}

fn reason_tag(v: &Verdict) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

/// The traced cgroups and the report, from the store and the cgroup index (pure).
pub fn plan(
    store: &Store,
    index: &CgroupIndex,
    policy: &TogglePolicy,
    node: &str,
) -> (BTreeMap<u64, Decision>, Targets) {
    let mut traced = BTreeMap::new();
    let mut pods = Vec::new();
    for p in store.pods() {
        let m = &p.meta;
        let v = resolve_toggle(m, store.namespace(&m.namespace), policy);
        let containers: Vec<ContainerTarget> = m
            .containers
            .iter()
            .map(|c| ContainerTarget {
                name: c.name.clone(),
                id: c.id.clone(),
                cgroups: c
                    .id
                    .as_ref()
                    .and_then(|id| index.get(id))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        if v.traced {
            for c in &containers {
                for &id in &c.cgroups {
                    traced.insert(id, Decision::Trace);
                }
            }
        }
        let first = m.containers.first().map_or("", |c| c.name.as_str());
        let (service_name, service_name_source) = service_name(None, m, &p.workloads, first);
        pods.push(PodTarget {
            namespace: m.namespace.clone(),
            pod: m.name.clone(),
            uid: m.uid.clone(),
            traced: v.traced,
            reason: reason_tag(&v),
            why: v.reason.to_string(),
            ignored: v.ignored.clone(),
            service_name,
            service_name_source,
            workload: p.workloads.first().cloned(),
            containers,
        });
    }
    pods.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    let targets = Targets {
        node: node.to_owned(),
        policy: policy.default.to_string(),
        synced: store.synced(),
        updated_unix_ms: 0,
        traced_cgroups: traced.len(),
        stats: store.stats,
        pods,
    };
    (traced, targets)
}

#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// How often the store is checked for changes.
    pub interval: Duration,
    /// How often the cgroup tree is walked for new containers even if nothing changed.
    pub walk_interval: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(200),
            walk_interval: Duration::from_secs(2),
        }
    }
}

/// The latest `/targets` report, shared with the metrics server.
pub type SharedTargets = Arc<Mutex<Targets>>;

/// A running controller thread; stops when dropped.
pub struct Controller {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    pub targets: SharedTargets,
    pub cgroups: SharedCgroupMap,
}

impl Controller {
    pub fn spawn(
        store: SharedStore,
        policy: TogglePolicy,
        node: String,
        cgroup_root: PathBuf,
        updates: CgroupUpdates,
        opts: ControllerOptions,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let targets: SharedTargets = Arc::default();
        let cgroups: SharedCgroupMap = Arc::default();
        let (stop2, targets2, cgroups2) = (stop.clone(), targets.clone(), cgroups.clone());
        let thread = thread::Builder::new()
            .name("sonde-k8s-toggle".into())
            .spawn(move || {
                let mut last_rev = u64::MAX;
                let mut last_walk: Option<Instant> = None;
                let mut index = CgroupIndex::new();
                let mut missing = false;
                while !stop2.load(Ordering::Relaxed) {
                    let rev = store.read().map(|s| s.revision()).unwrap_or(0);
                    let walk_due = last_walk.is_none_or(|t| {
                        t.elapsed() >= opts.walk_interval
                            || (missing && rev != last_rev && t.elapsed() >= opts.interval)
                    });
                    if walk_due {
                        let started = Instant::now();
                        let (i, dirs) = walk(&cgroup_root);
                        tracing::debug!(
                            "cgroup walk: {dirs} directories, {} containers in {:?}",
                            i.len(),
                            started.elapsed()
                        );
                        last_walk = Some(Instant::now());
                        if i != index {
                            let by_id = i
                                .iter()
                                .flat_map(|(c, ids)| ids.iter().map(move |&id| (id, c.clone())))
                                .collect();
                            if let Ok(mut g) = cgroups2.write() {
                                *g = by_id;
                            }
                            index = i;
                            last_rev = u64::MAX; // re-plan
                        }
                    }
                    if rev != last_rev {
                        last_rev = rev;
                        let (traced, mut t) = {
                            let s = store.read().unwrap_or_else(|e| e.into_inner());
                            plan(&s, &index, &policy, &node)
                        };
                        missing = t
                            .pods
                            .iter()
                            .flat_map(|p| &p.containers)
                            .any(|c| c.id.is_some() && c.cgroups.is_empty());
                        t.updated_unix_ms = SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64);
                        updates.set(traced);
                        if let Ok(mut g) = targets2.lock() {
                            *g = t;
                        }
                    }
                    thread::sleep(opts.interval);
                }
            })
            .expect("spawning the toggle controller");
        Self {
            stop,
            thread: Some(thread),
            targets,
            cgroups,
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{
        model::{ContainerMeta, DefaultPolicy, NamespaceMeta, PodMeta, TRACING_ANNOTATION},
        store::StoreLimits,
    };

    const A: &str = "a000000000000000000000000000000000000000000000000000000000000001";
    const B: &str = "b000000000000000000000000000000000000000000000000000000000000002";

    fn pod(ns: &str, uid: &str, id: &str) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: ns.into(),
            name: format!("p-{uid}"),
            node: Some("n".into()),
            labels: Default::default(),
            annotations: Default::default(),
            owner: None,
            containers: vec![ContainerMeta {
                name: "app".into(),
                id: Some(id.into()),
            }],
        }
    }

    #[test]
    fn walks_a_runtime_like_tree() {
        let root = std::env::temp_dir().join(format!("sonde-k8s-walk-{}", std::process::id()));
        let pod_dir = root.join("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod6e5b9c4f_1c2d_4b7a_9f1e_2a3b4c5d6e7f.slice");
        fs::create_dir_all(pod_dir.join(format!("cri-containerd-{A}.scope/sub"))).unwrap();
        fs::create_dir_all(pod_dir.join(format!("crio-conmon-{B}.scope"))).unwrap();
        fs::create_dir_all(root.join("system.slice/sshd.service")).unwrap();
        let (index, dirs) = walk(&root);
        assert_eq!(dirs, 8);
        assert_eq!(index.len(), 1, "{index:?}");
        assert_eq!(index[A].len(), 2, "the container and its sub-cgroup");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn plans_traced_cgroups_from_annotations() {
        let mut s = Store::new(StoreLimits::default());
        s.replace_namespaces(vec![
            NamespaceMeta {
                name: "shop".into(),
                tracing: None,
            },
            NamespaceMeta {
                name: "kube-system".into(),
                tracing: None,
            },
        ]);
        s.replace_pods(vec![pod("shop", "1", A), pod("kube-system", "2", B)]);
        let index: CgroupIndex = [(A.to_string(), vec![100, 101]), (B.to_string(), vec![200])]
            .into_iter()
            .collect();
        let policy = TogglePolicy::new(DefaultPolicy::AllExceptSystem, None);
        let (traced, t) = plan(&s, &index, &policy, "n");
        assert_eq!(traced.keys().copied().collect::<Vec<_>>(), vec![100, 101]);
        assert!(t.synced);
        assert_eq!(t.pods[0].namespace, "kube-system");
        assert_eq!(
            (t.pods[0].traced, t.pods[0].reason.as_str()),
            (false, "system-namespace")
        );
        assert_eq!(t.pods[1].reason, "default-policy");
        assert_eq!(t.pods[1].containers[0].cgroups, vec![100, 101]);
        // Disabling the namespace empties the traced set; a pod annotation re-enables one pod.
        s.apply_namespace(NamespaceMeta {
            name: "shop".into(),
            tracing: Some("disabled".into()),
        });
        assert!(plan(&s, &index, &policy, "n").0.is_empty());
        let mut p = pod("shop", "1", A);
        p.annotations
            .insert(TRACING_ANNOTATION.into(), "enabled".into());
        s.apply_pod(p);
        let (traced, t) = plan(&s, &index, &policy, "n");
        assert_eq!(traced.len(), 2);
        assert_eq!(t.pods[1].reason, "pod-annotation");
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(json["pods"][1]["why"], "pod annotation sonde.dev/tracing");
        assert_eq!(json["traced_cgroups"], 2);
    }
}
