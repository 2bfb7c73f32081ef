//! Kubernetes resource attributes on spans: process → container (its cgroup path) → pod (the
//! store) → `k8s.*` attributes and `service.name`.
//!
//! Per process, the container reference and the environment's service name are read from
//! `/proc` once (until it execs or exits: no stale attribution when a pid is reused). The
//! resource is cached per process with the revision of the pod version it was built from,
//! so a pod update (a new annotation, say) shows on the next span. A process whose pod is
//! not known yet gets a resource without pod attributes that is not cached: the next span
//! asks again.

use std::{collections::HashMap, fs, path::PathBuf, sync::Arc};

use sonde_model::{KeyValue, Resource, Value};

use super::{
    cgroup_path::{ContainerRef, from_proc_cgroup},
    model::service_name,
    store::{SharedStore, StoredPod},
    toggle::SharedCgroupMap,
};
use crate::{
    conn::ConnInfo,
    enrich::{ProcessCache, service_name_from_environ},
    span::ResourceSource,
};

/// Processes remembered at once; the caches are cleared when full.
const MAX_PROCESSES: usize = 16_384;

#[derive(Clone, Debug, Default)]
struct ProcessInfo {
    container: Option<ContainerRef>,
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) of the process.
    env_service: Option<String>,
}

/// Resources for processes on a Kubernetes node.
pub struct KubeResources {
    process: ProcessCache,
    store: SharedStore,
    proc_root: PathBuf,
    node: String,
    cluster: Option<String>,
    info: HashMap<u32, ProcessInfo>,
    cache: HashMap<u32, (u64, Arc<Resource>)>,
    cgroups: Option<SharedCgroupMap>,
    /// Spans whose process was in a container no known pod runs (yet).
    pub pending: u64,
}

impl KubeResources {
    pub fn new(store: SharedStore, node: String, cluster: Option<String>) -> Self {
        Self::with_proc(store, node, cluster, "/proc", ProcessCache::default())
    }

    pub fn with_proc(
        store: SharedStore,
        node: String,
        cluster: Option<String>,
        proc_root: impl Into<PathBuf>,
        process: ProcessCache,
    ) -> Self {
        Self {
            process,
            store,
            proc_root: proc_root.into(),
            node,
            cluster,
            info: HashMap::new(),
            cache: HashMap::new(),
            cgroups: None,
            pending: 0,
        }
    }

    /// Names containers by the cgroup id the kernel reported for a connection first, and by
    /// `/proc/<pid>/cgroup` only when that id is unknown.
    pub fn with_cgroups(mut self, cgroups: SharedCgroupMap) -> Self {
        self.cgroups = Some(cgroups);
        self
    }

    fn info(&mut self, pid: u32, cgroup_id: u64) -> ProcessInfo {
        if let Some(i) = self.info.get(&pid) {
            return i.clone();
        }
        if self.info.len() >= MAX_PROCESSES {
            self.info.clear();
        }
        let dir = self.proc_root.join(pid.to_string());
        let by_cgroup = (cgroup_id != 0)
            .then_some(self.cgroups.as_ref())
            .flatten()
            .and_then(|m| m.read().ok()?.get(&cgroup_id).cloned())
            .map(|id| ContainerRef {
                id,
                runtime: super::cgroup_path::Runtime::Unknown,
                pod_uid: None,
            });
        let i = ProcessInfo {
            container: by_cgroup.or_else(|| {
                fs::read_to_string(dir.join("cgroup"))
                    .ok()
                    .and_then(|t| from_proc_cgroup(&t))
            }),
            env_service: fs::read(dir.join("environ"))
                .ok()
                .and_then(|e| service_name_from_environ(&e))
                .map(|(s, _)| s),
        };
        self.info.insert(pid, i.clone());
        i
    }

