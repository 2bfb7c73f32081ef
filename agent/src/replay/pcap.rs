//! pcap and pcapng files to TCP segments.
//!
//! Link layers: Ethernet (tcpdump on an interface, including `lo`), Linux cooked capture v1 and
//! v2 (`tcpdump -i any`), raw IPv4/IPv6, and BSD loopback. Anything else, and non-TCP packets,
//! are counted and skipped.

use std::{fs::File, io::Read, net::SocketAddr, path::Path};

use etherparse::{EtherType, InternetSlice, SlicedPacket, TransportSlice};
use pcap_parser::{Block, PcapBlockOwned, PcapError, create_reader, pcapng::EnhancedPacketBlock};

use super::tcp::Segment;

#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a pcap or pcapng file ({why})")]
    Format { path: String, why: String },
    #[error("{path}: corrupt capture after {consumed} bytes ({why})")]
    Corrupt {
        path: String,
        consumed: usize,
        why: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcapStats {
    pub packets: u64,
    pub tcp_segments: u64,
    pub skipped_not_tcp: u64,
    pub skipped_link_type: u64,
    pub skipped_truncated: u64,
}

/// Link-layer types this reader understands (pcap LINKTYPE_* values).
const LINKTYPE_NULL: i32 = 0;
const LINKTYPE_ETHERNET: i32 = 1;
const LINKTYPE_RAW: i32 = 101;
const LINKTYPE_LOOP: i32 = 108;
const LINKTYPE_LINUX_SLL: i32 = 113;
const LINKTYPE_IPV4: i32 = 228;
const LINKTYPE_IPV6: i32 = 229;
const LINKTYPE_LINUX_SLL2: i32 = 276;

struct Interface {
    linktype: i32,
    /// Timestamp units per second.
    resolution: u64,
    offset: u64,
}

fn slice(linktype: i32, data: &[u8]) -> Option<SlicedPacket<'_>> {
    match linktype {
        LINKTYPE_ETHERNET => SlicedPacket::from_ethernet(data).ok(),
        LINKTYPE_LINUX_SLL => SlicedPacket::from_linux_sll(data).ok(),
        LINKTYPE_LINUX_SLL2 => {
            // 20-byte header; the protocol (EtherType) is its first two bytes.
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            SlicedPacket::from_ether_type(EtherType(proto), data.get(20..)?).ok()
        }
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => SlicedPacket::from_ip(data).ok(),
        LINKTYPE_NULL | LINKTYPE_LOOP => SlicedPacket::from_ip(data.get(4..)?).ok(),
        _ => None,
    }
}

/// The TCP segment in one captured frame, if it holds one.
fn segment<'a>(
    linktype: i32,
    ts_ns: u64,
    data: &'a [u8],
    stats: &mut PcapStats,
) -> Option<Segment<'a>> {
    let Some(p) = slice(linktype, data) else {
        stats.skipped_not_tcp += 1;
        return None;
    };
    let (src, dst) = match &p.net {
        Some(InternetSlice::Ipv4(ip)) => (
            std::net::IpAddr::V4(ip.header().source_addr()),
            std::net::IpAddr::V4(ip.header().destination_addr()),
        ),
        Some(InternetSlice::Ipv6(ip)) => (
            std::net::IpAddr::V6(ip.header().source_addr()),
            std::net::IpAddr::V6(ip.header().destination_addr()),
        ),
        _ => {
            stats.skipped_not_tcp += 1;
            return None;
        }
    };
    let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
        stats.skipped_not_tcp += 1;
        return None;
    };
    stats.tcp_segments += 1;
    Some(Segment {
        ts_ns,
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        syn: tcp.syn(),
        ack: tcp.ack(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    })
}

/// Reads every TCP segment of a capture file, in file order, calling `f` for each.
pub fn for_each_segment(
    path: &Path,
    mut f: impl FnMut(&Segment<'_>),
) -> Result<PcapStats, PcapFileError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| PcapFileError::Open {
        path: name.clone(),
        source,
    })?;
    read_segments(&name, file, &mut f)
}

