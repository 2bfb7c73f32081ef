//! `sonde doctor`: what this host offers, what sonde will use, and what to fix.

use std::{fs, path::Path};

use serde::Serialize;

use crate::{
    cgroup,
    probes::{
        ProbeConfig, Probes, TRACEPOINTS,
        offsets::{self, KernelBtf, VMLINUX_BTF},
        support::{Support, probe_program_types},
        tracefs::TraceFs,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Works.
    Ok,
    /// Missing, but sonde does not need it (an optional feature is off).
    Unavailable,
    /// Missing, and a feature sonde would use is off.
    Warn,
    /// Missing, and tracing cannot work.
    Fail,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it, when something can be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// What sonde will use on this host, one line each.
    pub plan: Vec<String>,
}

impl Report {
    /// Tracing works unless a required check failed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.status != Status::Fail)
    }

    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let tag = match c.status {
                Status::Ok => "ok  ",
                Status::Unavailable => "n/a ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            s.push_str(&format!("[{tag}] {:<22} {}\n", c.name, c.detail));
            if let Some(fix) = &c.fix {
                s.push_str(&format!("       {:<22} fix: {fix}\n", ""));
            }
        }
        s.push_str("\nsonde will use:\n");
        for p in &self.plan {
            s.push_str(&format!("  - {p}\n"));
        }
        s.push_str(if self.ok() {
            "\ntracing can work on this host\n"
        } else {
            "\ntracing cannot work on this host until the FAIL lines are fixed\n"
        });
        s
    }
}

fn check(
    name: &'static str,
    status: Status,
    detail: impl Into<String>,
    fix: Option<&str>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.map(str::to_owned),
    }
}

/// Kernel release as (major, minor).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

fn uname_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Effective capabilities from /proc/self/status.
fn cap_eff() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// What to grant when the agent lacks privileges (docs/capabilities.md says why each).
const PRIVILEGES_HINT: &str = "run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN \
     (injection), CAP_SYS_ADMIN (TLS uprobes), CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (other \
     users' /proc entries); CAP_SYS_RESOURCE too on kernels before 5.11";
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

fn lockdown() -> Option<String> {
    let path = Path::new("/sys/kernel/security/lockdown");
    let text = fs::read_to_string(path).ok()?;
    // "none [integrity] confidentiality": the bracketed one is active.
    let active = text.split_whitespace().find(|w| w.starts_with('['))?;
    Some(active.trim_matches(['[', ']']).to_owned())
}

fn support_check(name: &'static str, s: &Support, required: bool, optional_note: &str) -> Check {
    match s {
        Support::Works => check(name, Status::Ok, "loads and attaches", None),
        Support::Fails(why) if required => check(name, Status::Fail, why.clone(), None),
        Support::Fails(why) => check(
            name,
            Status::Unavailable,
            format!("{why} ({optional_note})"),
            None,
        ),
    }
}

