//! Who is the service: resource attributes per traced process.
//!
//! `service.name` comes from the process's own `OTEL_SERVICE_NAME` (read from its environment,
//! as an SDK in that process would), then `service.name` in its `OTEL_RESOURCE_ATTRIBUTES`, then
//! the executable name. Facts are read from `/proc` once per process and cached until it execs
//! or exits; a process already gone falls back to the command name the kernel reported.

pub mod cmdline;
pub mod runtime;

use std::{collections::HashMap, fs, path::PathBuf, sync::Arc};

use sonde_model::{KeyValue, Resource};

/// Longest `process.command_line` kept (bytes); longer ones are cut and marked with `…`.
pub const MAX_COMMAND_LINE: usize = 1024;
/// Processes whose resource is cached at once; the cache is cleared when full.
const MAX_CACHED: usize = 16_384;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    pub pid: u32,
    pub executable_name: String,
    pub executable_path: Option<String>,
    pub command_line: Option<String>,
    pub service_name: String,
    /// Where `service_name` came from: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
    /// `executable`.
    pub service_name_source: &'static str,
}

/// Reads process facts from a procfs root.
pub struct ProcessCache {
    root: PathBuf,
    host_name: String,
    cache: HashMap<u32, Arc<Resource>>,
}

impl Default for ProcessCache {
    fn default() -> Self {
        Self::new("/proc", host_name())
    }
}

