//! `sonde run`'s configuration resolved in one place: file < environment < flags, into one
//! [`RunPlan`], with errors that name the field and the fix.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use sonde_export::config::{ExportConfig, ExportFileConfig};
use sonde_proto::{Decision, MAX_CAPTURE};
use sonde_protocol::route::RoutePattern;

use super::RunArgs;
use crate::{
    capture::CaptureConfig,
    cgroup,
    config::{ConfigFileError, FileConfig, OutputFormat},
    privacy::{Policy, PrivacyError},
    probes::{FilterSpec, ProbeConfig},
    sampling::{SamplingConfig, SamplingError},
    span::HttpConfig,
};

/// The smallest parser-state budget accepted.
const MIN_STATE_BUDGET: usize = 1 << 20;

/// Errors in command-line values: what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("--capture-bytes {0} is above {MAX_CAPTURE}; choose 0..={MAX_CAPTURE}")]
    CaptureBytes(u32),
    #[error("--cgroup {arg}: {why}")]
    Cgroup { arg: String, why: String },
    #[error("--duration {0} must be a positive number of seconds")]
    Duration(f64),
    #[error("--route {pattern}: {why}")]
    Route { pattern: String, why: String },
    #[error(
        "--metrics-address {0}: expected IP:PORT such as 127.0.0.1:9464, or \"\" to turn it off"
    )]
    MetricsAddress(String),
    #[error(transparent)]
    File(#[from] ConfigFileError),
    #[error("OTLP exporter: {0}")]
    Export(#[from] sonde_export::config::ConfigError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error(transparent)]
    Privacy(#[from] PrivacyError),
    #[error("OTEL_METRIC_EXPORT_INTERVAL={0}: expected milliseconds, e.g. 60000")]
    MetricInterval(String),
    #[error(
        "--output otlp needs a collector: set OTEL_EXPORTER_OTLP_ENDPOINT, --otlp-endpoint or \
         [export.otlp] endpoint"
    )]
    NoEndpoint,
    #[error(
        "--kubernetes needs this node's name: set SONDE_NODE_NAME (the chart sets it from \
         spec.nodeName with the downward API), --node-name, or [kubernetes] node_name"
    )]
    NoNodeName,
    #[error(
        "--kubernetes needs a cgroup v2 hierarchy (the kernel filter and pod lookup use cgroup \
         v2 ids) and none is mounted; mount one (`mount -t cgroup2 none /sys/fs/cgroup/unified`) \
         or name the node's in SONDE_CGROUP_ROOT"
    )]
    NoCgroupRoot,
    #[error("SONDE_CGROUP_ROOT {0}: not a directory; name the node's cgroup v2 mount")]
    CgroupRoot(PathBuf),
    #[error("[kubernetes] max_pods {0} must be at least 1")]
    MaxPods(usize),
    #[error(
        "[capture] state_budget_bytes {0} is below {MIN_STATE_BUDGET} (1 MiB): connections would \
         lose their parser state all the time; the default is 64 MiB"
    )]
    StateBudget(usize),
    #[error("--ui {0}: expected IP:PORT such as 127.0.0.1:9465 ([ui] address)")]
    UiAddress(String),
    #[error(
        "--ui {0} is not a loopback address: every host that reaches it would see this node's \
         traces; use 127.0.0.1:PORT, or pass --ui-public ([ui] public = true) to expose it on purpose"
    )]
    UiNotLoopback(SocketAddr),
    #[error("[ui] {field} {value} must be at least 1")]
    UiLimit { field: &'static str, value: usize },
    #[error("--ui shows spans and --output debug makes none: choose console, jsonl, otlp or none")]
    UiDebugOutput,
}

/// The trace view's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct UiPlan {
    pub address: SocketAddr,
    pub limits: sonde_export::ui::store::Limits,
}