    fn node_attrs(&self, attrs: &mut Vec<KeyValue>) {
        attrs.push(KeyValue::new("k8s.node.name", self.node.clone()));
        if let Some(c) = &self.cluster {
            attrs.push(KeyValue::new("k8s.cluster.name", c.clone()));
        }
    }

    /// The process's own resource with the node (and container id) added.
    fn without_pod(&mut self, conn: &ConnInfo, container: Option<&ContainerRef>) -> Arc<Resource> {
        let base = self.process.resource(conn.pid, &conn.comm);
        let mut attributes = base.attributes.clone();
        self.node_attrs(&mut attributes);
        if let Some(c) = container {
            attributes.push(KeyValue::new("container.id", c.id.clone()));
        }
        Arc::new(Resource { attributes })
    }

    fn with_pod(
        &mut self,
        conn: &ConnInfo,
        info: &ProcessInfo,
        pod: &StoredPod,
        container_name: &str,
        container_id: &str,
    ) -> Arc<Resource> {
        let base = self.process.resource(conn.pid, &conn.comm);
        let (service, _) = service_name(
            info.env_service.as_deref(),
            &pod.meta,
            &pod.workloads,
            container_name,
        );
        let mut attributes = Vec::with_capacity(base.attributes.len() + 12);
        attributes.push(KeyValue::new("service.name", service));
        attributes.extend(
            base.attributes
                .iter()
                .filter(|kv| kv.key != "service.name")
                .cloned(),
        );
        let m = &pod.meta;
        attributes.push(KeyValue::new("k8s.namespace.name", m.namespace.clone()));
        attributes.push(KeyValue::new("k8s.pod.name", m.name.clone()));
        attributes.push(KeyValue::new("k8s.pod.uid", m.uid.clone()));
        attributes.push(KeyValue::new(
            "k8s.container.name",
            container_name.to_owned(),
        ));
        attributes.push(KeyValue::new("container.id", container_id.to_owned()));
        for (kind, name) in &pod.workloads {
            attributes.push(KeyValue::new(kind.attribute(), name.clone()));
        }
        let node = m.node.clone().unwrap_or_else(|| self.node.clone());
        attributes.push(KeyValue::new("k8s.node.name", node));
        if let Some(c) = &self.cluster {
            attributes.push(KeyValue::new("k8s.cluster.name", c.clone()));
        }
        Arc::new(Resource { attributes })
    }
}

impl ResourceSource for KubeResources {
    fn resource(&mut self, conn: &ConnInfo) -> Arc<Resource> {
        let info = self.info(conn.pid, conn.cgroup_id);
        let Some(container) = &info.container else {
            // A host process: no pod to name.
            return match self.cache.get(&conn.pid) {
                Some((0, r)) => r.clone(),
                _ => {
                    let r = self.without_pod(conn, None);
                    self.cache.insert(conn.pid, (0, r.clone()));
                    r
                }
            };
        };
        let found = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .by_container(&container.id);
        let Some((pod, name)) = found else {
            self.pending += 1;
            return self.without_pod(conn, Some(container));
        };
        if let Some((rev, r)) = self.cache.get(&conn.pid)
            && *rev == pod.rev
        {
            return r.clone();
        }
        if self.cache.len() >= MAX_PROCESSES {
            self.cache.clear();
        }
        let r = self.with_pod(conn, &info, &pod, &name, &container.id);
        self.cache.insert(conn.pid, (pod.rev, r.clone()));
        r
    }

    fn forget(&mut self, pid: u32) {
        self.info.remove(&pid);
        self.cache.remove(&pid);
        self.process.forget(pid);
    }

    fn exec(&mut self, pid: u32, comm: &str) {
        self.forget(pid);
        // The process's own facts (command line, executable, environment's service name).
        // Not its container: that is named from the cgroup id of its first connection, which
        // /proc/<pid>/cgroup cannot replace when the agent runs in a cgroup namespace of its
        // own (the chart's pod); the pod is matched when the first span is built.
        self.process.resource(pid, comm);
    }
}

