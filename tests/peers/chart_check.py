"""Checks the Helm chart with the real Helm v4 library (helm-python-sdk) and the Kubernetes
schemas (kubernetes-validate --strict): lint strict, render with default and non-default values,
assert what the manifests say, and that the values schema rejects bad values.

Usage: chart_check.py CHART_DIR OUT_DIR. Prints one JSON line with the checks made; exits 1 with
the failure otherwise.
"""

import json
import os
import subprocess
import sys

import helm_python as helm
import yaml

CHART, OUT = sys.argv[1], sys.argv[2]
KUBE_VERSION = "1.33.0"
checks = []


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks.append(what)


def docs(manifests):
    out = {}
    for path, text in manifests.items():
        if not path.endswith(".yaml"):
            continue
        for d in yaml.safe_load_all(text):
            if d:
                out[(d["kind"], d["metadata"]["name"])] = d
    return out


def validate(name, manifests):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    files = []
    resources = 0
    for path, text in manifests.items():
        if not path.endswith(".yaml") or not text.strip():
            continue
        resources += sum(1 for doc in yaml.safe_load_all(text) if doc)
        f = os.path.join(d, path.replace("/", "_"))
        with open(f, "w") as fh:
            fh.write(text)
        files.append(f)
    exe = os.path.join(os.path.dirname(sys.executable), "kubernetes-validate")
    r = subprocess.run(
        [exe, "--strict", "-k", KUBE_VERSION, *files], capture_output=True, text=True
    )
    check(r.returncode == 0, f"kubernetes-validate --strict {name}: {r.stdout}{r.stderr}")
    passed = r.stdout.count(" passed for resource ")
    check(resources > 0 and passed == resources, f"every {name} resource passed: {r.stdout}")


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


