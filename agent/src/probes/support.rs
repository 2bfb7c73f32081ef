//! What program types the running kernel lets sonde load and attach, learned by trying: for
//! each type, a program that does nothing is loaded and attached to a harmless target, then
//! detached. Used by `sonde doctor`.

use std::{fs, path::Path};

use aya::{
    Btf, EbpfLoader,
    maps::SockHash,
    programs::{
        CgroupAttachMode, FEntry, KProbe, SkMsg, SockOps, TracePoint, UProbe, uprobe::UProbeScope,
    },
};

use super::{EBPF_OBJECT, tracefs::TraceFs};

/// Outcome of trying one program type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    Works,
    /// Loading or attaching failed; the error says why.
    Fails(String),
}

impl Support {
    pub fn works(&self) -> bool {
        matches!(self, Self::Works)
    }
}

#[derive(Clone, Debug)]
pub struct ProgramSupport {
    pub tracepoint: Support,
    pub uprobe: Support,
    pub kprobe: Support,
    pub fentry: Support,
    pub sock_ops: Support,
    pub sk_msg: Support,
}

/// The error and its causes on one line, `: `-separated.
pub(super) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Tries every program type. `cgroup2` is where sock_ops is attached (a temporary child
/// cgroup is made there and removed).
pub fn probe_program_types(cgroup2: Option<&Path>, tracefs: Option<&TraceFs>) -> ProgramSupport {
    let unknown = |why: &str| Support::Fails(why.to_owned());
    let mut ebpf = match EbpfLoader::new()
        .map_max_entries(sonde_proto::maps::SCRATCH, 1)
        .load(EBPF_OBJECT)
    {
        Ok(e) => e,
        Err(e) => {
            let why = format!("cannot load sonde's kernel object: {}", chain(&e));
            return ProgramSupport {
                tracepoint: unknown(&why),
                uprobe: unknown(&why),
                kprobe: unknown(&why),
                fentry: unknown(&why),
                sock_ops: unknown(&why),
                sk_msg: unknown(&why),
            };
        }
    };

    let tracepoint = (|| -> Result<(), String> {
        if tracefs.is_none() {
            return Err("tracefs is not mounted".into());
        }
        let p: &mut TracePoint = ebpf
            .program_mut("doctor_tracepoint")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        p.load().map_err(|e| format!("load: {}", chain(&e)))?;
        let link = p
            .attach("syscalls", "sys_enter_getppid")
            .map_err(|e| format!("attach: {}", chain(&e)))?;
        p.detach(link).map_err(|e| chain(&e))?;
        Ok(())
    })();

    let uprobe = (|| -> Result<(), String> {
        let p: &mut UProbe = ebpf
            .program_mut("doctor_uprobe")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        p.load().map_err(|e| format!("load: {}", chain(&e)))?;
        let link = match p.attach("getpid", "libc", UProbeScope::AllProcesses) {
            Ok(link) => link,
            // A host without a shared libc (a static sonde in a scratch image or a minimal
            // VM): uprobes are still there, so try getpid linked into sonde itself.
            Err(libc_err) => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                p.attach("getpid", &exe, UProbeScope::AllProcesses)
                    .map_err(|e| {
                        format!(
                            "attach to libc getpid: {}; to getpid in {}: {}",
                            chain(&libc_err),
                            exe.display(),
                            chain(&e)
                        )
                    })?
            }
        };
        p.detach(link).map_err(|e| chain(&e))?;
        Ok(())
    })();

    let kprobe = (|| -> Result<(), String> {
        let p: &mut KProbe = ebpf
            .program_mut("doctor_kprobe")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        p.load().map_err(|e| format!("load: {}", chain(&e)))?;
        let link = p
            .attach("tcp_sendmsg", 0)
            .map_err(|e| format!("attach to tcp_sendmsg: {}", chain(&e)))?;
        p.detach(link).map_err(|e| chain(&e))?;
        Ok(())
    })();

    let fentry = (|| -> Result<(), String> {
        let btf = Btf::from_sys_fs().map_err(|e| format!("kernel BTF: {}", chain(&e)))?;
        let p: &mut FEntry = ebpf
            .program_mut("doctor_fentry")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        p.load("tcp_sendmsg", &btf)
            .map_err(|e| format!("load: {}", chain(&e)))?;
        let link = p.attach().map_err(|e| format!("attach: {}", chain(&e)))?;
        p.detach(link).map_err(|e| chain(&e))?;
        Ok(())
    })();

    let sock_ops = (|| -> Result<(), String> {
        let root = cgroup2.ok_or("no cgroup v2 hierarchy is mounted")?;
        let dir = root.join(format!("sonde-doctor-{}", std::process::id()));
        fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let r = (|| -> Result<(), String> {
            let cg = fs::File::open(&dir).map_err(|e| e.to_string())?;
            let p: &mut SockOps = ebpf
                .program_mut("doctor_sock_ops")
                .ok_or("program missing")?
                .try_into()
                .map_err(|e: aya::programs::ProgramError| chain(&e))?;
            p.load().map_err(|e| format!("load: {}", chain(&e)))?;
            let link = p
                .attach(&cg, CgroupAttachMode::Single)
                .map_err(|e| format!("attach to {}: {}", dir.display(), chain(&e)))?;
            p.detach(link).map_err(|e| chain(&e))?;
            Ok(())
        })();
        let _ = fs::remove_dir(&dir);
        r
    })();

    let sk_msg = (|| -> Result<(), String> {
        let map = ebpf.take_map("DOCTOR_SOCKS").ok_or("map missing")?;
        let socks: SockHash<_, u32> = SockHash::try_from(map).map_err(|e| chain(&e))?;
        let fd = socks.fd().try_clone().map_err(|e| e.to_string())?;
        let p: &mut SkMsg = ebpf
            .program_mut("doctor_sk_msg")
            .ok_or("program missing")?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| chain(&e))?;
        p.load().map_err(|e| format!("load: {}", chain(&e)))?;
        let link = p
            .attach(&fd)
            .map_err(|e| format!("attach: {}", chain(&e)))?;
        p.detach(link).map_err(|e| chain(&e))?;
        Ok(())
    })();

    let conv = |r: Result<(), String>| match r {
        Ok(()) => Support::Works,
        Err(e) => Support::Fails(e),
    };
    ProgramSupport {
        tracepoint: conv(tracepoint),
        uprobe: conv(uprobe),
        kprobe: conv(kprobe),
        fentry: conv(fentry),
        sock_ops: conv(sock_ops),
        sk_msg: conv(sk_msg),
    }
}
