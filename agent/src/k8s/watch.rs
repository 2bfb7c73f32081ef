//! The two watches sonde keeps on the API server: the pods of this node
//! (`spec.nodeName=<node>`, never a cluster-wide pod watch) and the namespaces (for their
//! tracing annotation). No ReplicaSet or Job is watched: workloads come from owner references
//! and names (`model::workloads`).
//!
//! kube-rs's watcher lists, then watches from the list's resourceVersion with bookmarks; on a
//! lost connection it resumes from the last resourceVersion seen, and on `410 Gone` it lists
//! again. Each complete list replaces the store's contents, so objects deleted while the watch
//! was away disappear.

use std::{collections::BTreeMap, path::Path, time::Duration};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::{
    Api, Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{WatchStreamExt as _, watcher},
};

use super::{
    cgroup_path::status_container_id,
    model::{
        ContainerMeta, KEPT_ANNOTATIONS, KEPT_LABELS, NamespaceMeta, OwnerRef, PodMeta,
        TRACING_ANNOTATION,
    },
    store::SharedStore,
};

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "cannot read kubeconfig {path}: {source}; give a readable file to --kubeconfig, or run \
         in a pod with a service account"
    )]
    Kubeconfig {
        path: String,
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    #[error(
        "no Kubernetes API server configuration: not in a pod (KUBERNETES_SERVICE_HOST unset) \
         and no kubeconfig ({source}); pass --kubeconfig FILE"
    )]
    Infer {
        #[source]
        source: Box<kube::config::InferConfigError>,
    },
    #[error("cannot build the Kubernetes client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: Box<kube::Error>,
    },
}

/// A client from a kubeconfig file, or inferred (in-cluster service account, `KUBECONFIG`,
/// `~/.kube/config`).
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, WatchError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| WatchError::Kubeconfig {
                path: path.display().to_string(),
                source: Box::new(e),
            })?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| WatchError::Kubeconfig {
                    path: path.display().to_string(),
                    source: Box::new(e),
                })?
        }
        None => Config::infer().await.map_err(|e| WatchError::Infer {
            source: Box::new(e),
        })?,
    };
    let url = config.cluster_url.to_string();
    Client::try_from(config).map_err(|e| WatchError::Client {
        url,
        source: Box::new(e),
    })
}

fn kept(map: &Option<BTreeMap<String, String>>, keys: &[&str]) -> BTreeMap<String, String> {
    map.iter()
        .flatten()
        .filter(|(k, _)| keys.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What sonde keeps of a pod; `None` without uid, namespace or name.
pub fn pod_meta(pod: &Pod) -> Option<PodMeta> {
    let md = &pod.metadata;
    let owners = md.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or(owners.first())
        .map(|o| OwnerRef {
            kind: o.kind.clone(),
            name: o.name.clone(),
        });
    let mut containers: Vec<ContainerMeta> = Vec::new();
    if let Some(status) = &pod.status {
        for s in [
            &status.container_statuses,
            &status.init_container_statuses,
            &status.ephemeral_container_statuses,
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            containers.push(ContainerMeta {
                name: s.name.clone(),
                id: s
                    .container_id
                    .as_deref()
                    .and_then(status_container_id)
                    .map(str::to_ascii_lowercase),
            });
        }
    }
    if let Some(spec) = &pod.spec {
        for c in &spec.containers {
            if !containers.iter().any(|k| k.name == c.name) {
                containers.push(ContainerMeta {
                    name: c.name.clone(),
                    id: None,
                });
            }
        }
    }
    Some(PodMeta {
        uid: md.uid.clone()?,
        namespace: md.namespace.clone()?,
        name: md.name.clone()?,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        labels: kept(&md.labels, KEPT_LABELS),
        annotations: kept(&md.annotations, KEPT_ANNOTATIONS),
        owner,
        containers,
    })
}

pub fn namespace_meta(ns: &Namespace) -> Option<NamespaceMeta> {
    Some(NamespaceMeta {
        name: ns.metadata.name.clone()?,
        tracing: ns
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRACING_ANNOTATION).cloned()),
    })
}

/// How the watchers talk to the API server.
#[derive(Clone, Debug)]
pub struct WatchOptions {
    /// Server-side timeout of each watch request (the watcher then resumes).
    pub timeout: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(290),
        }
    }
}