def main():
    chart = helm.Chart.load(CHART)
    check(chart.name == "sonde", "chart name")

    # Lint, strict (warnings are failures), default and non-default values.
    nondefault = {
        "clusterName": "prod-eu",
        "tracing": {"defaultPolicy": "opt-in", "inject": False, "captureBytes": 8192},
        "otlp": {
            "endpoint": "https://collector.observability:4317",
            "protocol": "grpc",
            "compression": "none",
            "headersSecret": "otlp-auth",
            "tls": {"secretName": "otlp-tls", "mutual": True},
        },
        "securityContext": {"privileged": True},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
        "nodeSelector": {"pool": "apps"},
        "priorityClassName": "system-node-critical",
        "image": {"repository": "registry.local/sonde", "tag": "dev", "pullPolicy": "Never"},
        "metrics": {"port": 9500, "service": {"enabled": True}},
        "ui": {"enabled": True, "port": 9470},
    }
    for name, values in [("default", None), ("non-default", nondefault)]:
        report = helm.lint(CHART, values, strict=True, namespace="sonde", kube_version="v" + KUBE_VERSION)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        check(not bad and not report.get("errors"), f"helm lint --strict {name}: {report}")

    # Defaults.
    m = chart.render(None, name="sonde", namespace="sonde", is_install=True)
    validate("default", m)
    d = docs(m)
    ds = d[("DaemonSet", "sonde")]
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    check(pod["hostPID"] is True, "hostPID")
    check(pod["serviceAccountName"] == "sonde", "service account")
    sc = c["securityContext"]
    check(sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False, "not privileged by default")
    check(sc["capabilities"]["drop"] == ["ALL"], "drops every capability")
    standard = ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"]
    check(sc["capabilities"]["add"] == standard, f"the standard capabilities by default: {sc['capabilities']}")
    check("SYS_RESOURCE" not in sc["capabilities"]["add"], "no SYS_RESOURCE by default (kernels 5.11+ do not charge RLIMIT_MEMLOCK)")
    env = env_of(c)
    check(env["SONDE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName", "node name from the downward API")
    check(env["SONDE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "own namespace")
    check(env["SONDE_KUBERNETES"]["value"] == "1", "kubernetes mode")
    check(env["SONDE_DEFAULT_POLICY"]["value"] == "all-except-system", "default policy")
    check(env["SONDE_METRICS_ADDRESS"]["value"] == "0.0.0.0:9464", "metrics on the pod IP")
    check(c["args"] == ["run"], f"no trace view by default: {c['args']}")
    check("OTEL_EXPORTER_OTLP_ENDPOINT" not in env and "SONDE_NO_INJECT" not in env, "no exporter by default")
    check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", "liveness on /healthz")
    check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
    mounts = {v["name"]: v["mountPath"] for v in c["volumeMounts"]}
    check(mounts["cgroup"] == env["SONDE_CGROUP_ROOT"]["value"], "the cgroup root sonde is told is mounted")
    vols = {v["name"]: v for v in pod["volumes"]}
    check(vols["cgroup"]["hostPath"]["path"] == "/sys/fs/cgroup", "host cgroup tree")
    check(pod["tolerations"] == [{"operator": "Exists"}], "tolerates every taint")
    check(ds["spec"]["template"]["metadata"]["annotations"]["sonde.dev/tracing"] == "disabled", "never traces itself")
    role = d[("ClusterRole", "sonde")]
    check(
        role["rules"] == [{"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["get", "list", "watch"]}],
        f"RBAC limited to get/list/watch pods and namespaces: {role['rules']}",
    )
    binding = d[("ClusterRoleBinding", "sonde")]
    check(binding["subjects"][0] == {"kind": "ServiceAccount", "name": "sonde", "namespace": "sonde"}, "binding")
    check(not any(k == "Service" for k, _ in d), "no Service by default")
    notes = m.get("sonde/templates/NOTES.txt", "")
    check("sonde.dev/tracing=disabled" in notes and "/targets" in notes, "NOTES say how to opt out and see targets")
    check("Capabilities (standard): " + ", ".join(standard) in notes, f"NOTES name the capabilities: {notes}")
    check("capabilityMode=legacy" in notes and "every namespace" in notes, "NOTES: the legacy switch and the cluster-wide pod read")

    # The capability switch: legacy for older kernels and runtimes, custom for an explicit list.
    def caps(values):
        m = chart.render(values, name="sonde", namespace="sonde")
        c = docs(m)[("DaemonSet", "sonde")]["spec"]["template"]["spec"]["containers"][0]
        return c["securityContext"], m
    sc, m = caps({"securityContext": {"capabilityMode": "minimal"}})
    validate("minimal", m)
    check(
        sc["capabilities"]["add"] == ["BPF", "PERFMON", "NET_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"],
        f"minimal: standard without SYS_ADMIN: {sc['capabilities']}",
    )
    sc, m = caps({"securityContext": {"capabilityMode": "legacy"}})
    validate("legacy", m)
    check(sc["capabilities"]["drop"] == ["ALL"] and sc["privileged"] is False, "legacy: still drops ALL, not privileged")
    check(
        sc["capabilities"]["add"] == ["SYS_ADMIN", "NET_ADMIN", "SYS_RESOURCE", "SYS_PTRACE", "DAC_READ_SEARCH"],
        f"legacy: SYS_ADMIN instead of BPF/PERFMON, SYS_RESOURCE for RLIMIT_MEMLOCK: {sc['capabilities']}",
    )
    sc, _ = caps({"securityContext": {"capabilityMode": "custom", "capabilities": ["BPF", "PERFMON", "NET_ADMIN"]}})
    check(sc["capabilities"]["add"] == ["BPF", "PERFMON", "NET_ADMIN"], f"custom: exactly the list: {sc['capabilities']}")
    try:
        caps({"securityContext": {"capabilityMode": "custom"}})
        check(False, "custom without a list is refused")
    except helm.HelmError as e:
        check("needs securityContext.capabilities" in str(e), f"custom without a list is refused, saying what to do: {e}")
    for name in ("values.yaml", "templates/clusterrole.yaml"):
        with open(os.path.join(CHART, name)) as fh:
            text = fh.read()
        check("cannot scope" in text, f"{name} says RBAC cannot scope pod reads to a node")
    with open(os.path.join(CHART, "values.yaml")) as fh:
        text = fh.read()
    for cap in standard + ["SYS_RESOURCE"]:
        check(f"#   {cap} " in text, f"values.yaml says why {cap} is needed")

    # Non-default values.
    m = chart.render(nondefault, name="tracer", namespace="observability", is_install=True)
    validate("non-default", m)
    d = docs(m)
    ds = d[("DaemonSet", "tracer-sonde")]
    pod = ds["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = env_of(c)
    check(c["image"] == "registry.local/sonde:dev" and c["imagePullPolicy"] == "Never", "image")
    check(c["securityContext"]["privileged"] is True and "capabilities" not in c["securityContext"], "privileged opt-in")
    check(env["SONDE_DEFAULT_POLICY"]["value"] == "opt-in", "opt-in policy")
    check(env["SONDE_CLUSTER_NAME"]["value"] == "prod-eu", "cluster name")
    check(env["SONDE_NO_INJECT"]["value"] == "1", "injection off")
    check(env["SONDE_CAPTURE_BYTES"]["value"] == "8192", "capture bytes")
    check(env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "https://collector.observability:4317", "endpoint")
    check(env["OTEL_EXPORTER_OTLP_COMPRESSION"]["value"] == "none", "compression")
    check(env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otlp-auth", "key": "headers"}, "headers secret")
    check(env["OTEL_EXPORTER_OTLP_CERTIFICATE"]["value"] == "/etc/sonde/otlp-tls/ca.crt", "TLS CA")
    check(env["OTEL_EXPORTER_OTLP_CLIENT_KEY"]["value"] == "/etc/sonde/otlp-tls/tls.key", "mTLS key")
    check({v["name"]: v for v in pod["volumes"]}["otlp-tls"]["secret"]["secretName"] == "otlp-tls", "TLS secret volume")
    check(pod["priorityClassName"] == "system-node-critical", "priority class")
    check(pod["nodeSelector"] == {"kubernetes.io/os": "linux", "pool": "apps"}, "node selector (merged with the default)")
    check(pod["tolerations"][0]["key"] == "dedicated", "tolerations")
    check(c["resources"]["limits"]["memory"] == "256Mi", "resources")
    check(c["ports"][0]["containerPort"] == 9500, "metrics port")
    check(c["args"] == ["run", "--ui", "127.0.0.1:9470"], f"the trace view on the pod's loopback: {c['args']}")
    check(len(c["ports"]) == 1, "the trace view's port is not exposed")
    svc = d[("Service", "tracer-sonde-metrics")]
    check(svc["spec"]["clusterIP"] == "None" and svc["spec"]["ports"][0]["port"] == 9500, "metrics Service")
    check(d[("ClusterRoleBinding", "tracer-sonde")]["subjects"][0]["namespace"] == "observability", "binding namespace")
    notes = m.get("sonde/templates/NOTES.txt", "")
    check("sonde.dev/tracing=enabled" in notes and "privileged" in notes, "opt-in NOTES")
    check("port-forward pod/<sonde pod on the node> 9470:9470" in notes, f"NOTES say how to open the trace view: {notes}")
    inline = chart.render({"otlp": {"endpoint": "http://c:4317", "headers": {"x-api-key": "k", "tenant": "t"}}}, name="s", namespace="s")
    env = env_of(docs(inline)[("DaemonSet", "s-sonde")]["spec"]["template"]["spec"]["containers"][0])
    check(env["OTEL_EXPORTER_OTLP_HEADERS"]["value"] == "tenant=t,x-api-key=k", "inline headers")

    # The schema rejects bad values, naming them.
    for bad, needle in [
        ({"tracing": {"defaultPolicy": "opt-out"}}, "defaultPolicy"),
        ({"tracing": {"captureBytes": 99999}}, "captureBytes"),
        ({"otlp": {"protocol": "carrier-pigeon"}}, "protocol"),
        ({"otlp": {"endpoint": "collector:4317"}}, "endpoint"),
        ({"securityContext": {"capabilities": ["ALL"]}}, "capabilities"),
        ({"securityContext": {"privileged": "yes"}}, "privileged"),
        ({"securityContext": {"capabilityMode": "maximal"}}, "capabilityMode"),
        ({"metrics": {"port": 0}}, "port"),
        ({"cgroupRoot": "sys/fs/cgroup"}, "cgroupRoot"),
        ({"tracingg": {}}, "tracingg"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ]:
        try:
            chart.validate_schema(bad)
            check(False, f"schema rejects {bad}")
        except helm.HelmValuesError as e:
            check(needle in str(e), f"schema rejects {bad} naming {needle}: {e}")
        try:
            chart.render(bad, name="sonde", namespace="sonde")
            check(False, f"render refuses {bad}")
        except helm.HelmError:
            checks.append(f"render refuses {bad}")
    chart.validate_schema(nondefault)
    checks.append("schema accepts the non-default values")
    print(json.dumps({"ok": True, "checks": len(checks), "helm_sdk": helm.helm_sdk_version()}))


main()