/// The resource source of `sonde run`: the process alone, or the process in its pod.
pub enum NodeResources {
    Host(ProcessCache),
    Kube(Box<KubeResources>),
}

impl ResourceSource for NodeResources {
    fn resource(&mut self, conn: &ConnInfo) -> Arc<Resource> {
        match self {
            NodeResources::Host(p) => ResourceSource::resource(p, conn),
            NodeResources::Kube(k) => k.resource(conn),
        }
    }

    fn forget(&mut self, pid: u32) {
        match self {
            NodeResources::Host(p) => ResourceSource::forget(p, pid),
            NodeResources::Kube(k) => k.forget(pid),
        }
    }

    fn exec(&mut self, pid: u32, comm: &str) {
        match self {
            NodeResources::Host(p) => ResourceSource::exec(p, pid, comm),
            NodeResources::Kube(k) => k.exec(pid, comm),
        }
    }
}

/// A string attribute of a resource (tests, `/targets`).
pub fn attr<'a>(r: &'a Resource, key: &str) -> Option<&'a str> {
    match r.get(key) {
        Some(Value::Str(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{
        model::{ContainerMeta, OwnerRef, PodMeta},
        store::{Store, StoreLimits},
    };
    use sonde_proto::Role;

    const ID: &str = "aa1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const UID: &str = "6e5b9c4f-1c2d-4b7a-9f1e-2a3b4c5d6e7f";

    fn conn(pid: u32) -> ConnInfo {
        ConnInfo {
            id: 1,
            pid,
            fd: 3,
            role: Role::Server,
            source: sonde_proto::ConnSource::Accept,
            local: None,
            remote: None,
            netns: 0,
            comm: "python3".into(),
            opened_ns: 0,
            cgroup_id: 0,
            tls: false,
        }
    }

    fn pod(annotations: &[(&str, &str)]) -> PodMeta {
        PodMeta {
            uid: UID.into(),
            namespace: "shop".into(),
            name: "web-5c8f7b6d9f-abcde".into(),
            node: Some("node-1".into()),
            labels: Default::default(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            owner: Some(OwnerRef {
                kind: "ReplicaSet".into(),
                name: "web-5c8f7b6d9f".into(),
            }),
            containers: vec![ContainerMeta {
                name: "app".into(),
                id: Some(ID.into()),
            }],
        }
    }

    #[test]
    fn an_exec_reads_the_process_but_the_container_still_comes_from_the_cgroup_id() {
        // The agent in a cgroup namespace of its own (the chart's pod) sees a container's
        // process under a path it cannot name: only the kernel's cgroup id names it.
        let root = std::env::temp_dir().join(format!("sonde-k8s-exec-{}", std::process::id()));
        let dir = root.join("20");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup"), "0::/../../system.slice/x.scope\n").unwrap();
        fs::write(dir.join("environ"), b"A=1\0").unwrap();
        fs::write(dir.join("cmdline"), b"wget\0-q\0http://x/\0").unwrap();
        let store = Store::shared(StoreLimits::default());
        store.write().unwrap().apply_pod(pod(&[]));
        let cgroups: SharedCgroupMap = Arc::default();
        cgroups.write().unwrap().insert(777, ID.into());
        let mut k = KubeResources::with_proc(
            store,
            "node-1".into(),
            None,
            &root,
            ProcessCache::new(&root, "node-1".into()),
        )
        .with_cgroups(cgroups);
        k.exec(20, "wget");
        // The process is gone by its first span: what the exec read stays.
        fs::remove_dir_all(&root).unwrap();
        let mut c = conn(20);
        c.cgroup_id = 777;
        let r = k.resource(&c);
        assert_eq!(attr(&r, "k8s.pod.name"), Some("web-5c8f7b6d9f-abcde"));
        assert_eq!(attr(&r, "service.name"), Some("web"));
        assert_eq!(attr(&r, "process.command_line"), Some("wget -q http://x/"));
    }

    #[test]
    fn pid_to_pod_attributes_with_retry_and_updates() {
        let root = std::env::temp_dir().join(format!("sonde-k8s-enrich-{}", std::process::id()));
        for (pid, env) in [
            (10u32, &b"A=1\0"[..]),
            (11, b"OTEL_SERVICE_NAME=own\0"),
            (12, b""),
        ] {
            let dir = root.join(pid.to_string());
            fs::create_dir_all(&dir).unwrap();
            let cg = if pid == 12 {
                "0::/system.slice/sshd.service\n".to_string()
            } else {
                format!(
                    "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n",
                    UID.replace('-', "_")
                )
            };
            fs::write(dir.join("cgroup"), cg).unwrap();
            fs::write(dir.join("environ"), env).unwrap();
        }
        let store = Store::shared(StoreLimits::default());
        let mut k = KubeResources::with_proc(
            store.clone(),
            "node-1".into(),
            Some("prod".into()),
            &root,
            ProcessCache::new(&root, "node-1".into()),
        );
        // The pod is not known yet: no pod attributes, and asked again next time.
        let r = k.resource(&conn(10));
        assert_eq!(attr(&r, "k8s.pod.name"), None);
        assert_eq!(attr(&r, "container.id"), Some(ID));
        assert_eq!(attr(&r, "k8s.node.name"), Some("node-1"));
        assert_eq!(k.pending, 1);
        store.write().unwrap().apply_pod(pod(&[]));
        let r = k.resource(&conn(10));
        for (key, want) in [
            ("service.name", "web"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "web-5c8f7b6d9f-abcde"),
            ("k8s.pod.uid", UID),
            ("k8s.container.name", "app"),
            ("k8s.deployment.name", "web"),
            ("k8s.replicaset.name", "web-5c8f7b6d9f"),
            ("k8s.node.name", "node-1"),
            ("k8s.cluster.name", "prod"),
        ] {
            assert_eq!(attr(&r, key), Some(want), "{key}");
        }
        assert_eq!(
            r.attributes
                .iter()
                .filter(|kv| kv.key == "service.name")
                .count(),
            1
        );
        assert!(Arc::ptr_eq(&r, &k.resource(&conn(10))), "cached");
        // A pod update shows on the next span.
        store.write().unwrap().apply_pod(pod(&[(
            crate::k8s::model::SERVICE_NAME_ANNOTATION,
            "storefront",
        )]));
        assert_eq!(
            attr(&k.resource(&conn(10)), "service.name"),
            Some("storefront")
        );
        // The process's own OTEL_SERVICE_NAME wins.
        assert_eq!(attr(&k.resource(&conn(11)), "service.name"), Some("own"));
        // A host process keeps its own resource, with the node.
        let r = k.resource(&conn(12));
        assert_eq!(attr(&r, "k8s.pod.name"), None);
        assert_eq!(attr(&r, "k8s.node.name"), Some("node-1"));
        // A process gone from /proc is named by the cgroup id the kernel reported.
        let cgroups: SharedCgroupMap = Arc::default();
        cgroups.write().unwrap().insert(777, ID.into());
        let mut k2 = KubeResources::with_proc(
            store.clone(),
            "node-1".into(),
            None,
            &root,
            ProcessCache::new(&root, "node-1".into()),
        )
        .with_cgroups(cgroups);
        let mut gone = conn(99);
        gone.cgroup_id = 777;
        let r = k2.resource(&gone);
        assert_eq!(attr(&r, "k8s.pod.name"), Some("web-5c8f7b6d9f-abcde"));
        assert_eq!(attr(&r, "process.executable.name"), Some("python3"));
        // The pod is gone: no stale attribution.
        store.write().unwrap().delete_pod(UID);
        assert_eq!(attr(&k.resource(&conn(10)), "k8s.pod.name"), None);
        fs::remove_dir_all(&root).unwrap();
    }
}