/// Runs every check. Loads and attaches programs for a moment; changes nothing else except
/// mounting tracefs if it is missing (as `sonde run` would).
pub fn run() -> Report {
    let mut checks = Vec::new();
    let mut plan = Vec::new();

    let release = uname_release();
    checks.push(match kernel_version(&release) {
        Some(v) if v >= (5, 8) => check("kernel", Status::Ok, format!("Linux {release}"), None),
        Some(_) => check(
            "kernel",
            Status::Fail,
            format!("Linux {release} is older than 5.8 (BPF ring buffer)"),
            Some("run sonde on a 5.8 or newer kernel"),
        ),
        None => check(
            "kernel",
            Status::Warn,
            format!("cannot parse release {release:?}"),
            None,
        ),
    });

    let caps = cap_eff();
    let has = |c: u32| caps & (1 << c) != 0;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    checks.push(
        if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
            check(
                "privileges",
                Status::Ok,
                format!(
                    "euid {euid}; CAP_BPF={} CAP_PERFMON={} CAP_SYS_ADMIN={}",
                    has(CAP_BPF),
                    has(CAP_PERFMON),
                    has(CAP_SYS_ADMIN)
                ),
                None,
            )
        } else {
            check(
                "privileges",
                Status::Fail,
                format!("euid {euid} without CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN)"),
                Some(PRIVILEGES_HINT),
            )
        },
    );

    let btf_ok = match KernelBtf::open(Path::new(VMLINUX_BTF)) {
        Ok(_) => {
            checks.push(check(
                "btf",
                Status::Ok,
                format!("{VMLINUX_BTF} present"),
                None,
            ));
            true
        }
        Err(e) => {
            checks.push(check(
                "btf",
                Status::Fail,
                e.to_string(),
                Some("use a kernel built with CONFIG_DEBUG_INFO_BTF=y"),
            ));
            false
        }
    };

    let tracefs_before = TraceFs::find();
    let tracefs = match &tracefs_before {
        Some(t) => {
            checks.push(check(
                "tracefs",
                Status::Ok,
                format!("mounted at {}", t.root().display()),
                None,
            ));
            Some(t.clone())
        }
        None => match TraceFs::find_or_mount() {
            Ok(t) => {
                checks.push(check(
                    "tracefs",
                    Status::Ok,
                    format!("was not mounted; mounted it at {}", t.root().display()),
                    None,
                ));
                Some(t)
            }
            Err(e) => {
                checks.push(check(
                    "tracefs",
                    Status::Fail,
                    e.to_string(),
                    Some("mount -t tracefs tracefs /sys/kernel/tracing"),
                ));
                None
            }
        },
    };

    if let (true, Some(t)) = (btf_ok, &tracefs) {
        let offsets = KernelBtf::open(Path::new(VMLINUX_BTF))
            .map_err(|e| e.to_string())
            .and_then(|b| offsets::resolve(&b, t).map_err(|e| e.to_string()));
        checks.push(match offsets {
            Ok(_) => check(
                "kernel structures",
                Status::Ok,
                "offsets of task, file, socket and sock resolved from BTF",
                None,
            ),
            Err(e) => check("kernel structures", Status::Fail, e, None),
        });
    }

    let cg2 = cgroup::v2_mount();
    checks.push(match &cg2 {
        Some(p) => check(
            "cgroup v2",
            Status::Ok,
            format!("mounted at {}", p.display()),
            None,
        ),
        None => check(
            "cgroup v2",
            Status::Warn,
            "no cgroup2 mount: per-cgroup tracing and context injection are off",
            Some("mount -t cgroup2 none /sys/fs/cgroup/unified"),
        ),
    });

    checks.push(match lockdown() {
        Some(mode) if mode == "confidentiality" => check(
            "lockdown",
            Status::Fail,
            "confidentiality: the kernel refuses bpf_probe_read_kernel",
            Some("boot with lockdown=integrity or none"),
        ),
        Some(mode) => check(
            "lockdown",
            Status::Ok,
            format!("{mode} (kernel reads allowed; bpf_probe_write_user blocked, never used)"),
            None,
        ),
        None => check(
            "lockdown",
            Status::Ok,
            "not reported (securityfs not mounted or no lockdown LSM)",
            None,
        ),
    });

    let support = probe_program_types(cg2.as_deref(), tracefs.as_ref());
    checks.push(support_check(
        "tracepoint programs",
        &support.tracepoint,
        true,
        "",
    ));
    checks.push(support_check(
        "uprobe programs",
        &support.uprobe,
        false,
        "TLS plaintext capture is off",
    ));
    checks.push(support_check(
        "sock_ops programs",
        &support.sock_ops,
        false,
        "context injection is off",
    ));
    checks.push(support_check(
        "sk_msg programs",
        &support.sk_msg,
        false,
        "context injection is off",
    ));
    checks.push(support_check(
        "kprobe programs",
        &support.kprobe,
        false,
        "optional accelerator; sonde does not need it",
    ));
    checks.push(support_check(
        "fentry programs",
        &support.fentry,
        false,
        "optional accelerator; sonde does not need it",
    ));

    // The real thing: load and attach every capture program, then detach.
    if support.tracepoint.works() {
        match Probes::load(&ProbeConfig::default()) {
            Ok(p) => {
                checks.push(check(
                    "capture programs",
                    Status::Ok,
                    format!(
                        "{} tracepoint programs verified and attached in {:?}",
                        TRACEPOINTS.len(),
                        p.load_time
                    ),
                    None,
                ));
                if p.inject {
                    checks.push(match &p.inject_unfiltered {
                        None => check(
                            "injection programs",
                            Status::Ok,
                            "sock_ops (traced processes' connections) and sk_msg attached",
                            None,
                        ),
                        Some(why) => check(
                            "injection programs",
                            Status::Ok,
                            format!(
                                "this kernel's sock_ops programs cannot tell the process \
                                 ({why}): every new outgoing TCP connection passes the sk_msg \
                                 program, which still changes only traced processes' requests"
                            ),
                            None,
                        ),
                    });
                }
                checks.push(if p.tls {
                    check(
                        "TLS programs",
                        Status::Ok,
                        "OpenSSL and Go crypto/tls uprobe programs verified",
                        None,
                    )
                } else {
                    check(
                        "TLS programs",
                        Status::Warn,
                        "the TLS uprobe programs did not load: TLS connections show as ciphertext",
                        None,
                    )
                });
            }
            Err(e) => checks.push(check("capture programs", Status::Fail, e.to_string(), None)),
        }
    }
    checks.push(system_openssl_check());

    plan.push(
        "capture: syscall tracepoints (read/write/send/recv families, connect, accept, close)"
            .into(),
    );
    plan.push(format!(
        "trace context injection: {}",
        if support.sock_ops.works() && support.sk_msg.works() && cg2.is_some() {
            "possible here (sock_ops + sk_msg)"
        } else {
            "unavailable here"
        }
    ));
    plan.push(format!(
        "TLS plaintext: {}",
        if support.uprobe.works() {
            "possible here (uprobes)"
        } else {
            "unavailable here"
        }
    ));
    plan.extend(TLS_COVERAGE.iter().map(|l| (*l).to_owned()));
    plan.push(format!(
        "kprobe/fentry accelerators: {}",
        if support.kprobe.works() || support.fentry.works() {
            "available, not needed"
        } else {
            "unavailable, not needed"
        }
    ));
    let _ = tracefs_before;
    Report { checks, plan }
}