/// The host's name (`host.name`).
pub fn host_name() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// `OTEL_SERVICE_NAME`, else `service.name` of `OTEL_RESOURCE_ATTRIBUTES`, from a
/// NUL-separated environment block.
pub fn service_name_from_environ(environ: &[u8]) -> Option<(String, &'static str)> {
    let mut from_attrs = None;
    for var in environ.split(|&b| b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("OTEL_SERVICE_NAME=") {
            let v = v.trim();
            if !v.is_empty() {
                return Some((v.to_owned(), "OTEL_SERVICE_NAME"));
            }
        } else if let Some(attrs) = var.strip_prefix("OTEL_RESOURCE_ATTRIBUTES=") {
            for kv in attrs.split(',') {
                if let Some((k, v)) = kv.split_once('=')
                    && k.trim() == "service.name"
                    && !v.trim().is_empty()
                {
                    from_attrs = Some((percent_decode(v.trim()), "OTEL_RESOURCE_ATTRIBUTES"));
                }
            }
        }
    }
    from_attrs
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ProcessCache {
    pub fn new(root: impl Into<PathBuf>, host_name: String) -> Self {
        Self {
            root: root.into(),
            host_name,
            cache: HashMap::new(),
        }
    }

    /// Facts about `pid`; `comm` is what the kernel reported, used when /proc has nothing.
    pub fn facts(&self, pid: u32, comm: &str) -> ProcessFacts {
        let dir = self.root.join(pid.to_string());
        let exe_path = fs::read_link(dir.join("exe")).ok().map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_owned()
        });
        let exe_name = exe_path
            .as_deref()
            .and_then(|p| p.rsplit('/').next())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                fs::read_to_string(dir.join("comm"))
                    .ok()
                    .map(|s| s.trim_end().to_owned())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                if comm.is_empty() {
                    "unknown".into()
                } else {
                    comm.to_owned()
                }
            });
        let command_line = fs::read(dir.join("cmdline")).ok().and_then(|raw| {
            let args = raw
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>();
            if args.is_empty() {
                return None;
            }
            // Before the cut, so that a credential cut in two is still redacted.
            let mut s = cmdline::redact_args(&args).join(" ");
            if s.len() > MAX_COMMAND_LINE {
                let mut cut = MAX_COMMAND_LINE;
                while !s.is_char_boundary(cut) {
                    cut -= 1;
                }
                s.truncate(cut);
                s.push('…');
            }
            Some(s)
        });
        let (service_name, service_name_source) = fs::read(dir.join("environ"))
            .ok()
            .and_then(|env| service_name_from_environ(&env))
            .unwrap_or_else(|| (exe_name.clone(), "executable"));
        ProcessFacts {
            pid,
            executable_name: exe_name,
            executable_path: exe_path,
            command_line,
            service_name,
            service_name_source,
        }
    }

    /// The resource of `pid` (cached).
    pub fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        if let Some(r) = self.cache.get(&pid) {
            return r.clone();
        }
        if self.cache.len() >= MAX_CACHED {
            self.cache.clear();
        }
        let f = self.facts(pid, comm);
        let mut attributes = vec![
            KeyValue::new("service.name", f.service_name),
            KeyValue::new("process.pid", i64::from(f.pid)),
            KeyValue::new("process.executable.name", f.executable_name),
            KeyValue::new("host.name", self.host_name.clone()),
        ];
        if let Some(p) = f.executable_path {
            attributes.push(KeyValue::new("process.executable.path", p));
        }
        if let Some(c) = f.command_line {
            attributes.push(KeyValue::new("process.command_line", c));
        }
        attributes.push(KeyValue::new("telemetry.sdk.name", "sonde"));
        attributes.push(KeyValue::new("telemetry.sdk.language", "ebpf"));
        attributes.push(KeyValue::new(
            "telemetry.sdk.version",
            env!("CARGO_PKG_VERSION"),
        ));
        let r = Arc::new(Resource { attributes });
        self.cache.insert(pid, r.clone());
        r
    }

    /// The process exec'd or exited: its facts change.
    pub fn forget(&mut self, pid: u32) {
        self.cache.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_precedence() {
        let env = b"PATH=/bin\0OTEL_RESOURCE_ATTRIBUTES=team=a,service.name=from%20attrs\0HOME=/\0";
        assert_eq!(
            service_name_from_environ(env),
            Some(("from attrs".into(), "OTEL_RESOURCE_ATTRIBUTES"))
        );
        let env = b"OTEL_SERVICE_NAME=checkout\0OTEL_RESOURCE_ATTRIBUTES=service.name=other\0";
        assert_eq!(
            service_name_from_environ(env),
            Some(("checkout".into(), "OTEL_SERVICE_NAME"))
        );
        assert_eq!(
            service_name_from_environ(b"OTEL_SERVICE_NAME=\0PATH=/\0"),
            None
        );
        assert_eq!(service_name_from_environ(b""), None);
        assert_eq!(percent_decode("a%2Cb%zz%é"), "a,b%zz%é");
    }

    #[test]
    fn reads_a_process_from_procfs() {
        let root = std::env::temp_dir().join(format!("sonde-enrich-{}", std::process::id()));
        let dir = root.join("77");
        fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/usr/bin/python3.11", dir.join("exe")).unwrap();
        fs::write(
            dir.join("cmdline"),
            b"python3\0app.py\0--port\08080\0--db\0postgres://u:pw@db/x\0",
        )
        .unwrap();
        fs::write(dir.join("environ"), b"A=1\0OTEL_SERVICE_NAME=orders\0").unwrap();
        let mut c = ProcessCache::new(&root, "node-1".into());
        let f = c.facts(77, "python3");
        assert_eq!(f.executable_name, "python3.11");
        assert_eq!(
            f.command_line.as_deref(),
            Some("python3 app.py --port 8080 --db postgres://REDACTED@db/x")
        );
        assert_eq!(f.service_name, "orders");
        let r = c.resource(77, "python3");
        assert_eq!(r.service_name(), Some("orders"));
        assert_eq!(r.get("host.name"), Some(&"node-1".into()));
        assert_eq!(r.get("process.pid"), Some(&77i64.into()));
        // Gone from /proc: the kernel's comm is the fallback.
        let f = c.facts(78, "curl");
        assert_eq!(
            (f.executable_name.as_str(), f.service_name.as_str()),
            ("curl", "curl")
        );
        assert_eq!(f.service_name_source, "executable");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn live_process_facts() {
        let c = ProcessCache::default();
        let f = c.facts(std::process::id(), "x");
        assert!(f.command_line.is_some());
        assert!(!f.executable_name.is_empty());
    }
}
