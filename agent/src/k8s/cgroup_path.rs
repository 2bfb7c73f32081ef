//! Which container a process runs in, from its cgroup path.
//!
//! Runtimes name a container's cgroup after its id, and the kubelet names the pod's cgroup after
//! the pod uid; the shapes differ by runtime, cgroup driver and cgroup version:
//!
//! ```text
//! v2, systemd driver, containerd   0::/kubepods.slice/kubepods-burstable.slice/
//!                                     kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
//! v2, systemd driver, CRI-O        .../kubepods-besteffort-pod<uid>.slice/crio-<id>.scope
//!                                  (crio-conmon-<id>.scope is the monitor, not the container)
//! v1, cgroupfs driver              12:memory:/kubepods/burstable/pod<uid>/<id>
//! Docker (systemd / cgroupfs)      0::/system.slice/docker-<id>.scope   4:cpu:/docker/<id>
//! Podman                           0::/user.slice/.../libpod-<id>.scope
//! private cgroup namespace         0::/../../kubepods-...-pod<uid>.slice/cri-containerd-<id>.scope
//! ```
//!
//! A container id is 64 hex digits. The innermost path segment that names one wins, so
//! processes in sub-cgroups of a container (systemd inside it, say) still belong to it.

/// The container runtime a cgroup name points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A bare id (cgroupfs driver) under no parent that names the runtime.
    Unknown,
}

impl Runtime {
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
            Runtime::Unknown => "unknown",
        }
    }
}

/// A container found in a cgroup path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// 64 lowercase hex digits.
    pub id: String,
    pub runtime: Runtime,
    /// The pod uid (with dashes) when the path is under a kubelet pod cgroup.
    pub pod_uid: Option<String>,
}

const ID_LEN: usize = 64;

fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id a single path segment names, if any.
pub fn segment_container(seg: &str) -> Option<(Runtime, &str)> {
    if seg.starts_with("crio-conmon-") {
        return None;
    }
    let body = seg.strip_suffix(".scope").unwrap_or(seg);
    for (prefix, rt) in [
        ("cri-containerd-", Runtime::Containerd),
        ("crio-", Runtime::CriO),
        ("docker-", Runtime::Docker),
        ("libpod-", Runtime::Podman),
    ] {
        if let Some(id) = body.strip_prefix(prefix) {
            return is_id(id).then_some((rt, id));
        }
    }
    // cgroupfs driver: the bare id (never with a `.scope` suffix).
    (body.len() == seg.len() && is_id(seg)).then_some((Runtime::Unknown, seg))
}

/// The pod uid a kubelet pod cgroup segment names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with _>.slice` (systemd).
pub fn segment_pod_uid(seg: &str) -> Option<String> {
    let raw = if let Some(s) = seg.strip_suffix(".slice") {
        s.rsplit_once("-pod")?.1
    } else {
        seg.strip_prefix("pod")?
    };
    let uid = raw.replace('_', "-");
    let ok = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| uid.to_ascii_lowercase())
}

/// The container of one cgroup path (relative to any root, `..` segments allowed).
pub fn from_path(path: &str) -> Option<ContainerRef> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let at = segs.iter().rposition(|s| segment_container(s).is_some())?;
    let (mut runtime, id) = segment_container(segs[at])?;
    let parents = &segs[..at];
    if runtime == Runtime::Unknown && parents.last() == Some(&"docker") {
        runtime = Runtime::Docker;
    }
    let pod_uid = parents.iter().rev().find_map(|s| segment_pod_uid(s));
    Some(ContainerRef {
        id: id.to_ascii_lowercase(),
        runtime,
        pod_uid,
    })
}

/// The container of a process, from the text of `/proc/<pid>/cgroup`: the cgroup v2 line
/// (`0::path`) first, then the v1 controller lines.
pub fn from_proc_cgroup(text: &str) -> Option<ContainerRef> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hier), Some(controllers), Some(path)) =
            (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if hier == "0" && controllers.is_empty() {
            if let Some(c) = from_path(path) {
                return Some(c);
            }
        } else if v1.is_none() {
            v1 = from_path(path);
        }
    }
    v1
}