/// Which TLS stacks the uprobes cover, and why the others are not.
pub const TLS_COVERAGE: &[&str] = &[
    "TLS covered: OpenSSL 1.1 and 3.x as a shared libssl (nginx, curl, Python ssl, ...) and \
     binaries that embed OpenSSL with exported SSL_* symbols (Node.js): SSL_read/SSL_write \
     and their _ex forms",
    "TLS covered: Go 1.17+ crypto/tls (register ABI) in binaries with a symbol table; struct \
     offsets from the binary's DWARF, or the Go 1.17-1.27 layout when DWARF is absent",
    "TLS not covered: stripped Go binaries (no symbols to find crypto/tls in), Go before 1.17 \
     (stack ABI), BoringSSL linked statically without exported symbols (grpcio, Envoy, \
     Chrome), rustls, GnuTLS, NSS, Java JSSE: their plaintext never passes an exported \
     function sonde can hook; their connections show as undetected ciphertext",
    "TLS context: never injected (the kernel cannot grow an encrypted record) nor linked by \
     thread in the kernel (TLS plaintext never passes the kernel's context programs); an \
     incoming traceparent in the plaintext is continued",
];

/// The system OpenSSL found, and what the probes would hook in it.
fn system_openssl_check() -> Check {
    let mut found = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for dir in crate::tls::LIB_DIRS {
        let Ok(rd) = fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("libssl.so.")
                && seen.insert(fs::canonicalize(e.path()).unwrap_or(e.path()))
                && let Ok(crate::tls::elf::Inspection::OpenSsl(funcs)) =
                    crate::tls::elf::inspect(&e.path())
            {
                let names: Vec<&str> = funcs.iter().map(|(n, _)| *n).collect();
                found.push(format!("{} ({})", e.path().display(), names.join(", ")));
            }
        }
    }
    if found.is_empty() {
        check(
            "system OpenSSL",
            Status::Unavailable,
            "no libssl.so.* in the standard library directories",
            None,
        )
    } else {
        check("system OpenSSL", Status::Ok, found.join("; "), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn a_failed_required_check_fails_the_report() {
        let mut r = Report {
            checks: vec![
                check("a", Status::Ok, "", None),
                check("b", Status::Unavailable, "", None),
            ],
            plan: vec![],
        };
        assert!(r.ok());
        r.checks
            .push(check("c", Status::Fail, "broken", Some("do x")));
        assert!(!r.ok());
        assert!(r.render().contains("fix: do x"));
    }
}
