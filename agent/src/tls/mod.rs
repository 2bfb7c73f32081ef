//! Which files get TLS uprobes, and for how long.
//!
//! Uprobes are attached to a file (an inode), not to a process: one attachment covers every
//! process that maps the file, those that start later and those that `dlopen` it later. So the
//! unit here is the file, identified by (device, inode):
//!
//! * at start, the `libssl` files in the standard library directories are attached and kept
//!   ("pinned"): a process that starts or `dlopen`s the system OpenSSL is covered from its first
//!   call, with no race against the agent;
//! * every process is scanned from `/proc/<pid>/maps` at start, again shortly after it `exec`s
//!   (the dynamic loader maps its libraries after the exec event) and when it opens a TCP
//!   connection (libraries loaded late), and each executable mapping not seen before is
//!   inspected ([`elf`]): a library or binary that exports `SSL_write` (libssl elsewhere, Node.js)
//!   gets the OpenSSL probes, a Go binary with `crypto/tls` the Go probes;
//! * files found through processes are detached when the last process that mapped them exits.
//!
//! Paths are opened through `/proc/<pid>/root`, so files inside containers resolve in their own
//! mount namespace.

pub mod elf;

use std::{
    collections::{HashMap, HashSet},
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use sonde_proto::tls_programs;

use crate::probes::{Probes, uprobes::UprobeLink};

use self::elf::{GoFunc, Inspection, OPENSSL_FUNCS};

/// (st_dev, st_ino) of a file.
type FileId = (u64, u64);

/// Directories searched for the system OpenSSL at start.
pub const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/usr/local/lib",
];

/// How a file is hooked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsKind {
    OpenSsl,
    Go {
        version: Option<String>,
        offsets_from: &'static str,
    },
}

/// A file with probes attached, as `sonde doctor` and the tests see it.
#[derive(Clone, Debug)]
pub struct AttachedFile {
    pub path: PathBuf,
    pub kind: TlsKind,
    pub probes: usize,
    pub pinned: bool,
    pub users: usize,
}

enum FileState {
    /// Nothing to hook (the reason is logged once).
    Ignored,
    Attached {
        path: PathBuf,
        kind: TlsKind,
        links: Vec<UprobeLink>,
        users: HashSet<u32>,
        pinned: bool,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsStats {
    pub files_attached: u64,
    pub files_detached: u64,
    pub attach_failures: u64,
    pub scans: u64,
    /// Users dropped by the sweep because their process was gone.
    pub users_swept: u64,
}

/// Least time between two scans of a process prompted by its connections.
const CONN_RESCAN_NS: u64 = 1_000_000_000;

/// Rescans of a process after exec: right away, then after these delays (ns).
const EXEC_RESCANS_NS: [u64; 3] = [20_000_000, 200_000_000, 2_000_000_000];

/// How often the users of attached files are checked for processes that are gone without
/// their exit being seen (a lost ring-buffer record, or a process that stopped being traced).
const SWEEP_NS: u64 = 5_000_000_000;

#[derive(Default)]
pub struct TlsTracker {
    files: HashMap<FileId, FileState>,
    /// Attached files each process maps.
    by_pid: HashMap<u32, HashSet<FileId>>,
    /// (pid, when, how many rescans done) after an exec.
    pending: Vec<(u32, u64, usize)>,
    /// When each process was last scanned for a new connection (ns).
    last_scan: HashMap<u32, u64>,
    /// When users were last checked against `/proc` (ns).
    last_sweep: u64,
    pub stats: TlsStats,
}

impl TlsTracker {
    /// Attaches the system OpenSSL and scans every running process.
    pub fn start(&mut self, probes: &mut Probes) {
        if !probes.tls {
            return;
        }
        for dir in LIB_DIRS {
            let Ok(rd) = fs::read_dir(dir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with("libssl.so") {
                    self.consider(probes, &e.path(), None, true);
                }
            }
        }
        if let Ok(rd) = fs::read_dir("/proc") {
            let pids: Vec<u32> = rd
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|&p| p != std::process::id())
                .collect();
            // Only traced processes: the kernel reports the exit of those alone, and a user
            // whose exit is never seen would keep its files attached for ever.
            let pids: Vec<u32> = pids.into_iter().filter(|&p| probes.traces(p)).collect();
            for pid in pids {
                self.scan(probes, pid);
            }
        }
    }

    /// A process exec'd: what it mapped before is gone; scan it now and a few times as the
    /// dynamic loader maps its libraries.
    pub fn exec(&mut self, probes: &mut Probes, pid: u32, now_ns: u64) {
        if !probes.tls {
            return;
        }
        self.exit(probes, pid);
        self.scan(probes, pid);
        self.pending.push((pid, now_ns + EXEC_RESCANS_NS[0], 0));
    }

    /// A process opened a TCP connection: it may have loaded a TLS library since its last scan
    /// (at most one scan per process and [`CONN_RESCAN_NS`]).
    pub fn connection(&mut self, probes: &mut Probes, pid: u32, now_ns: u64) {
        if !probes.tls {
            return;
        }
        let last = self.last_scan.entry(pid).or_insert(0);
        if *last != 0 && now_ns.saturating_sub(*last) < CONN_RESCAN_NS {
            return;
        }
        *last = now_ns;
        self.scan(probes, pid);
    }

    pub fn exit(&mut self, probes: &mut Probes, pid: u32) {
        self.pending.retain(|(p, _, _)| *p != pid);
        self.last_scan.remove(&pid);
        let Some(ids) = self.by_pid.remove(&pid) else {
            return;
        };
        for id in ids {
            let unused = match self.files.get_mut(&id) {
                Some(FileState::Attached { users, pinned, .. }) => {
                    users.remove(&pid);
                    users.is_empty() && !*pinned
                }
                _ => false,
            };
            if unused && let Some(FileState::Attached { path, links, .. }) = self.files.remove(&id)
            {
                tracing::debug!(
                    "TLS probes: detaching {} (no process maps it)",
                    path.display()
                );
                for l in links {
                    probes.detach_uprobe(l);
                }
                self.stats.files_detached += 1;
            }
        }
    }

    /// Due rescans after exec, and now and then the sweep of users that are gone.
    pub fn tick(&mut self, probes: &mut Probes, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep) >= SWEEP_NS {
            self.last_sweep = now_ns;
            let gone: Vec<u32> = self
                .by_pid
                .keys()
                .copied()
                .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            for pid in gone {
                self.stats.users_swept += 1;
                self.exit(probes, pid);
            }
        }
        if self.pending.is_empty() {
            return;
        }
        let due: Vec<(u32, usize)> = self
            .pending
            .iter()
            .filter(|(_, at, _)| *at <= now_ns)
            .map(|(p, _, n)| (*p, *n))
            .collect();
        self.pending.retain(|(_, at, _)| *at > now_ns);
        for (pid, n) in due {
            self.scan(probes, pid);
            if let Some(delay) = EXEC_RESCANS_NS.get(n + 1) {
                self.pending.push((pid, now_ns + delay, n + 1));
            }
        }
    }