/// Resolves the trace view: `flag` is `--ui` (`Some("")` without an address), `public`
/// `--ui-public`; the file's `[ui]` section under them.
pub fn ui_plan(
    flag: Option<&str>,
    public: bool,
    file: &crate::config::UiSection,
) -> Result<Option<UiPlan>, ArgError> {
    if flag.is_none() && !file.enabled.unwrap_or(false) {
        return Ok(None);
    }
    let text = flag
        .filter(|a| !a.trim().is_empty())
        .or(file.address.as_deref())
        .unwrap_or("127.0.0.1:9465");
    let address = text
        .trim()
        .parse::<SocketAddr>()
        .map_err(|_| ArgError::UiAddress(text.to_owned()))?;
    if !(address.ip().is_loopback() || public || file.public.unwrap_or(false)) {
        return Err(ArgError::UiNotLoopback(address));
    }
    let mut limits = sonde_export::ui::store::Limits::default();
    for (field, value, slot) in [
        ("max_traces", file.max_traces, &mut limits.traces),
        ("max_spans", file.max_spans, &mut limits.spans),
    ] {
        match value {
            Some(0) => return Err(ArgError::UiLimit { field, value: 0 }),
            Some(n) => *slot = n,
            None => {}
        }
    }
    Ok(Some(UiPlan { address, limits }))
}

/// Everything `sonde run` needs, resolved from file, environment and flags.
pub struct RunPlan {
    pub capture: CaptureConfig,
    pub http: HttpConfig,
    pub output: OutputFormat,
    pub output_file: Option<PathBuf>,
    pub full_ids: bool,
    pub metrics: Option<SocketAddr>,
    /// The metrics address was chosen explicitly (a bind failure is then an error).
    pub metrics_explicit: bool,
    /// `/targets` answers other hosts too.
    pub targets_public: bool,
    pub export: Option<ExportConfig>,
    pub sampling: SamplingConfig,
    pub privacy: Policy,
    /// Span metrics on, and their OTLP push interval.
    pub span_metrics: Option<Duration>,
    /// Kubernetes node mode, when asked for.
    pub kubernetes: Option<crate::k8s::KubePlan>,
    /// The trace view, when asked for.
    pub ui: Option<UiPlan>,
}

