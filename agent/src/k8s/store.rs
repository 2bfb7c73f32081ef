//! The pods of this node and the namespaces of the cluster, as the watchers last saw them.
//!
//! Bounded: at most [`StoreLimits::max_pods`] pods and [`StoreLimits::max_namespaces`]
//! namespaces; objects beyond are refused and counted. Every change bumps a revision, so
//! readers (the enricher's caches, the toggle controller) notice without being told.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use super::model::{NamespaceMeta, PodMeta, Workloads, workloads};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// A node runs 110 pods by default (kubelet `maxPods`); a few times that is plenty.
    pub max_pods: usize,
    pub max_namespaces: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_pods: 2048,
            max_namespaces: 16_384,
        }
    }
}

/// A stored pod with what is derived from it once.
#[derive(Debug)]
pub struct StoredPod {
    pub meta: PodMeta,
    pub workloads: Workloads,
    /// The store revision at which this version of the pod was stored.
    pub rev: u64,
}

/// What the watchers did, for `/targets` and `/metrics`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreStats {
    /// Complete lists applied (the first, and each re-list after a 410 or a lost watch).
    pub pod_lists: u64,
    pub namespace_lists: u64,
    /// Objects refused because the store was full.
    pub refused: u64,
    /// Watch errors (connection lost, 410 Gone, ...), each followed by a retry.
    pub watch_errors: u64,
}

#[derive(Debug, Default)]
pub struct Store {
    limits: StoreLimits,
    pods: HashMap<String, Arc<StoredPod>>,
    /// Container id → pod uid.
    by_container: HashMap<String, String>,
    namespaces: HashMap<String, NamespaceMeta>,
    rev: u64,
    pub stats: StoreStats,
}

/// The store shared by the watchers (writers), the enricher and the controller (readers).
pub type SharedStore = Arc<RwLock<Store>>;

impl Store {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn shared(limits: StoreLimits) -> SharedStore {
        Arc::new(RwLock::new(Self::new(limits)))
    }

    /// Bumped by every change.
    pub fn revision(&self) -> u64 {
        self.rev
    }

    /// Whether both watchers have listed at least once.
    pub fn synced(&self) -> bool {
        self.stats.pod_lists > 0 && self.stats.namespace_lists > 0
    }

    fn unindex(&mut self, uid: &str) {
        if let Some(old) = self.pods.remove(uid) {
            for c in &old.meta.containers {
                if let Some(id) = &c.id
                    && self.by_container.get(id).is_some_and(|u| u == uid)
                {
                    self.by_container.remove(id);
                }
            }
        }
    }

    /// Adds or replaces a pod (by uid).
    pub fn apply_pod(&mut self, meta: PodMeta) {
        if !self.pods.contains_key(&meta.uid) && self.pods.len() >= self.limits.max_pods {
            self.stats.refused += 1;
            return;
        }
        self.rev += 1;
        let uid = meta.uid.clone();
        self.unindex(&uid);
        for c in &meta.containers {
            if let Some(id) = &c.id {
                self.by_container.insert(id.clone(), uid.clone());
            }
        }
        let pod = StoredPod {
            workloads: workloads(&meta),
            meta,
            rev: self.rev,
        };
        self.pods.insert(uid, Arc::new(pod));
    }

    pub fn delete_pod(&mut self, uid: &str) {
        if self.pods.contains_key(uid) {
            self.rev += 1;
            self.unindex(uid);
        }
    }

    /// Replaces every pod with a complete list (pods missing from it were deleted meanwhile).
    pub fn replace_pods(&mut self, pods: Vec<PodMeta>) {
        self.rev += 1;
        self.pods.clear();
        self.by_container.clear();
        for p in pods {
            self.apply_pod(p);
        }
        self.stats.pod_lists += 1;
    }