    /// Files with probes attached now.
    pub fn attached(&self) -> Vec<AttachedFile> {
        let mut v: Vec<AttachedFile> = self
            .files
            .values()
            .filter_map(|f| match f {
                FileState::Attached {
                    path,
                    kind,
                    links,
                    users,
                    pinned,
                } => Some(AttachedFile {
                    path: path.clone(),
                    kind: kind.clone(),
                    probes: links.len(),
                    pinned: *pinned,
                    users: users.len(),
                }),
                FileState::Ignored => None,
            })
            .collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// Reads `/proc/<pid>/maps` and considers each executable file mapping.
    fn scan(&mut self, probes: &mut Probes, pid: u32) {
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            return;
        };
        self.stats.scans += 1;
        for path in executable_files(&maps) {
            let target = PathBuf::from(format!("/proc/{pid}/root{}", path.display()));
            self.consider(probes, &target, Some(pid), false);
        }
    }

    fn consider(&mut self, probes: &mut Probes, path: &Path, pid: Option<u32>, pinned: bool) {
        let Ok(meta) = fs::metadata(path) else {
            return;
        };
        let id = (meta.dev(), meta.ino());
        if !self.files.contains_key(&id) {
            let state = self.inspect_and_attach(probes, path, pinned);
            self.files.insert(id, state);
        }
        if let (Some(pid), Some(FileState::Attached { users, .. })) = (pid, self.files.get_mut(&id))
        {
            users.insert(pid);
            self.by_pid.entry(pid).or_default().insert(id);
        }
    }