impl RunArgs {
    /// Resolves the configuration: file < environment < flags.
    pub fn plan(&self, env: impl Fn(&str) -> Option<String>) -> Result<RunPlan, ArgError> {
        let file = match &self.config {
            Some(p) => FileConfig::load(p)?,
            None => FileConfig::default(),
        };
        let capture_bytes = self
            .capture_bytes
            .or(file.capture.capture_bytes)
            .unwrap_or(sonde_proto::DEFAULT_CAPTURE);
        if capture_bytes as usize > MAX_CAPTURE {
            return Err(ArgError::CaptureBytes(capture_bytes));
        }
        if let Some(d) = self.duration
            && !(d > 0.0 && d.is_finite())
        {
            return Err(ArgError::Duration(d));
        }
        let mut cgroups = Vec::new();
        for arg in self.cgroups.iter().chain(&file.capture.cgroups) {
            let dir = cgroup::resolve(arg).map_err(|why| ArgError::Cgroup {
                arg: arg.clone(),
                why,
            })?;
            let id = cgroup::id_of(&dir).map_err(|e| ArgError::Cgroup {
                arg: arg.clone(),
                why: e.to_string(),
            })?;
            cgroups.push((id, Decision::Trace));
        }
        let trace_pids: Vec<u32> = self
            .pids
            .iter()
            .chain(&file.capture.pids)
            .copied()
            .collect();
        let mut pids: Vec<(u32, Decision)> =
            trace_pids.iter().map(|&p| (p, Decision::Trace)).collect();
        pids.extend(
            self.exclude_pids
                .iter()
                .chain(&file.capture.exclude_pids)
                .map(|&p| (p, Decision::Ignore)),
        );
        let kubernetes = self.kube_plan(&file.kubernetes, &env)?;
        // In Kubernetes mode only pods are traced: the toggle controller adds their cgroups.
        let selective = !trace_pids.is_empty() || !cgroups.is_empty() || kubernetes.is_some();
        let (env_ratio, env_parent) = crate::sampling::from_otel_env(
            env("OTEL_TRACES_SAMPLER").as_deref(),
            env("OTEL_TRACES_SAMPLER_ARG").as_deref(),
        )?;
        let sampling = SamplingConfig::resolve(
            &file.sampling,
            self.sampling_ratio.or(env_ratio),
            env_parent,
        )?;
        let privacy = Policy::new(&file.privacy)?;
        let interval = match env("OTEL_METRIC_EXPORT_INTERVAL") {
            Some(v) => Duration::from_millis(
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .ok_or(ArgError::MetricInterval(v))?,
            ),
            None => file.span_metrics.export_interval_ms.map_or(
                sonde_export::metrics::push::DEFAULT_INTERVAL,
                Duration::from_millis,
            ),
        };
        let span_metrics = file
            .span_metrics
            .enabled
            .unwrap_or(true)
            .then_some(interval);
        let capture = CaptureConfig {
            probes: ProbeConfig {
                capture_bytes,
                ring_buffer_bytes: self
                    .ring_buffer_bytes
                    .or(file.capture.ring_buffer_bytes)
                    .unwrap_or(16 * 1024 * 1024),
                filter: FilterSpec {
                    default: if selective {
                        Decision::Ignore
                    } else {
                        Decision::Trace
                    },
                    pids,
                    cgroups,
                },
                sample_threshold: sampling.kernel_threshold(),
                ..ProbeConfig::default()
            },
            ..CaptureConfig::default()
        };

        let mut route_patterns = Vec::new();
        for p in self.routes.iter().chain(&file.http.routes) {
            route_patterns.push(RoutePattern::parse(p).map_err(|e| ArgError::Route {
                pattern: p.clone(),
                why: e.to_string(),
            })?);
        }
        let http = HttpConfig {
            route_patterns,
            query_allowlist: self
                .query_allow
                .iter()
                .chain(&file.http.query_allowlist)
                .cloned()
                .collect(),
            capture_request_headers: privacy.request_headers.clone(),
            capture_response_headers: privacy.response_headers.clone(),
            root_sampler: sampling.root_sampler(),
            raw_query_services: privacy.raw_query_services.clone(),
            state_budget_bytes: match file.capture.state_budget_bytes {
                Some(n) if n < MIN_STATE_BUDGET => return Err(ArgError::StateBudget(n)),
                n => n,
            },
        };

        // Exporter: file < OTEL_* environment < flags.
        let env_layer = ExportFileConfig::from_env(&env)?;
        let cli_layer = ExportFileConfig {
            endpoint: self.otlp_endpoint.clone(),
            // The flags take the environment variables' syntax: parse them the same way.
            protocol: match &self.otlp_protocol {
                Some(p) => {
                    ExportFileConfig::from_env(|n| {
                        (n == "OTEL_EXPORTER_OTLP_PROTOCOL").then(|| p.clone())
                    })?
                    .protocol
                }
                None => None,
            },
            compression: match &self.otlp_compression {
                Some(c) => {
                    ExportFileConfig::from_env(|n| {
                        (n == "OTEL_EXPORTER_OTLP_COMPRESSION").then(|| c.clone())
                    })?
                    .compression
                }
                None => None,
            },
            ..ExportFileConfig::default()
        };
        let file_layer = file.export.otlp.clone().unwrap_or_default();
        let endpoint_given = [&file_layer, &env_layer, &cli_layer]
            .iter()
            .any(|l| l.endpoint.is_some() || l.traces_endpoint.is_some());
        let layer = file_layer.merge(env_layer).merge(cli_layer);
        let output = self
            .output
            .or(file.output.format)
            .unwrap_or(if endpoint_given {
                OutputFormat::Otlp
            } else {
                OutputFormat::Console
            });
        if output == OutputFormat::Otlp && !endpoint_given {
            return Err(ArgError::NoEndpoint);
        }
        let mut export = ExportConfig::resolve(layer)?;
        export.scope_version = env!("CARGO_PKG_VERSION").to_owned();

        let metrics_arg = self
            .metrics_address
            .clone()
            .or(file.metrics.address.clone());
        let metrics_explicit = metrics_arg.is_some();
        let metrics = match metrics_arg.as_deref() {
            Some("") => None,
            Some(a) => Some(
                a.parse::<SocketAddr>()
                    .map_err(|_| ArgError::MetricsAddress(a.to_owned()))?,
            ),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        };
        let ui = ui_plan(self.ui.as_deref(), self.ui_public, &file.ui)?;
        if ui.is_some() && output == OutputFormat::Debug {
            return Err(ArgError::UiDebugOutput);
        }
        Ok(RunPlan {
            ui,
            capture,
            http,
            output,
            output_file: self.output_file.clone().or(file.output.file.clone()),
            full_ids: self.full_ids || file.output.full_ids.unwrap_or(false),
            metrics,
            metrics_explicit,
            targets_public: self.targets_public || file.metrics.targets_public.unwrap_or(false),
            export: Some(export),
            sampling,
            privacy,
            span_metrics,
            kubernetes,
        })
    }

