//! Facts about processes and sockets read from `/proc`.

use std::{
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use sonde_proto::Role;

/// Root of procfs; tests point it elsewhere.
#[derive(Clone, Debug)]
pub struct Procfs {
    root: PathBuf,
    /// The network namespace (inode) of sonde itself: its own tables stand in for a process
    /// of the same namespace whose tables cannot be read any more.
    own_netns: Option<u32>,
}

impl Default for Procfs {
    fn default() -> Self {
        let own_netns = fs::read_link("/proc/self/ns/net").ok().and_then(|l| {
            l.to_str()?
                .strip_prefix("net:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        });
        Self {
            root: PathBuf::from("/proc"),
            own_netns,
        }
    }
}

const TCP_LISTEN: u8 = 0x0A;

impl Procfs {
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            own_netns: None,
        }
    }

    /// Takes `<root>/self` as sonde's own process, in network namespace `netns`.
    pub fn with_own_netns(mut self, netns: u32) -> Self {
        self.own_netns = Some(netns);
        self
    }

    /// The process's `comm`, or `None` if it is gone.
    pub fn comm(&self, pid: u32) -> Option<String> {
        let s = fs::read_to_string(self.root.join(pid.to_string()).join("comm")).ok()?;
        Some(s.trim_end_matches('\n').to_owned())
    }

    /// Listening TCP sockets in the network namespace of `pid`; `None` when neither table
    /// could be read (the process is gone, or exiting: a zombie's `net/tcp` cannot be read).
    pub fn listeners(&self, pid: u32) -> Option<Vec<SocketAddr>> {
        self.listeners_of(&pid.to_string())
    }

    fn listeners_of(&self, process: &str) -> Option<Vec<SocketAddr>> {
        let mut out = Vec::new();
        let mut read = false;
        for file in ["tcp", "tcp6"] {
            let path = self.root.join(process).join("net").join(file);
            if let Ok(text) = fs::read_to_string(path) {
                read = true;
                out.extend(
                    parse_net_tcp(&text)
                        .filter(|(_, st)| *st == TCP_LISTEN)
                        .map(|(a, _)| a),
                );
            }
        }
        read.then_some(out)
    }

    /// Whether the process is the server side of a connection with local address `local`:
    /// some socket of its namespace (`netns`) listens on that port (on that address or a
    /// wildcard). A short-lived process (a PostgreSQL backend, a curl) is often gone, or a
    /// zombie whose tables cannot be read, by the time its first record is handled: then
    /// sonde's own tables answer when it shares the namespace, else the role is `Unknown` and
    /// the bytes decide (calling a server a client would make its requests look like answers).
    pub fn role_of(&self, pid: u32, netns: u32, local: SocketAddr) -> Role {
        let listeners = self.listeners(pid).or_else(|| {
            (netns != 0 && self.own_netns == Some(netns))
                .then(|| self.listeners_of("self"))
                .flatten()
        });
        let Some(listeners) = listeners else {
            return Role::Unknown;
        };
        let serves = listeners.iter().any(|l| {
            l.port() == local.port()
                && (l.ip().is_unspecified() || l.ip() == local.ip() || same_v4(l.ip(), local.ip()))
        });
        if serves { Role::Server } else { Role::Client }
    }
}

/// `::ffff:a.b.c.d` and `a.b.c.d` name the same address.
fn same_v4(a: IpAddr, b: IpAddr) -> bool {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(v) => Some(v),
        IpAddr::V6(v) => v.to_ipv4_mapped(),
    };
    v4(a).is_some() && v4(a) == v4(b)
}

/// Parses `/proc/net/tcp{,6}`: (local address, state) per socket.
pub fn parse_net_tcp(text: &str) -> impl Iterator<Item = (SocketAddr, u8)> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut cols = line.split_whitespace();
        let _sl = cols.next()?;
        let local = cols.next()?;
        let _remote = cols.next()?;
        let st = u8::from_str_radix(cols.next()?, 16).ok()?;
        Some((parse_hex_addr(local)?, st))
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6): the address words are printed in
/// host byte order, 32 bits at a time.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_proc_net_tcp() {
        let v: Vec<_> = parse_net_tcp(TCP).collect();
        assert_eq!(
            v,
            vec![
                ("127.0.0.1:8080".parse().unwrap(), 0x0A),
                ("127.0.0.1:8080".parse().unwrap(), 0x01)
            ]
        );
        let v: Vec<_> = parse_net_tcp(TCP6).collect();
        assert_eq!(v, vec![("[::1]:80".parse().unwrap(), 0x0A)]);
    }

    #[test]
    fn infers_roles_from_listeners() {
        let dir = std::env::temp_dir().join(format!("sonde-procfs-{}", std::process::id()));
        let net = dir.join("42").join("net");
        fs::create_dir_all(&net).unwrap();
        fs::write(net.join("tcp"), TCP).unwrap();
        fs::write(net.join("tcp6"), TCP6).unwrap();
        let p = Procfs::at(&dir);
        assert_eq!(
            p.role_of(42, 0, "127.0.0.1:8080".parse().unwrap()),
            Role::Server
        );
        assert_eq!(
            p.role_of(42, 0, "127.0.0.1:54321".parse().unwrap()),
            Role::Client
        );
        assert_eq!(p.role_of(42, 0, "[::1]:80".parse().unwrap()), Role::Server);
        assert_eq!(
            p.role_of(43, 0, "127.0.0.1:8080".parse().unwrap()),
            Role::Unknown
        );
        // A process whose tables cannot be read (a zombie): unknown, never a guess...
        fs::create_dir_all(dir.join("44")).unwrap();
        assert_eq!(
            p.role_of(44, 7, "127.0.0.1:8080".parse().unwrap()),
            Role::Unknown
        );
        // ...unless it shares sonde's namespace: sonde's own tables answer.
        let own = dir.join("self").join("net");
        fs::create_dir_all(&own).unwrap();
        fs::write(own.join("tcp"), TCP).unwrap();
        let p = Procfs::at(&dir).with_own_netns(7);
        assert_eq!(
            p.role_of(44, 7, "127.0.0.1:8080".parse().unwrap()),
            Role::Server
        );
        assert_eq!(
            p.role_of(44, 7, "127.0.0.1:54321".parse().unwrap()),
            Role::Client
        );
        assert_eq!(
            p.role_of(44, 8, "127.0.0.1:8080".parse().unwrap()),
            Role::Unknown,
            "another namespace"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
