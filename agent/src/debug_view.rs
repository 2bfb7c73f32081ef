//! `sonde run`'s console view for now: connections as they open and close, and a preview of
//! the bytes of each chunk. Protocol-aware span output replaces it as the default later.

use std::{collections::HashMap, io::Write};

use sonde_proto::{Direction, Role};

use crate::{
    conn::{Chunk, ConnEnd, ConnInfo, StreamSink},
    procfs::Procfs,
};

pub struct DebugView<W: Write> {
    out: W,
    /// Payload bytes shown per chunk.
    preview: usize,
    procfs: Procfs,
    comms: HashMap<u32, String>,
}

impl<W: Write> DebugView<W> {
    pub fn new(out: W, preview: usize) -> Self {
        Self {
            out,
            preview,
            procfs: Procfs::default(),
            comms: HashMap::new(),
        }
    }

    fn comm(&mut self, pid: u32) -> String {
        if let Some(c) = self.comms.get(&pid) {
            return c.clone();
        }
        let c = self.procfs.comm(pid).unwrap_or_else(|| "?".into());
        if self.comms.len() > 4096 {
            self.comms.clear();
        }
        self.comms.insert(pid, c.clone());
        c
    }
}

/// Printable preview: ASCII as is, `\r\n` and others escaped.
pub fn preview(bytes: &[u8], max: usize) -> String {
    let mut s = String::new();
    for &b in bytes.iter().take(max) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if bytes.len() > max {
        s.push('…');
    }
    s
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map_or_else(|| "?".into(), |a| a.to_string())
}

impl<W: Write> StreamSink for DebugView<W> {
    fn opened(&mut self, c: &ConnInfo) {
        let comm = if c.comm.is_empty() {
            self.comm(c.pid)
        } else {
            c.comm.clone()
        };
        let (role, arrow) = match c.role {
            Role::Client => ("client", "->"),
            Role::Server => ("server", "<-"),
            Role::Unknown => ("unknown", "--"),
        };
        let _ = writeln!(
            self.out,
            "conn {:#x} open   {comm}[{}] fd={} {role} {} {arrow} {} ({:?})",
            c.id,
            c.pid,
            c.fd,
            addr(c.local),
            addr(c.remote),
            c.source
        );
    }

    fn chunk(&mut self, c: &ConnInfo, direction: Direction, chunk: Chunk) {
        let dir = match direction {
            Direction::Egress => "write",
            Direction::Ingress => "read ",
        };
        let line = match &chunk {
            Chunk::Data { bytes, syscall, .. } => format!(
                "conn {:#x} {dir}  {:>6} B  {:<8} {}",
                c.id,
                bytes.len(),
                syscall.name(),
                preview(bytes, self.preview)
            ),
            Chunk::Gap { len, reason, .. } => {
                format!(
                    "conn {:#x} {dir}  {len:>6} B  gap ({})",
                    c.id,
                    reason.as_str()
                )
            }
        };
        let _ = writeln!(self.out, "{line}");
    }

    fn closed(&mut self, c: &ConnInfo, end: ConnEnd, _at_ns: u64) {
        let _ = writeln!(self.out, "conn {:#x} closed ({})", c.id, end.as_str());
        let _ = self.out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_escape_control_bytes_and_cut() {
        assert_eq!(preview(b"GET / HTTP/1.1\r\n", 100), "GET / HTTP/1.1\\r\\n");
        assert_eq!(preview(b"\x00\xffab", 100), "\\x00\\xffab");
        assert_eq!(preview(b"abcdef", 3), "abc…");
    }
}
