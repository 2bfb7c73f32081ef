//! Kubernetes mode against a **fake** API server over real HTTPS (no kube-apiserver can run on
//! our machines: every test here says `fake` in its name). The fake (`peers/fake_apiserver.py`)
//! serves list + watch with resourceVersions, bookmarks, `410 Gone` and mid-watch disconnects,
//! and checks the bearer token from the kubeconfig sonde is given.
//!
//! The end-to-end test runs real processes in cgroups laid out the way containerd's systemd
//! driver lays them out (`kubepods.slice/.../cri-containerd-<id>.scope`), publishes pods with
//! those container ids, and asserts what the `sonde` binary exports, and that flipping the
//! `sonde.dev/tracing` annotation stops and resumes tracing within seconds.

use std::{
    ffi::CString,
    fs,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::{ffi::OsStringExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sonde::k8s::{
    store::{Store, StoreLimits},
    watch,
};
use sonde_tests::{Reaper, free_port, peers_dir, python, require_root, sonde_bin, wait_for_port};

const NODE: &str = "node-1";
const TOKEN: &str = "fake-token-3f9a";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sonde-k8s-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl) is needed to make the fake server's certificate");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An HTTP request to 127.0.0.1:`port`; returns status and body.
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    try_http(port, method, path, body)
        .unwrap_or_else(|| panic!("{method} 127.0.0.1:{port}{path} failed"))
}

fn try_http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// The fake API server, its CA and a kubeconfig that points at it.
struct FakeApi {
    _child: Reaper,
    control: u16,
    kubeconfig: PathBuf,
    dir: PathBuf,
}