    /// The Kubernetes settings: file < environment (SONDE_*, read by clap for flags) < flags.
    fn kube_plan(
        &self,
        file: &crate::config::KubernetesSection,
        env: &impl Fn(&str) -> Option<String>,
    ) -> Result<Option<crate::k8s::KubePlan>, ArgError> {
        if !(self.kubernetes || file.enabled.unwrap_or(false)) {
            return Ok(None);
        }
        let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        let node = non_empty(self.node_name.clone())
            .or_else(|| non_empty(env("SONDE_NODE_NAME")))
            .or_else(|| non_empty(file.node_name.clone()))
            .ok_or(ArgError::NoNodeName)?;
        let own_namespace = non_empty(self.own_namespace.clone())
            .or_else(|| non_empty(env("SONDE_NAMESPACE")))
            .or_else(|| non_empty(file.namespace.clone()));
        let cgroup_root = cgroup::v2_mount().ok_or(ArgError::NoCgroupRoot)?;
        if !cgroup_root.is_dir() {
            return Err(ArgError::CgroupRoot(cgroup_root));
        }
        let mut limits = crate::k8s::store::StoreLimits::default();
        if let Some(n) = file.max_pods {
            if n == 0 {
                return Err(ArgError::MaxPods(n));
            }
            limits.max_pods = n;
        }
        Ok(Some(crate::k8s::KubePlan {
            node,
            cluster: non_empty(self.cluster_name.clone())
                .or_else(|| non_empty(file.cluster_name.clone())),
            policy: crate::k8s::TogglePolicy::new(
                self.default_policy
                    .or(file.default_policy)
                    .unwrap_or_default(),
                own_namespace.as_deref(),
            ),
            kubeconfig: self.kubeconfig.clone().or(file.kubeconfig.clone()),
            cgroup_root,
            limits,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn output_defaults_follow_the_exporter_configuration() {
        let args = RunArgs::default();
        assert_eq!(args.plan(env(&[])).unwrap().output, OutputFormat::Console);
        let p = args
            .plan(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://127.0.0.1:4317",
            )]))
            .unwrap();
        assert_eq!(p.output, OutputFormat::Otlp);
        assert_eq!(
            p.export.unwrap().endpoint.to_string(),
            "http://127.0.0.1:4317/"
        );
        let p = args
            .plan(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap();
        assert_eq!(
            p.export.unwrap().endpoint.to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(p.metrics, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn configuration_errors_name_the_field_and_the_fix() {
        let args = RunArgs {
            output: Some(OutputFormat::Otlp),
            ..RunArgs::default()
        };
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{e}");
        let e = RunArgs::default()
            .plan(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_PROTOCOL=carrier-pigeon"),
            "{e}"
        );
        assert!(e.contains("grpc"), "{e}");
        let e = RunArgs {
            capture_bytes: Some(1 << 20),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--capture-bytes") && e.contains("16384"), "{e}");
        let e = RunArgs {
            routes: vec!["users/{id}".into()],
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.starts_with("--route users/{id}"), "{e}");
        let e = RunArgs {
            metrics_address: Some("localhost".into()),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("127.0.0.1:9464"), "{e}");
    }

    #[test]
    fn sampling_ratio_from_flag_env_or_file_reaches_the_kernel() {
        let p = RunArgs::default().plan(env(&[])).unwrap();
        assert_eq!(p.capture.probes.sample_threshold, sonde_proto::SAMPLE_ALL);
        assert!(p.sampling.parent_based);
        let p = RunArgs::default()
            .plan(env(&[
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]))
            .unwrap();
        assert_eq!(p.sampling.ratio, 0.25);
        assert_eq!(p.capture.probes.sample_threshold, 1 << 61);
        let p = RunArgs {
            sampling_ratio: Some(0.5),
            ..RunArgs::default()
        }
        .plan(env(&[("OTEL_TRACES_SAMPLER", "always_off")]))
        .unwrap();
        assert_eq!(p.capture.probes.sample_threshold, 1 << 62, "the flag wins");
        assert!(!p.sampling.parent_based);
        let e = RunArgs {
            sampling_ratio: Some(1.5),
            ..RunArgs::default()
        }
        .plan(env(&[]))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("--sampling-ratio = 1.5"), "{e}");
        let e = RunArgs::default()
            .plan(env(&[("OTEL_METRIC_EXPORT_INTERVAL", "soon")]))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("OTEL_METRIC_EXPORT_INTERVAL=soon"), "{e}");
    }

    #[test]
    fn file_then_environment_then_flags() {
        let dir = std::env::temp_dir().join(format!("sonde-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sonde.toml");
        std::fs::write(
            &file,
            "[capture]\ncapture_bytes = 1000\n[metrics]\naddress = \"\"\n\
             [export.otlp]\nendpoint = \"http://file:4317\"\ncompression = \"gzip\"\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        let p = args.plan(env(&[])).unwrap();
        assert_eq!(p.capture.probes.capture_bytes, 1000);
        assert_eq!(p.metrics, None);
        assert_eq!(p.output, OutputFormat::Otlp);
        let e = p.export.unwrap();
        assert_eq!(e.endpoint.to_string(), "http://file:4317/");
        // The environment wins over the file, flags over both.
        let p = args
            .plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]))
            .unwrap();
        assert_eq!(p.export.unwrap().endpoint.to_string(), "http://env:4317/");
        let p = RunArgs {
            otlp_endpoint: Some("http://flag:4317".into()),
            capture_bytes: Some(2000),
            ..args.clone()
        }
        .plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4317")]))
        .unwrap();
        assert_eq!(p.export.unwrap().endpoint.to_string(), "http://flag:4317/");
        assert_eq!(p.capture.probes.capture_bytes, 2000);
        std::fs::write(&file, "[capture]\ncapture_bites = 1\n").unwrap();
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(
            e.contains("capture_bites") && e.contains("sonde.toml"),
            "{e}"
        );
        std::fs::write(&file, "[capture]\nstate_budget_bytes = 33554432\n").unwrap();
        let p = args.plan(env(&[])).unwrap();
        assert_eq!(p.http.state_budget_bytes, Some(32 << 20));
        std::fs::write(&file, "[capture]\nstate_budget_bytes = 1000\n").unwrap();
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(e.contains("state_budget_bytes 1000"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn kubernetes_settings_from_file_environment_and_flags() {
        let plan = |args: &RunArgs, vars: &[(&str, &str)]| {
            args.plan(env(vars))
                .map(|p| p.kubernetes)
                .map_err(|e| e.to_string())
        };
        assert_eq!(plan(&RunArgs::default(), &[]).unwrap(), None);
        let on = RunArgs {
            kubernetes: true,
            ..RunArgs::default()
        };
        let e = plan(&on, &[]).unwrap_err();
        assert!(
            e.contains("SONDE_NODE_NAME") && e.contains("--node-name"),
            "{e}"
        );
        let Ok(Some(k)) = plan(
            &on,
            &[("SONDE_NODE_NAME", "n1"), ("SONDE_NAMESPACE", "obs")],
        ) else {
            // No cgroup v2 here: the error says how to get one.
            let e = plan(&on, &[("SONDE_NODE_NAME", "n1")]).unwrap_err();
            assert!(e.contains("cgroup v2"), "{e}");
            return;
        };
        assert_eq!(k.node, "n1");
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::AllExceptSystem);
        assert_eq!(k.policy.system_namespaces, vec!["kube-system", "obs"]);
        // Only pods are traced: nothing by default, the toggle adds cgroups.
        let p = on.plan(env(&[("SONDE_NODE_NAME", "n1")])).unwrap();
        assert_eq!(p.capture.probes.filter.default, Decision::Ignore);

        let dir = std::env::temp_dir().join(format!("sonde-cli-k8s-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("sonde.toml");
        std::fs::write(
            &file,
            "[kubernetes]\nenabled = true\nnode_name = \"from-file\"\ncluster_name = \"c\"\n\
             default_policy = \"opt-in\"\nmax_pods = 10\n",
        )
        .unwrap();
        let args = RunArgs {
            config: Some(file.clone()),
            ..RunArgs::default()
        };
        let k = plan(&args, &[]).unwrap().unwrap();
        assert_eq!(
            (k.node.as_str(), k.cluster.as_deref(), k.limits.max_pods),
            ("from-file", Some("c"), 10)
        );
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::OptIn);
        // Flags win over the environment, which wins over the file.
        let k = plan(&args, &[("SONDE_NODE_NAME", "from-env")])
            .unwrap()
            .unwrap();
        assert_eq!(k.node, "from-env");
        let flags = RunArgs {
            node_name: Some("from-flag".into()),
            default_policy: Some(crate::k8s::DefaultPolicy::AllExceptSystem),
            ..args.clone()
        };
        let k = plan(&flags, &[("SONDE_NODE_NAME", "from-env")])
            .unwrap()
            .unwrap();
        assert_eq!(k.node, "from-flag");
        assert_eq!(k.policy.default, crate::k8s::DefaultPolicy::AllExceptSystem);
        std::fs::write(&file, "[kubernetes]\nenabled = true\nmax_pods = 0\n").unwrap();
        let e = plan(&args, &[("SONDE_NODE_NAME", "n")]).unwrap_err();
        assert!(e.contains("max_pods 0"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_trace_view_is_loopback_unless_made_public() {
        use crate::config::UiSection;
        let none = UiSection::default();
        assert_eq!(ui_plan(None, false, &none).unwrap(), None);
        let on = ui_plan(Some(""), false, &none).unwrap().unwrap();
        assert_eq!(on.address, "127.0.0.1:9465".parse().unwrap());
        assert_eq!(on.limits, sonde_export::ui::store::Limits::default());
        let file = UiSection {
            enabled: Some(true),
            address: Some("[::1]:7000".into()),
            max_traces: Some(50),
            ..UiSection::default()
        };
        let p = ui_plan(None, false, &file).unwrap().unwrap();
        assert_eq!(p.address, "[::1]:7000".parse().unwrap());
        assert_eq!(p.limits.traces, 50);
        // The flag's address wins over the file's.
        let p = ui_plan(Some("127.0.0.2:7001"), false, &file)
            .unwrap()
            .unwrap();
        assert_eq!(p.address, "127.0.0.2:7001".parse().unwrap());
        let e = ui_plan(Some("0.0.0.0:9465"), false, &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--ui-public") && e.contains("[ui] public"),
            "{e}"
        );
        assert!(ui_plan(Some("0.0.0.0:9465"), true, &none).is_ok());
        let public = UiSection {
            public: Some(true),
            ..UiSection::default()
        };
        assert!(ui_plan(Some("0.0.0.0:9465"), false, &public).is_ok());
        let e = ui_plan(Some("localhost"), false, &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected IP:PORT"), "{e}");
        let zero = UiSection {
            max_spans: Some(0),
            ..UiSection::default()
        };
        let e = ui_plan(Some(""), false, &zero).unwrap_err().to_string();
        assert!(e.contains("[ui] max_spans 0"), "{e}");
        let args = RunArgs {
            ui: Some(String::new()),
            output: Some(OutputFormat::Debug),
            ..RunArgs::default()
        };
        let e = args.plan(env(&[])).err().unwrap().to_string();
        assert!(e.contains("--output debug"), "{e}");
    }
}