/// Watches this node's pods until the task is dropped.
pub async fn watch_pods(client: Client, node: String, store: SharedStore, opts: WatchOptions) {
    let api: Api<Pod> = Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .timeout(opts.timeout.as_secs().max(1) as u32);
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<PodMeta>> = None;
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(p)) => {
                if let (Some(l), Some(m)) = (listing.as_mut(), pod_meta(&p)) {
                    l.push(m);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let pods = listing.take().unwrap_or_default();
                tracing::info!("kubernetes: {} pods on node {node}", pods.len());
                write(&store).replace_pods(pods);
                warned = false;
            }
            Ok(watcher::Event::Apply(p)) => {
                if let Some(m) = pod_meta(&p) {
                    write(&store).apply_pod(m);
                }
            }
            Ok(watcher::Event::Delete(p)) => {
                if let Some(uid) = &p.metadata.uid {
                    write(&store).delete_pod(uid);
                }
            }
            Err(e) => {
                write(&store).stats.watch_errors += 1;
                if !warned {
                    tracing::warn!("kubernetes pod watch: {e}; retrying");
                    warned = true;
                } else {
                    tracing::debug!("kubernetes pod watch: {e}");
                }
            }
        }
    }
}

/// Watches namespaces (their tracing annotation) until the task is dropped.
pub async fn watch_namespaces(client: Client, store: SharedStore, opts: WatchOptions) {
    let api: Api<Namespace> = Api::all(client);
    let config = watcher::Config::default().timeout(opts.timeout.as_secs().max(1) as u32);
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut listing: Option<Vec<NamespaceMeta>> = None;
    let mut warned = false;
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Init) => listing = Some(Vec::new()),
            Ok(watcher::Event::InitApply(n)) => {
                if let (Some(l), Some(m)) = (listing.as_mut(), namespace_meta(&n)) {
                    l.push(m);
                }
            }
            Ok(watcher::Event::InitDone) => {
                let list = listing.take().unwrap_or_default();
                write(&store).replace_namespaces(list);
                warned = false;
            }
            Ok(watcher::Event::Apply(n)) => {
                if let Some(m) = namespace_meta(&n) {
                    write(&store).apply_namespace(m);
                }
            }
            Ok(watcher::Event::Delete(n)) => {
                if let Some(name) = &n.metadata.name {
                    write(&store).delete_namespace(name);
                }
            }
            Err(e) => {
                write(&store).stats.watch_errors += 1;
                if !warned {
                    tracing::warn!("kubernetes namespace watch: {e}; retrying");
                    warned = true;
                } else {
                    tracing::debug!("kubernetes namespace watch: {e}");
                }
            }
        }
    }
}

fn write(store: &SharedStore) -> std::sync::RwLockWriteGuard<'_, super::store::Store> {
    // A panicking writer leaves the store consistent (every change is one call): keep going.
    store.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_sonde_reads() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-7d4b9c8f6d-x2x9z", "namespace": "shop", "uid": "u-1",
                "labels": {"app.kubernetes.io/name": "web", "pod-template-hash": "7d4b9c8f6d", "team": "a"},
                "annotations": {"sonde.dev/tracing": "enabled", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c8f6d", "uid": "y", "controller": true}
                ]
            },
            "spec": {"nodeName": "node-1", "containers": [{"name": "app"}, {"name": "sidecar"}]},
            "status": {"containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                "containerID": "containerd://4F1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6F7A8B9C0D1E2F3A4B5C6D7E8F9A0B1C"
            }]}
        }))
        .unwrap();
        let m = pod_meta(&pod).unwrap();
        assert_eq!(m.labels.len(), 2);
        assert_eq!(m.annotations.len(), 1);
        assert_eq!(m.owner.as_ref().unwrap().kind, "ReplicaSet");
        assert_eq!(m.node.as_deref(), Some("node-1"));
        assert_eq!(
            m.containers,
            vec![
                ContainerMeta {
                    name: "app".into(),
                    id: Some(
                        "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c".into()
                    )
                },
                ContainerMeta {
                    name: "sidecar".into(),
                    id: None
                }
            ]
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "shop", "annotations": {"sonde.dev/tracing": "disabled"}}
        }))
        .unwrap();
        assert_eq!(
            namespace_meta(&ns),
            Some(NamespaceMeta {
                name: "shop".into(),
                tracing: Some("disabled".into())
            })
        );
    }
}