impl FakeApi {
    fn start(name: &str, bookmark_interval: f64) -> Self {
        let dir = scratch(name);
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sonde-test-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&dir, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=fake-apiserver",
        ]);
        openssl(&dir, &csr);
        fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
        let mut child = Command::new(python())
            .arg(peers_dir().join("fake_apiserver.py"))
            .args([
                "--cert",
                "server.pem",
                "--key",
                "server.key",
                "--token",
                TOKEN,
            ])
            .args(["--bookmark-interval", &bookmark_interval.to_string()])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the fake API server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ports: Vec<u16> = line
            .strip_prefix("LISTENING ")
            .unwrap_or_else(|| panic!("fake API server said {line:?}"))
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        let kubeconfig = dir.join("kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: sonde\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: sonde\ncurrent-context: fake\n",
                ports[0],
                dir.join("ca.pem").display()
            ),
        )
        .unwrap();
        Self {
            _child: Reaper(child),
            control: ports[1],
            kubeconfig,
            dir,
        }
    }

    /// Drives the fake; returns its resourceVersion after the change.
    fn post(&self, path: &str, body: Value) -> u64 {
        let (code, text) = http(self.control, "POST", path, Some(&body));
        assert_eq!(code, 200, "{path}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["resourceVersion"].as_str().unwrap().parse().unwrap()
    }

    fn namespace(&self, name: &str, tracing: Option<&str>) -> u64 {
        let annotations = match tracing {
            Some(t) => json!({ "sonde.dev/tracing": t }),
            None => json!({}),
        };
        self.post(
            "/fake/namespaces",
            json!({"metadata": {"name": name, "annotations": annotations}}),
        )
    }

    /// API requests served so far.
    fn log(&self) -> Vec<Value> {
        let (code, text) = http(self.control, "GET", "/fake/log", None);
        assert_eq!(code, 200);
        serde_json::from_str::<Value>(&text)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A pod as the API server returns it.
#[allow(clippy::too_many_arguments)] // one argument per field of the manifest
fn pod(
    uid: &str,
    ns: &str,
    name: &str,
    node: &str,
    owner: Option<(&str, &str)>,
    labels: Value,
    annotations: Value,
    containers: &[(&str, &str)],
) -> Value {
    let owners: Vec<Value> = owner
        .map(|(kind, n)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": n, "uid": format!("owner-{n}"), "controller": true})
        })
        .into_iter()
        .collect();
    json!({
        "metadata": {
            "uid": uid, "namespace": ns, "name": name, "labels": labels,
            "annotations": annotations, "ownerReferences": owners
        },
        "spec": {
            "nodeName": node,
            "containers": containers.iter().map(|(n, _)| json!({"name": n, "image": "scratch"})).collect::<Vec<_>>()
        },
        "status": {
            "phase": "Running",
            "containerStatuses": containers.iter().map(|(n, id)| json!({
                "name": n, "ready": true, "restartCount": 0, "image": "scratch", "imageID": "",
                "containerID": format!("containerd://{id}")
            })).collect::<Vec<_>>()
        }
    })
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if f() {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn watch_requests(log: &[Value], path: &str) -> Vec<Value> {
    log.iter()
        .filter(|r| r["path"] == path && r["query"]["watch"] == "true")
        .cloned()
        .collect()
}

fn list_requests(log: &[Value], path: &str) -> usize {
    log.iter()
        .filter(|r| r["path"] == path && r["query"].get("watch").is_none())
        .count()
}

#[test]
fn fake_apiserver_list_watch_bookmarks_disconnect_and_410_relist() {
    let api = FakeApi::start("watch", 0.2);
    api.namespace("shop", None);
    let none = json!({});
    api.post(
        "/fake/pods",
        pod(
            "p1",
            "shop",
            "a",
            NODE,
            None,
            none.clone(),
            none.clone(),
            &[],
        ),
    );
    api.post(
        "/fake/pods",
        pod(
            "p2",
            "shop",
            "elsewhere",
            "node-2",
            None,
            none.clone(),
            none.clone(),
            &[],
        ),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let store = Store::shared(StoreLimits::default());
    let client = rt
        .block_on(watch::client(Some(&api.kubeconfig)))
        .expect("client from the kubeconfig");
    let opts = watch::WatchOptions {
        timeout: Duration::from_secs(60),
    };
    rt.spawn(watch::watch_pods(
        client.clone(),
        NODE.into(),
        store.clone(),
        opts.clone(),
    ));
    rt.spawn(watch::watch_namespaces(client, store.clone(), opts));
    let read = || store.read().unwrap();
    let t = Duration::from_secs(10);

    // The first list: only this node's pod (the field selector is applied by the server).
    wait_until("the first lists", t, || read().synced());
    assert!(read().pod("p1").is_some());
    assert!(read().pod("p2").is_none(), "a pod of another node");
    assert_eq!(read().namespace("shop").unwrap().tracing, None);

    // Watch events: added, modified, deleted.
    api.post(
        "/fake/pods",
        pod(
            "p3",
            "shop",
            "b",
            NODE,
            None,
            none.clone(),
            none.clone(),
            &[],
        ),
    );
    wait_until("p3 added", t, || read().pod("p3").is_some());
    api.post(
        "/fake/pods",
        pod(
            "p1",
            "shop",
            "a",
            NODE,
            None,
            none.clone(),
            json!({"sonde.dev/tracing": "disabled"}),
            &[],
        ),
    );
    wait_until("p1 modified", t, || {
        read()
            .pod("p1")
            .is_some_and(|p| p.meta.annotations.contains_key("sonde.dev/tracing"))
    });
    api.namespace("shop", Some("disabled"));
    wait_until("namespace annotated", t, || {
        read().namespace("shop").unwrap().tracing.as_deref() == Some("disabled")
    });

    // The namespace change moved the resourceVersion past every pod event: only a bookmark
    // tells the pod watch about it. After a disconnect mid-watch, the pod watch resumes from
    // the bookmark's resourceVersion without listing again.
    let rv = api.namespace("other", None);
    std::thread::sleep(Duration::from_millis(600));
    let lists_before = list_requests(&api.log(), "/api/v1/pods");
    api.post("/fake/disconnect", json!({}));
    wait_until("the pod watch resumed", t, || {
        watch_requests(&api.log(), "/api/v1/pods")
            .last()
            .is_some_and(|w| {
                w["query"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    >= rv
            })
    });
    let log = api.log();
    assert_eq!(
        list_requests(&log, "/api/v1/pods"),
        lists_before,
        "resumed without a list"
    );
    let watches = watch_requests(&log, "/api/v1/pods");
    assert!(watches.len() >= 2, "{watches:#?}");
    for w in &watches {
        assert_eq!(w["query"]["allowWatchBookmarks"], "true");
        assert_eq!(w["query"]["fieldSelector"], format!("spec.nodeName={NODE}"));
    }
    assert!(
        log.iter().all(|r| r["auth"] == format!("Bearer {TOKEN}")),
        "the kubeconfig's token"
    );
    api.post("/fake/pods/delete", json!({"uid": "p3"}));
    wait_until("p3 deleted after the reconnect", t, || {
        read().pod("p3").is_none()
    });

    // 410 Gone: history compacted. The watcher lists again; a pod deleted meanwhile (whose
    // DELETED event is lost with the history) disappears with the new list.
    api.post("/fake/expire", json!({}));
    api.post("/fake/pods/delete", json!({"uid": "p1"}));
    api.post(
        "/fake/pods",
        pod(
            "p4",
            "shop",
            "c",
            NODE,
            None,
            none.clone(),
            none.clone(),
            &[],
        ),
    );
    wait_until("the re-list after 410", t, || read().stats.pod_lists >= 2);
    wait_until("the store matches the new list", t, || {
        read().pod("p1").is_none() && read().pod("p4").is_some()
    });
    assert!(list_requests(&api.log(), "/api/v1/pods") > lists_before);
    assert!(read().stats.watch_errors >= 1, "the 410 is counted");
    assert_eq!(read().pod_count(), 1);
    rt.shutdown_timeout(Duration::from_secs(1));
}

/// cgroups laid out like containerd's under the kubelet's systemd driver, below a directory
/// of this test; processes are started inside them. Everything is killed and removed at drop.
struct FakeRuntime {
    base: PathBuf,
    children: Vec<Child>,
}

impl FakeRuntime {
    fn new() -> Self {
        require_root();
        let root = sonde::cgroup::v2_mount().expect("a cgroup v2 hierarchy must be mounted");
        let base = root.join(format!("sonde-test-{}-k8s", std::process::id()));
        fs::create_dir_all(&base).unwrap();
        Self {
            base,
            children: Vec::new(),
        }
    }

    /// The container's cgroup: `kubepods.slice/kubepods-besteffort.slice/
    /// kubepods-besteffort-pod<uid>.slice/cri-containerd-<id>.scope`.
    fn container(&self, pod_uid: &str, id: &str) -> PathBuf {
        let dir = self
            .base
            .join("kubepods.slice/kubepods-besteffort.slice")
            .join(format!(
                "kubepods-besteffort-pod{}.slice",
                pod_uid.replace('-', "_")
            ))
            .join(format!("cri-containerd-{id}.scope"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn command(dir: &Path, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_vec()).unwrap();
        // SAFETY: only async-signal-safe calls (open, write, close) between fork and exec, on a
        // string prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if n != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    fn spawn(&mut self, mut cmd: Command) -> &mut Child {
        self.children.push(cmd.spawn().expect("spawn"));
        self.children.last_mut().unwrap()
    }
}

impl Drop for FakeRuntime {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deepest first.
        let mut dirs = Vec::new();
        let mut stack = vec![self.base.clone()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            let _ = fs::write(d.join("cgroup.kill"), b"1");
            for _ in 0..50 {
                if fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn container_id(tag: &str) -> String {
    format!(
        "{:0>8x}{:0>56}",
        std::process::id(),
        tag.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    )
    .chars()
    .take(64)
    .collect()
}

/// Spans of the jsonl file: (resource attributes, span).
fn spans(file: &Path) -> Vec<(Value, Value)> {
    let text = fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|s| {
            let res: serde_json::Map<String, Value> = s["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|kv| {
                    (
                        kv["key"].as_str().unwrap().to_owned(),
                        kv["value"]["stringValue"].clone(),
                    )
                })
                .collect();
            (Value::Object(res), s)
        })
        .collect()
}

fn span_attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?["value"]["stringValue"]
        .as_str()
}

/// The spans of one step (`?step=NAME`), by kind: (server, client).
type Spans = Vec<(Value, Value)>;

fn step(file: &Path, name: &str) -> (Spans, Spans) {
    let q = format!("step={name}");
    let all: Vec<_> = spans(file)
        .into_iter()
        .filter(|(_, s)| {
            span_attr(s, "url.query") == Some(q.as_str())
                || span_attr(s, "url.full").is_some_and(|u| u.ends_with(&format!("?{q}")))
        })
        .collect();
    let (server, client) = all.into_iter().partition(|(_, s)| s["kind"] == 2);
    (server, client)
}

fn targets(port: u16) -> Value {
    let (code, body) = http(port, "GET", "/targets", None);
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// `sonde run --kubernetes` against the fake API server, writing spans to a jsonl file.
struct Sonde {
    _child: Option<Reaper>,
    metrics: u16,
    out: PathBuf,
    log: PathBuf,
}

fn start_sonde(api: &FakeApi) -> Sonde {
    let out = api.dir.join("spans.jsonl");
    let log = api.dir.join("sonde.log");
    let metrics = free_port();
    let child = Command::new(sonde_bin())
        .args([
            "run",
            "--kubernetes",
            "--node-name",
            NODE,
            "--cluster-name",
            "test-cluster",
        ])
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .args(["--output", "jsonl", "--output-file"])
        .arg(&out)
        .args([
            "--metrics-address",
            &format!("127.0.0.1:{metrics}"),
            "--query-allow",
            "step",
        ])
        .env("SONDE_LOG", "info,sonde::k8s=debug,sonde::capture=debug")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .expect("start sonde");
    let sonde = Sonde {
        _child: Some(Reaper(child)),
        metrics,
        out,
        log,
    };
    wait_until("sonde tracing", secs(30), || {
        fs::read_to_string(&sonde.log).is_ok_and(|l| l.contains("tracing the pods"))
    });
    sonde
}

impl Drop for Sonde {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Never panic here (a panic while panicking aborts, skipping every cleanup).
            let metrics = try_http(self.metrics, "GET", "/metrics", None)
                .map(|r| r.1)
                .unwrap_or_default();
            let metrics: Vec<&str> = metrics
                .lines()
                .filter(|l| !l.starts_with('#') && !l.ends_with(" 0"))
                .collect();
            eprintln!(
                "--- sonde's metrics (non-zero):\n{}\n--- sonde's log:\n{}\n--- spans:\n{}",
                metrics.join("\n"),
                fs::read_to_string(&self.log).unwrap_or_default(),
                fs::read_to_string(&self.out).unwrap_or_default()
            );
        }
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Waits until `/targets` says every pod of `pods` is traced (`true`) or not (`false`) with
/// its container's cgroup found, and the capture had a tick to write the kernel map.
fn wait_traced(sonde: &Sonde, pods: &[&str], traced: bool, reason: &str) -> Duration {
    let took = wait_until(
        &format!("{pods:?} traced={traced} by {reason}"),
        secs(10),
        || {
            let t = targets(sonde.metrics);
            pods.iter().all(|name| {
                t["pods"].as_array().unwrap().iter().any(|p| {
                    p["pod"] == *name
                        && p["traced"] == traced
                        && p["reason"] == reason
                        && p["containers"][0]["cgroups"]
                            .as_array()
                            .is_some_and(|c| !c.is_empty())
                })
            })
        },
    );
    // The capture applies the set on its next tick (100 ms).
    std::thread::sleep(Duration::from_millis(300));
    took
}

/// Traced, then the namespace annotation turns both pods off, then on again; `traffic(step)`
/// makes one request from the client pod to the server pod.
fn toggle_namespace(api: &FakeApi, sonde: &Sonde, pods: &[&str], traffic: &dyn Fn(&str)) {
    let flipped = Instant::now();
    api.namespace("shop", Some("disabled"));
    let off = wait_traced(sonde, pods, false, "namespace-annotation");
    traffic("off");
    api.namespace("shop", Some("enabled"));
    let on = wait_traced(sonde, pods, true, "namespace-annotation");
    traffic("on");
    wait_until("spans of step on", secs(10), || {
        let (s, c) = step(&sonde.out, "on");
        s.len() == 1 && c.len() == 1
    });
    let (s, c) = step(&sonde.out, "off");
    assert!(
        s.is_empty() && c.is_empty(),
        "nothing traced while disabled: {s:?} {c:?}"
    );
    eprintln!(
        "k8s: /targets said untraced {off:?} and traced again {on:?} after the annotation changed \
         (each + 300 ms for the kernel map); off-and-on cycle {:?}",
        flipped.elapsed()
    );
}

fn assert_resource(res: &Value, want: &[(&str, &str)]) {
    for (key, v) in want {
        assert_eq!(
            res[*key],
            Value::String((*v).to_owned()),
            "resource {key}: {res:#}"
        );
    }
}

#[test]
fn fake_apiserver_pods_in_runtime_cgroups_get_k8s_attributes_and_follow_the_toggle() {
    let mut rt = FakeRuntime::new();
    let api = FakeApi::start("e2e", 1.0);
    let (web_uid, cli_uid) = (
        "6e5b9c4f-1c2d-4b7a-9f1e-2a3b4c5d6e7f",
        "0a1b2c3d-4e5f-4a7b-8c9d-0e1f2a3b4c5d",
    );
    let (web_id, cli_id) = (container_id("web"), container_id("client"));
    let web_dir = rt.container(web_uid, &web_id);
    let cli_dir = rt.container(cli_uid, &cli_id);
    api.namespace("kube-system", None);
    api.namespace("shop", None);
    let (web, client) = ("web-6d5f8c9b7d-x2x9z", "nightly-29120160-abcde");
    let web_pod = |annotations: Value| {
        pod(
            web_uid,
            "shop",
            web,
            NODE,
            Some(("ReplicaSet", "web-6d5f8c9b7d")),
            json!({"pod-template-hash": "6d5f8c9b7d"}),
            annotations,
            &[("app", &web_id)],
        )
    };
    api.post("/fake/pods", web_pod(json!({})));
    api.post(
        "/fake/pods",
        pod(
            cli_uid,
            "shop",
            client,
            NODE,
            Some(("Job", "nightly-29120160")),
            json!({"app.kubernetes.io/name": "loadgen-label"}),
            json!({"resource.opentelemetry.io/service.name": "loadgen"}),
            &[("curl", &cli_id)],
        ),
    );

    // The server, a real process in the web pod's container cgroup.
    let port = free_port();
    let mut cmd = FakeRuntime::command(&web_dir, &python());
    cmd.arg(peers_dir().join("http_server.py"))
        .arg(port.to_string())
        .stdout(Stdio::null());
    rt.spawn(cmd);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));

    let started = Instant::now();
    let sonde = start_sonde(&api);
    wait_traced(&sonde, &[web, client], true, "default-policy");
    eprintln!(
        "k8s: pods traced {:?} after sonde started",
        started.elapsed()
    );
    let t = targets(sonde.metrics);
    assert_eq!(t["node"], NODE);
    assert_eq!(t["policy"], "all-except-system");
    assert_eq!(t["synced"], true);
    let w = t["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == web)
        .unwrap();
    assert_eq!(w["service_name"], "web");
    assert_eq!(w["workload"], json!(["deployment", "web"]));
    assert_eq!(w["containers"][0]["id"], web_id.as_str());

    let traffic = |name: &str| {
        let mut cmd = FakeRuntime::command(&cli_dir, "curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/hello?step={name}"),
        ]);
        let st = cmd.status().unwrap();
        assert!(st.success(), "curl {name}: {st}");
    };

    // Traced: both ends, with their pods' attributes, in one trace (traceparent injected).
    traffic("one");
    wait_until("spans of step one", secs(10), || {
        let (s, c) = step(&sonde.out, "one");
        s.len() == 1 && c.len() == 1
    });
    let (server, client_spans) = step(&sonde.out, "one");
    let (res, s) = &server[0];
    assert_resource(
        res,
        &[
            ("service.name", "web"),
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", web),
            ("k8s.pod.uid", web_uid),
            ("k8s.container.name", "app"),
            ("k8s.deployment.name", "web"),
            ("k8s.replicaset.name", "web-6d5f8c9b7d"),
            ("k8s.node.name", NODE),
            ("k8s.cluster.name", "test-cluster"),
            ("container.id", &web_id),
        ],
    );
    let (cres, c) = &client_spans[0];
    assert_resource(
        cres,
        &[
            ("service.name", "loadgen"),
            ("k8s.pod.name", client),
            ("k8s.pod.uid", cli_uid),
            ("k8s.container.name", "curl"),
            ("k8s.cronjob.name", "nightly"),
            ("k8s.job.name", "nightly-29120160"),
        ],
    );
    assert!(cres.get("k8s.deployment.name").is_none());
    assert_eq!(
        s["traceId"], c["traceId"],
        "the client's traceparent reached the server"
    );
    assert_eq!(s["parentSpanId"], c["spanId"]);

    toggle_namespace(&api, &sonde, &[web, client], &traffic);

    // The pod annotation overrides its namespace: the web pod alone is off.
    api.post(
        "/fake/pods",
        web_pod(json!({"sonde.dev/tracing": "disabled"})),
    );
    wait_traced(&sonde, &[web], false, "pod-annotation");
    traffic("pod-off");
    wait_until("client span of step pod-off", secs(10), || {
        step(&sonde.out, "pod-off").1.len() == 1
    });
    // The server's span would have been exported in the same batch as the client's.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        step(&sonde.out, "pod-off").0.is_empty(),
        "the web pod is not traced"
    );
    // The pod is deleted: its container is no longer traced, nor named.
    api.post("/fake/pods/delete", json!({"uid": web_uid}));
    wait_until("web pod gone from /targets", secs(10), || {
        !targets(sonde.metrics)["pods"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pod"] == web)
    });
}

/// A Docker daemon of this test's own (Debian's docker.io): its own data root, socket and
/// containerd, no bridge and no iptables rules (containers use `--network host`); stopped,
/// with its containers, at drop.
struct Dockerd {
    child: Option<Child>,
    sock: String,
    dir: PathBuf,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

/// One Docker daemon at a time: two at once, each with its own containerd, made `docker exec`
/// fail here.
static DOCKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Dockerd {
    fn start() -> Self {
        require_root();
        let guard = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
        let dir = PathBuf::from(format!("/tmp/sonde-dockerd-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let sock = format!("unix://{}/docker.sock", dir.display());
        let log = fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(dir.join("root"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args([
                "-H",
                &sock,
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
            ])
            .args(["--ip-forward=false", "--ip-masq=false"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("dockerd (Debian package docker.io) is needed by this test");
        let d = Self {
            child: Some(child),
            sock,
            dir,
            _one_at_a_time: guard,
        };
        wait_until("dockerd answers", secs(30), || {
            Command::new("/usr/bin/docker")
                .args(["-H", &d.sock, "version"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
        d
    }

    /// Runs the Debian docker client against this daemon; returns its trimmed stdout.
    fn docker(&self, args: &[&str]) -> String {
        let out = Command::new("/usr/bin/docker")
            .args(["-H", &self.sock])
            .args(args)
            .output()
            .expect("docker client");
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = Command::new("/usr/bin/docker")
            .args(["-H", &self.sock, "ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("/usr/bin/docker")
                .args(["-H", &self.sock, "rm", "-f"])
                .args(&ids)
                .output();
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + secs(15);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        // What the daemon left mounted under its directories (the netns of --network host,
        // overlays of a daemon that died), deepest first.
        let prefix = format!("{}/", self.dir.display());
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let c = CString::new(m).unwrap();
            // SAFETY: a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A scratch image with Debian's static busybox (httpd, wget, sleep): built here, not pulled.
fn busybox_image(docker: &Dockerd) -> &'static str {
    let ctx = docker.dir.join("image");
    fs::create_dir_all(ctx.join("www")).unwrap();
    fs::copy("/bin/busybox", ctx.join("busybox"))
        .expect("/bin/busybox (Debian package busybox-static) is needed by this test");
    fs::write(ctx.join("www/hello"), "hello from a container\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .unwrap();
    docker.docker(&[
        "build",
        "-q",
        "-t",
        "sonde-test-busybox:1",
        ctx.to_str().unwrap(),
    ]);
    "sonde-test-busybox:1"
}

#[test]
fn fake_apiserver_real_docker_containers_get_k8s_attributes_and_follow_the_toggle() {
    let docker = Dockerd::start();
    let image = busybox_image(&docker);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server_id = docker.docker(&[
        "run",
        "-d",
        "--network",
        "host",
        image,
        "httpd",
        "-f",
        "-p",
        &listen,
        "-h",
        "/www",
    ]);
    let client_id = docker.docker(&["run", "-d", "--network", "host", image, "sleep", "3600"]);
    assert_eq!(
        (server_id.len(), client_id.len()),
        (64, 64),
        "container ids"
    );
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));

    let api = FakeApi::start("docker", 1.0);
    api.namespace("shop", None);
    let (web, probe) = ("storefront-0", "probe-7xk2p");
    let (web_uid, probe_uid) = (
        "1f0e2d3c-4b5a-4697-8877-665544332211",
        "2a3b4c5d-6e7f-4081-9223-a4b5c6d7e8f9",
    );
    api.post(
        "/fake/pods",
        as_docker(pod(
            web_uid,
            "shop",
            web,
            NODE,
            Some(("StatefulSet", "storefront")),
            json!({"app.kubernetes.io/name": "shopfront"}),
            json!({}),
            &[("httpd", &server_id)],
        )),
    );
    api.post(
        "/fake/pods",
        as_docker(pod(
            probe_uid,
            "shop",
            probe,
            NODE,
            Some(("DaemonSet", "probe")),
            json!({}),
            json!({}),
            &[("wget", &client_id)],
        )),
    );
    let sonde = start_sonde(&api);
    wait_traced(&sonde, &[web, probe], true, "default-policy");

    let traffic = |step: &str| {
        docker.docker(&[
            "exec",
            &client_id,
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{listen}/hello?step={step}"),
        ]);
    };
    traffic("one");
    wait_until("spans of the containers' request", secs(10), || {
        let (s, c) = step(&sonde.out, "one");
        s.len() == 1 && c.len() == 1
    });
    let (server, client) = step(&sonde.out, "one");
    assert_resource(
        &server[0].0,
        &[
            ("service.name", "shopfront"),
            ("k8s.pod.name", web),
            ("k8s.pod.uid", web_uid),
            ("k8s.container.name", "httpd"),
            ("k8s.statefulset.name", "storefront"),
            ("k8s.namespace.name", "shop"),
            ("container.id", &server_id),
            ("process.executable.name", "busybox"),
        ],
    );
    assert_resource(
        &client[0].0,
        &[
            ("service.name", "probe"),
            ("k8s.pod.name", probe),
            ("k8s.container.name", "wget"),
            ("k8s.daemonset.name", "probe"),
            ("container.id", &client_id),
        ],
    );
    assert_eq!(span_attr(&server[0].1, "http.request.method"), Some("GET"));
    toggle_namespace(&api, &sonde, &[web, probe], &traffic);
}

/// Pods of Docker containers say `docker://<id>` in their status.
fn as_docker(mut pod: Value) -> Value {
    for s in pod["status"]["containerStatuses"].as_array_mut().unwrap() {
        let id = s["containerID"]
            .as_str()
            .unwrap()
            .replace("containerd://", "docker://");
        s["containerID"] = Value::String(id);
    }
    pod
}

/// The capabilities the chart gives the agent by default: the `securityContext.capabilityMode`
/// of values.yaml, and that mode's list in `templates/_helpers.tpl` (`sonde.capabilities`).
fn chart_capabilities() -> Vec<String> {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../helm/sonde");
    let values = fs::read_to_string(chart.join("values.yaml")).unwrap();
    let mode = values
        .lines()
        .find_map(|l| l.trim().strip_prefix("capabilityMode:"))
        .map(|m| m.trim().to_owned())
        .expect("securityContext.capabilityMode in values.yaml");
    let helpers = fs::read_to_string(chart.join("templates/_helpers.tpl")).unwrap();
    let mut lines = helpers.lines();
    lines
        .find(|l| l.contains(&format!("eq $mode \"{mode}\"")))
        .unwrap_or_else(|| panic!("capabilityMode {mode} in _helpers.tpl"));
    let list = lines.next().expect("the mode's list");
    let caps: Vec<String> = list
        .split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect();
    assert!(
        caps.len() >= 4,
        "capabilities of mode {mode}: {caps:?} from {list}"
    );
    caps
}

#[test]
fn fake_apiserver_agent_image_runs_in_docker_with_the_charts_capabilities() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = root.join("target/x86_64-unknown-linux-musl/debug/sonde");
    assert!(
        binary.exists(),
        "{} missing: `cargo xtask test` builds it (cargo build -p sonde --target x86_64-unknown-linux-musl)",
        binary.display()
    );
    let docker = Dockerd::start();
    // The agent image, from the repository's Dockerfile (context: the static binary alone).
    let ctx = docker.dir.join("agent");
    fs::create_dir_all(&ctx).unwrap();
    fs::copy(&binary, ctx.join("sonde")).unwrap();
    docker.docker(&[
        "build",
        "-q",
        "-t",
        "sonde-agent:test",
        "-f",
        root.join("Dockerfile").to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    let image = busybox_image(&docker);
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server_id = docker.docker(&[
        "run",
        "-d",
        "--network",
        "host",
        image,
        "httpd",
        "-f",
        "-p",
        &listen,
        "-h",
        "/www",
    ]);
    let client_id = docker.docker(&["run", "-d", "--network", "host", image, "sleep", "3600"]);
    wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)));

    let api = FakeApi::start("image", 1.0);
    // The kubeconfig as the agent's container sees it (the test's directory mounted at /kube).
    let kc = fs::read_to_string(&api.kubeconfig).unwrap().replace(
        &api.dir.join("ca.pem").display().to_string(),
        "/kube/ca.pem",
    );
    fs::write(api.dir.join("kubeconfig.container"), kc).unwrap();
    api.namespace("shop", None);
    let (web, probe) = ("api-5f7d8c6b9f-q8w2e", "probe-x1");
    api.post(
        "/fake/pods",
        as_docker(pod(
            "u-web",
            "shop",
            web,
            NODE,
            Some(("ReplicaSet", "api-5f7d8c6b9f")),
            json!({}),
            json!({}),
            &[("httpd", &server_id)],
        )),
    );
    api.post(
        "/fake/pods",
        as_docker(pod(
            "u-probe",
            "shop",
            probe,
            NODE,
            None,
            json!({}),
            json!({}),
            &[("wget", &client_id)],
        )),
    );

    // The agent, as the chart runs it: the chart's capabilities and nothing else, host pid
    // namespace, the node's cgroup v2 tree at /host/cgroup, tracefs.
    let metrics = free_port();
    let cgroup_root = sonde::cgroup::v2_mount().unwrap();
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--network",
        "host",
        "--pid",
        "host",
        "--cap-drop",
        "ALL",
    ]
    .map(String::from)
    .to_vec();
    // Debian's Docker 20.10 does not know CAP_BPF and CAP_PERFMON (moby learned them in 25);
    // CAP_SYS_ADMIN, which the chart also grants, still implies both on 5.8+ kernels. Kubernetes
    // runtimes (containerd 1.5+, CRI-O) take the chart's list as it is.
    // A capability this test's own bounding set lacks cannot be granted either (our machines
    // run without CAP_SYS_RESOURCE; sonde then lives with the memlock limit it has).
    let bounding = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|h| u64::from_str_radix(h.trim(), 16).unwrap())
        .unwrap();
    for c in chart_capabilities() {
        let bit = match c.as_str() {
            "DAC_READ_SEARCH" => 2,
            "NET_ADMIN" => 12,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("the test does not know capability {other}"),
        };
        if matches!(c.as_str(), "BPF" | "PERFMON") {
            eprintln!("k8s: agent container without CAP_{c} (Docker 20.10 does not know it)");
            continue;
        }
        if bounding & (1 << bit) == 0 {
            eprintln!("k8s: agent container without CAP_{c} (not in this machine's bounding set)");
            continue;
        }
        args.extend(["--cap-add".into(), c]);
    }
    args.extend(
        [
            "--security-opt",
            "seccomp=unconfined",
            "--security-opt",
            "apparmor=unconfined",
            "--read-only",
            "-v",
            &format!("{}:/host/cgroup:ro", cgroup_root.display()),
            "-v",
            "/sys/kernel/tracing:/sys/kernel/tracing",
            "-v",
            &format!("{}:/kube", api.dir.display()),
            "-e",
            "SONDE_KUBERNETES=1",
            "-e",
            &format!("SONDE_NODE_NAME={NODE}"),
            "-e",
            "SONDE_NAMESPACE=sonde",
            "-e",
            "SONDE_CGROUP_ROOT=/host/cgroup",
            "-e",
            &format!("SONDE_METRICS_ADDRESS=127.0.0.1:{metrics}"),
            "-e",
            "SONDE_KUBECONFIG=/kube/kubeconfig.container",
            "-e",
            "OTEL_BSP_SCHEDULE_DELAY=100",
            "sonde-agent:test",
            "run",
            "--output",
            "jsonl",
            "--output-file",
            "/kube/spans.jsonl",
            "--query-allow",
            "step",
        ]
        .map(String::from),
    );
    let agent = docker.docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let logs = || {
        Command::new("/usr/bin/docker")
            .args(["-H", &docker.sock, "logs", &agent])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stderr).into_owned()
                    + &String::from_utf8_lossy(&o.stdout)
            })
            .unwrap_or_default()
    };
    let sonde = Sonde {
        _child: None,
        metrics,
        out: api.dir.join("spans.jsonl"),
        log: api.dir.join("agent.log"),
    };
    let started = Instant::now();
    while Instant::now() < started + secs(60) && !logs().contains("tracing the pods") {
        std::thread::sleep(Duration::from_millis(100));
    }
    fs::write(&sonde.log, logs()).unwrap();
    assert!(
        logs().contains("tracing the pods"),
        "the agent container did not start:\n{}",
        logs()
    );
    eprintln!(
        "k8s: agent container tracing {:?} after docker run",
        started.elapsed()
    );
    wait_traced(&sonde, &[web, probe], true, "default-policy");
    let traffic = |step: &str| {
        docker.docker(&[
            "exec",
            &client_id,
            "/bin/busybox",
            "wget",
            "-q",
            "-O",
            "/dev/null",
            &format!("http://{listen}/hello?step={step}"),
        ]);
    };
    traffic("one");
    wait_until("spans from the agent container", secs(10), || {
        let (s, c) = step(&sonde.out, "one");
        s.len() == 1 && c.len() == 1
    });
    let (server, client) = step(&sonde.out, "one");
    assert_resource(
        &server[0].0,
        &[
            ("service.name", "api"),
            ("k8s.pod.name", web),
            ("k8s.deployment.name", "api"),
            ("k8s.container.name", "httpd"),
            ("container.id", &server_id),
        ],
    );
    // No owner, no label: the container's name.
    assert_resource(
        &client[0].0,
        &[("service.name", "wget"), ("k8s.pod.name", probe)],
    );
    // traceparent injection works with these capabilities: one trace across the containers.
    assert_eq!(server[0].1["traceId"], client[0].1["traceId"]);
    toggle_namespace(&api, &sonde, &[web, probe], &traffic);
    fs::write(&sonde.log, logs()).unwrap();
}