    fn inspect_and_attach(&mut self, probes: &mut Probes, path: &Path, pinned: bool) -> FileState {
        let inspection = match elf::inspect(path) {
            Ok(i) => i,
            Err(e) => {
                tracing::debug!("TLS probes: {e}");
                return FileState::Ignored;
            }
        };
        let mut links = Vec::new();
        let result = match &inspection {
            Inspection::NotTls(why) => {
                if *why != "no exported SSL_write" {
                    tracing::info!("TLS probes: {}: {why}", path.display());
                }
                return FileState::Ignored;
            }
            Inspection::OpenSsl(funcs) => attach_openssl(probes, path, funcs, &mut links),
            Inspection::Go {
                write,
                read,
                offsets,
                ..
            } => attach_go(probes, path, write, read, offsets.cookie(), &mut links),
        };
        if let Err(e) = result {
            tracing::warn!("TLS probes: {e}");
            self.stats.attach_failures += 1;
            for l in links {
                probes.detach_uprobe(l);
            }
            return FileState::Ignored;
        }
        let kind = match inspection {
            Inspection::Go {
                version,
                offsets_from,
                ..
            } => TlsKind::Go {
                version,
                offsets_from,
            },
            _ => TlsKind::OpenSsl,
        };
        tracing::info!(
            "TLS probes: attached {} probes to {} ({kind:?})",
            links.len(),
            path.display()
        );
        self.stats.files_attached += 1;
        FileState::Attached {
            path: path.to_owned(),
            kind,
            links,
            users: HashSet::new(),
            pinned,
        }
    }
}

fn attach_openssl(
    probes: &mut Probes,
    path: &Path,
    funcs: &[(&'static str, u64)],
    links: &mut Vec<UprobeLink>,
) -> Result<(), crate::probes::ProbeError> {
    for &(func, off) in funcs {
        let (entry, ret) = match func {
            "SSL_write" => (tls_programs::SSL_WRITE, tls_programs::SSL_RET),
            "SSL_read" => (tls_programs::SSL_READ, tls_programs::SSL_RET),
            "SSL_write_ex" => (tls_programs::SSL_WRITE_EX, tls_programs::SSL_RET),
            "SSL_read_ex" => (tls_programs::SSL_READ_EX, tls_programs::SSL_RET),
            _ => (tls_programs::SSL_HANDSHAKE, tls_programs::SSL_HANDSHAKE_RET),
        };
        debug_assert!(OPENSSL_FUNCS.contains(&func));
        // The return first: an entry without its return would leave stashes behind.
        links.push(probes.attach_uprobe(ret, path, off, None)?);
        links.push(probes.attach_uprobe(entry, path, off, None)?);
    }
    Ok(())
}

fn attach_go(
    probes: &mut Probes,
    path: &Path,
    write: &GoFunc,
    read: &GoFunc,
    cookie: u64,
    links: &mut Vec<UprobeLink>,
) -> Result<(), crate::probes::ProbeError> {
    // Read: its RETs first (an entry without its returns would leave stashes behind), then
    // its entry. Write is emitted at its entry (see `tls_enter_go_write`): no RETs needed.
    for &ret in &read.rets {
        links.push(probes.attach_uprobe(tls_programs::GO_RET, path, ret, None)?);
    }
    links.push(probes.attach_uprobe(tls_programs::GO_READ, path, read.entry, Some(cookie))?);
    links.push(probes.attach_uprobe(tls_programs::GO_WRITE, path, write.entry, Some(cookie))?);
    Ok(())
}

/// Paths of the files mapped executable in a `/proc/<pid>/maps` text, each once.
pub fn executable_files(maps: &str) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for line in maps.lines() {
        // address perms offset dev inode path
        let mut it = line.split_ascii_whitespace();
        let (Some(_), Some(perms), Some(_), Some(_), Some(inode)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            continue;
        };
        let path: Vec<&str> = it.collect();
        let path = path.join(" ");
        if !perms.contains('x')
            || inode == "0"
            || !path.starts_with('/')
            || path.ends_with(" (deleted)")
        {
            continue;
        }
        if seen.insert(path.clone()) {
            out.push(PathBuf::from(path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executable_mappings_are_listed_once() {
        let maps = "\
55d0c0a00000-55d0c0a20000 r--p 00000000 fd:01 1234 /usr/bin/curl
55d0c0a20000-55d0c0a80000 r-xp 00020000 fd:01 1234 /usr/bin/curl
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000100000-7f0000200000 r-xp 00100000 fd:01 99 /usr/lib/x86_64-linux-gnu/libssl.so.3
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
7f0000300000-7f0000301000 r-xp 00000000 00:00 0 [vdso]
7f0000400000-7f0000401000 r-xp 00000000 fd:01 77 /tmp/my lib.so
7f0000500000-7f0000501000 r-xp 00000000 fd:01 78 /tmp/old.so (deleted)
";
        assert_eq!(
            executable_files(maps),
            vec![
                PathBuf::from("/usr/bin/curl"),
                PathBuf::from("/usr/lib/x86_64-linux-gnu/libssl.so.3"),
                PathBuf::from("/tmp/my lib.so"),
            ]
        );
    }
}