    pub fn apply_namespace(&mut self, ns: NamespaceMeta) {
        if !self.namespaces.contains_key(&ns.name)
            && self.namespaces.len() >= self.limits.max_namespaces
        {
            self.stats.refused += 1;
            return;
        }
        if self.namespaces.get(&ns.name) != Some(&ns) {
            self.rev += 1;
            self.namespaces.insert(ns.name.clone(), ns);
        }
    }

    pub fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.rev += 1;
        }
    }

    pub fn replace_namespaces(&mut self, list: Vec<NamespaceMeta>) {
        self.rev += 1;
        self.namespaces.clear();
        for ns in list {
            self.apply_namespace(ns);
        }
        self.stats.namespace_lists += 1;
    }

    /// The pod running container `id`, and the container's name.
    pub fn by_container(&self, id: &str) -> Option<(Arc<StoredPod>, String)> {
        let pod = self.pods.get(self.by_container.get(id)?)?;
        let name = pod
            .meta
            .containers
            .iter()
            .find(|c| c.id.as_deref() == Some(id))?
            .name
            .clone();
        Some((pod.clone(), name))
    }

    pub fn pod(&self, uid: &str) -> Option<&Arc<StoredPod>> {
        self.pods.get(uid)
    }

    pub fn pods(&self) -> impl Iterator<Item = &Arc<StoredPod>> {
        self.pods.values()
    }

    pub fn namespace(&self, name: &str) -> Option<&NamespaceMeta> {
        self.namespaces.get(name)
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }

    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::model::ContainerMeta;

    fn pod(uid: &str, ids: &[&str]) -> PodMeta {
        PodMeta {
            uid: uid.into(),
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            node: None,
            labels: Default::default(),
            annotations: Default::default(),
            owner: None,
            containers: ids
                .iter()
                .enumerate()
                .map(|(i, id)| ContainerMeta {
                    name: format!("c{i}"),
                    id: Some((*id).into()),
                })
                .collect(),
        }
    }

    #[test]
    fn indexes_containers_and_forgets_restarted_ones() {
        let mut s = Store::new(StoreLimits::default());
        s.apply_pod(pod("a", &["id1", "id2"]));
        assert_eq!(s.by_container("id2").unwrap().1, "c1");
        let r = s.revision();
        // The container restarted: the old id no longer points at the pod.
        s.apply_pod(pod("a", &["id3", "id2"]));
        assert!(s.revision() > r);
        assert!(s.by_container("id1").is_none());
        assert_eq!(s.by_container("id3").unwrap().0.meta.uid, "a");
        s.delete_pod("a");
        assert!(s.by_container("id3").is_none() && s.pod_count() == 0);
        // A re-list drops what was deleted while the watch was away.
        s.apply_pod(pod("b", &["id4"]));
        s.replace_pods(vec![pod("c", &["id5"])]);
        assert!(s.by_container("id4").is_none());
        assert_eq!(s.by_container("id5").unwrap().0.meta.uid, "c");
        assert_eq!(s.stats.pod_lists, 1);
    }

    #[test]
    fn bounded() {
        let mut s = Store::new(StoreLimits {
            max_pods: 2,
            max_namespaces: 1,
        });
        for uid in ["a", "b", "c"] {
            s.apply_pod(pod(uid, &[]));
        }
        assert_eq!((s.pod_count(), s.stats.refused), (2, 1));
        s.apply_pod(pod("a", &["x"])); // updates are always taken
        assert_eq!(s.by_container("x").unwrap().0.meta.uid, "a");
        for n in ["n1", "n2"] {
            s.apply_namespace(NamespaceMeta {
                name: n.into(),
                tracing: None,
            });
        }
        assert_eq!((s.namespace_count(), s.stats.refused), (1, 2));
        // An unchanged namespace is not a change.
        let r = s.revision();
        s.apply_namespace(NamespaceMeta {
            name: "n1".into(),
            tracing: None,
        });
        assert_eq!(s.revision(), r);
    }
}