fn read_segments(
    name: &str,
    input: impl Read + Send,
    f: &mut impl FnMut(&Segment<'_>),
) -> Result<PcapStats, PcapFileError> {
    let mut reader = create_reader(1 << 20, input).map_err(|e| PcapFileError::Format {
        path: name.to_owned(),
        why: format!("{e:?}"),
    })?;
    let mut stats = PcapStats::default();
    let mut legacy: Option<(i32, u64)> = None;
    let mut interfaces: Vec<Interface> = Vec::new();
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        let res = if h.is_nanosecond_precision() { 1 } else { 1000 };
                        legacy = Some((h.network.0, res));
                    }
                    PcapBlockOwned::Legacy(b) => {
                        stats.packets += 1;
                        let (lt, mul) = legacy.unwrap_or((LINKTYPE_ETHERNET, 1000));
                        let ts = u64::from(b.ts_sec) * 1_000_000_000 + u64::from(b.ts_usec) * mul;
                        if b.caplen < b.origlen {
                            stats.skipped_truncated += 1;
                        }
                        if let Some(s) = segment(lt, ts, b.data, &mut stats) {
                            f(&s);
                        }
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype.0,
                            resolution: idb.ts_resolution().unwrap_or(1_000_000),
                            offset: idb.ts_offset().max(0) as u64,
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        stats.packets += 1;
                        handle_epb(&epb, &interfaces, &mut stats, f);
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        stats.packets += 1;
                        // Simple packets carry no timestamp: they get time 0.
                        if let Some(i) = interfaces.first()
                            && let Some(s) = segment(i.linktype, 0, spb.data, &mut stats)
                        {
                            f(&s);
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                reader.consume(offset);
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                let consumed = reader.consumed();
                reader.refill().map_err(|e| PcapFileError::Corrupt {
                    path: name.to_owned(),
                    consumed,
                    why: format!("{e:?}"),
                })?;
            }
            Err(e) => {
                let why = format!("{e:?}");
                return Err(PcapFileError::Corrupt {
                    path: name.to_owned(),
                    consumed: reader.consumed(),
                    why,
                });
            }
        }
    }
    Ok(stats)
}

fn handle_epb(
    epb: &EnhancedPacketBlock<'_>,
    interfaces: &[Interface],
    stats: &mut PcapStats,
    f: &mut impl FnMut(&Segment<'_>),
) {
    let Some(i) = interfaces.get(epb.if_id as usize) else {
        stats.skipped_link_type += 1;
        return;
    };
    let (sec, frac) = epb.decode_ts(i.offset, i.resolution);
    let ts = u64::from(sec) * 1_000_000_000
        + (u128::from(frac) * 1_000_000_000 / u128::from(i.resolution.max(1))) as u64;
    if epb.caplen < epb.origlen {
        stats.skipped_truncated += 1;
    }
    let data = &epb.data[..(epb.caplen as usize).min(epb.data.len())];
    if let Some(s) = segment(i.linktype, ts, data, stats) {
        f(&s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy pcap (microsecond, Ethernet) with one TCP segment built by hand.
    fn tiny_pcap() -> Vec<u8> {
        let payload = b"GET / HTTP/1.1\r\n\r\n";
        let builder = etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
            .ipv4([127, 0, 0, 1], [127, 0, 0, 2], 64)
            .tcp(40000, 80, 1234, 65535)
            .ack(1);
        let mut frame = Vec::new();
        builder.write(&mut frame, payload).unwrap();
        let mut v = Vec::new();
        v.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
        v.extend_from_slice(&2u16.to_le_bytes());
        v.extend_from_slice(&4u16.to_le_bytes());
        v.extend_from_slice(&0i32.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&65535u32.to_le_bytes());
        v.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        v.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        v.extend_from_slice(&250_000u32.to_le_bytes());
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        v.extend_from_slice(&frame);
        v
    }

    #[test]
    fn reads_a_tcp_segment_from_a_pcap() {
        let mut got = Vec::new();
        let stats = read_segments("mem", std::io::Cursor::new(tiny_pcap()), &mut |s| {
            got.push((s.ts_ns, s.src, s.dst, s.seq, s.payload.to_vec()));
        })
        .unwrap();
        assert_eq!(stats.packets, 1);
        assert_eq!(stats.tcp_segments, 1);
        assert_eq!(
            got,
            vec![(
                1_700_000_000_250_000_000,
                "127.0.0.1:40000".parse().unwrap(),
                "127.0.0.2:80".parse().unwrap(),
                1234,
                b"GET / HTTP/1.1\r\n\r\n".to_vec()
            )]
        );
    }

    #[test]
    fn rejects_a_file_that_is_not_a_capture() {
        let r = read_segments(
            "junk",
            std::io::Cursor::new(b"hello world, not a pcap".repeat(10)),
            &mut |_| {},
        );
        assert!(matches!(r, Err(PcapFileError::Format { .. })), "{r:?}");
    }
}
