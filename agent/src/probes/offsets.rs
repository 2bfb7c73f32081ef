//! Kernel structure offsets for the kernel programs, resolved from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the programs read kernel structures at offsets the
//! agent computes here and passes in as the `OFFSETS` global. Members inside anonymous structs
//! and unions (as in `sock_common`) are found by searching through them.

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use sonde_proto::KernelOffsets;

use super::tracefs::{TraceFs, TracefsError};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(
        "cannot read kernel BTF at {path}: {source}; sonde needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.4 are)"
    )]
    Btf {
        path: PathBuf,
        #[source]
        source: btf_rs::Error,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("kernel BTF: {strukt}.{member} is a bitfield; this kernel is too old for sonde")]
    Bitfield { strukt: String, member: String },
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
}

/// Finds member offsets in kernel structs.
pub struct KernelBtf {
    btf: Btf,
}

impl KernelBtf {
    pub fn open(path: &Path) -> Result<Self, OffsetsError> {
        let btf = Btf::from_file(path).map_err(|source| OffsetsError::Btf {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self { btf })
    }

    fn strukt(&self, name: &str) -> Result<btf_rs::Struct, OffsetsError> {
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|_| OffsetsError::NoStruct(name.into()))?;
        types
            .into_iter()
            .find_map(|t| match t {
                Type::Struct(s) if !s.members.is_empty() => Some(s),
                _ => None,
            })
            .ok_or_else(|| OffsetsError::NoStruct(name.into()))
    }

    /// Byte offset of `member` in struct `strukt`, looking inside anonymous members.
    pub fn offset(&self, strukt: &str, member: &str) -> Result<u32, OffsetsError> {
        let s = self.strukt(strukt)?;
        match self.find(&s, member, 0, 0)? {
            Some(bits) if bits % 8 == 0 => Ok(bits / 8),
            Some(_) => Err(OffsetsError::Bitfield {
                strukt: strukt.into(),
                member: member.into(),
            }),
            None => Err(OffsetsError::NoMember {
                strukt: strukt.into(),
                member: member.into(),
            }),
        }
    }

    /// Bit offset of `member` within `s` (plus `base`), or `None`.
    fn find(
        &self,
        s: &btf_rs::Struct,
        member: &str,
        base: u32,
        depth: u32,
    ) -> Result<Option<u32>, OffsetsError> {
        if depth > 8 {
            return Ok(None);
        }
        for m in &s.members {
            let name = self.btf.resolve_name(m).unwrap_or_default();
            if m.bitfield_size().is_some_and(|b| b != 0) && name == member {
                return Err(OffsetsError::Bitfield {
                    strukt: String::new(),
                    member: member.into(),
                });
            }
            if name == member {
                return Ok(Some(base + m.bit_offset()));
            }
            if name.is_empty() {
                let inner = match self.btf.resolve_chained_type(m) {
                    Ok(Type::Struct(i)) | Ok(Type::Union(i)) => i,
                    _ => continue,
                };
                if let Some(off) = self.find(&inner, member, base + m.bit_offset(), depth + 1)? {
                    return Ok(Some(off));
                }
            }
        }
        Ok(None)
    }
}

/// Resolves every offset the kernel programs need.
pub fn resolve(btf: &KernelBtf, tracefs: &TraceFs) -> Result<KernelOffsets, OffsetsError> {
    let o = |s: &str, m: &str| btf.offset(s, m);
    let exit = tracefs.format("sched", "sched_process_exit")?;
    let exec = tracefs.format("sched", "sched_process_exec")?;
    let fork = tracefs.format("sched", "sched_process_fork")?;
    Ok(KernelOffsets {
        task_files: o("task_struct", "files")?,
        files_fdt: o("files_struct", "fdt")?,
        fdtable_max_fds: o("fdtable", "max_fds")?,
        fdtable_fd: o("fdtable", "fd")?,
        file_inode: o("file", "f_inode")?,
        file_private_data: o("file", "private_data")?,
        inode_mode: o("inode", "i_mode")?,
        socket_type: o("socket", "type")?,
        socket_sk: o("socket", "sk")?,
        sock_family: o("sock_common", "skc_family")?,
        sock_state: o("sock_common", "skc_state")?,
        sock_daddr: o("sock_common", "skc_daddr")?,
        sock_rcv_saddr: o("sock_common", "skc_rcv_saddr")?,
        sock_dport: o("sock_common", "skc_dport")?,
        sock_num: o("sock_common", "skc_num")?,
        sock_v6_daddr: o("sock_common", "skc_v6_daddr")?,
        sock_v6_rcv_saddr: o("sock_common", "skc_v6_rcv_saddr")?,
        // `struct sock` starts with `struct sock_common __sk_common`, so sock_common offsets
        // are sock offsets. The namespace is optional: 0 disables it.
        sock_net: o("sock_common", "skc_net").unwrap_or(0),
        net_ns_inum: o("net", "ns")
            .and_then(|ns| Ok(ns + o("ns_common", "inum")?))
            .unwrap_or(0),
        sock_protocol: o("sock", "sk_protocol")?,
        tp_exit_group_dead: exit.field("group_dead").map_or(0, |f| f.offset),
        tp_exec_old_pid: exec.field("old_pid").map_or(0, |f| f.offset),
        tp_fork_parent_pid: fork.field("parent_pid").map_or(0, |f| f.offset),
        tp_fork_child_pid: fork.field("child_pid").map_or(0, |f| f.offset),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads this machine's BTF: struct layouts that every supported kernel has.
    #[test]
    fn resolves_known_members_from_this_kernel() {
        let Ok(btf) = KernelBtf::open(Path::new(VMLINUX_BTF)) else {
            panic!("this test needs {VMLINUX_BTF} (kernel BTF), present on every supported host");
        };
        // sock_common begins with the address pair; skc_daddr is its first member.
        assert_eq!(btf.offset("sock_common", "skc_daddr").unwrap(), 0);
        assert_eq!(btf.offset("sock_common", "skc_rcv_saddr").unwrap(), 4);
        assert_eq!(btf.offset("sock_common", "skc_dport").unwrap(), 12);
        assert_eq!(btf.offset("sock_common", "skc_num").unwrap(), 14);
        assert_eq!(btf.offset("sock_common", "skc_family").unwrap(), 16);
        assert!(btf.offset("task_struct", "files").unwrap() > 0);
        assert!(matches!(
            btf.offset("sock_common", "no_such_member"),
            Err(OffsetsError::NoMember { .. })
        ));
        assert!(matches!(
            btf.offset("no_such_struct_x", "a"),
            Err(OffsetsError::NoStruct(_))
        ));
    }
}