/// The id in a pod status's `containerID` (`containerd://<id>`, `cri-o://<id>`,
/// `docker://<id>`).
pub fn status_container_id(s: &str) -> Option<&str> {
    let id = s.split_once("://").map_or(s, |(_, id)| id);
    is_id(id).then_some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c";
    const UID: &str = "6e5b9c4f-1c2d-4b7a-9f1e-2a3b4c5d6e7f";

    fn c(runtime: Runtime, pod: bool) -> Option<ContainerRef> {
        Some(ContainerRef {
            id: ID.into(),
            runtime,
            pod_uid: pod.then(|| UID.into()),
        })
    }

    #[test]
    fn every_runtime_and_cgroup_version() {
        let uid_ = UID.replace('-', "_");
        let cases: Vec<(String, Option<ContainerRef>)> = vec![
            // containerd, systemd driver, cgroup v2.
            (
                format!(
                    "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-{ID}.scope\n"
                ),
                c(Runtime::Containerd, true),
            ),
            // Guaranteed QoS (no qos slice), kind/k3s nesting under kubelet.slice.
            (
                format!(
                    "0::/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope\n"
                ),
                c(Runtime::Containerd, true),
            ),
            // CRI-O, cgroup v2.
            (
                format!(
                    "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/crio-{ID}.scope\n"
                ),
                c(Runtime::CriO, true),
            ),
            // containerd or Docker, cgroupfs driver, cgroup v1 (every controller line).
            (
                format!(
                    "12:memory:/kubepods/burstable/pod{UID}/{ID}\n11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n1:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n0::/\n"
                ),
                c(Runtime::Unknown, true),
            ),
            // Hybrid host: v1 controllers plus a v2 line that says more.
            (
                format!(
                    "4:pids:/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope\n0::/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope\n"
                ),
                c(Runtime::CriO, true),
            ),
            // Docker outside Kubernetes: systemd driver (v2) and cgroupfs (v1).
            (
                format!("0::/system.slice/docker-{ID}.scope\n"),
                c(Runtime::Docker, false),
            ),
            (
                format!("5:cpu:/docker/{ID}\n0::/\n"),
                c(Runtime::Docker, false),
            ),
            // Podman.
            (
                format!(
                    "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
                ),
                c(Runtime::Podman, false),
            ),
            // Seen from a private cgroup namespace.
            (
                format!(
                    "0::/../../kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope\n"
                ),
                c(Runtime::Containerd, true),
            ),
            // A sub-cgroup of the container belongs to it.
            (
                format!(
                    "0::/kubepods.slice/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope/init.scope\n"
                ),
                c(Runtime::Containerd, true),
            ),
            // Not containers: conmon, host services, the root, junk.
            (format!("0::/system.slice/crio-conmon-{ID}.scope\n"), None),
            ("0::/system.slice/sshd.service\n".into(), None),
            ("0::/\n".into(), None),
            ("0::/kubepods.slice/cri-containerd-abc.scope\n".into(), None),
            (format!("0::/x/{}.scope\n", &ID[..63]), None),
            ("garbage".into(), None),
            (String::new(), None),
        ];
        for (text, want) in cases {
            assert_eq!(from_proc_cgroup(&text), want, "{text}");
        }
    }

    #[test]
    fn pod_uids_and_status_ids() {
        assert_eq!(segment_pod_uid(&format!("pod{UID}")).as_deref(), Some(UID));
        assert_eq!(
            segment_pod_uid(&format!(
                "kubepods-burstable-pod{}.slice",
                UID.replace('-', "_")
            ))
            .as_deref(),
            Some(UID)
        );
        assert_eq!(segment_pod_uid("podman"), None);
        assert_eq!(segment_pod_uid("kubepods-burstable.slice"), None);
        assert_eq!(status_container_id(&format!("containerd://{ID}")), Some(ID));
        assert_eq!(status_container_id(&format!("cri-o://{ID}")), Some(ID));
        assert_eq!(status_container_id(&format!("docker://{ID}")), Some(ID));
        assert_eq!(status_container_id("containerd://short"), None);
        assert_eq!(status_container_id(""), None);
    }
}
