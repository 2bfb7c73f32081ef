//! What a mapped ELF file offers to the TLS probes: exported OpenSSL functions, or Go's
//! `crypto/tls.(*Conn).Write`/`Read` with the file offsets of their `RET` instructions and the
//! struct offsets that lead from a `*tls.Conn` to its socket fd.
//!
//! Go offsets come from the binary's own DWARF (`.debug_info`, compressed or not). Binaries
//! without DWARF but with a symbol table use the layout shared by Go 1.17 to 1.27
//! ([`GoOffsets::FALLBACK`]); stripped binaries (no `.symtab`) cannot be hooked: the functions
//! cannot be found.

use std::{borrow::Cow, collections::HashMap, path::Path};

use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use object::{Object, ObjectSection, ObjectSymbol, SectionIndex, elf::SHF_EXECINSTR};

/// OpenSSL functions the probes hook, in the order of `OPENSSL_FUNCS`.
pub const OPENSSL_FUNCS: [&str; 5] = [
    "SSL_write",
    "SSL_read",
    "SSL_write_ex",
    "SSL_read_ex",
    "SSL_do_handshake",
];

pub const GO_WRITE: &str = "crypto/tls.(*Conn).Write";
pub const GO_READ: &str = "crypto/tls.(*Conn).Read";

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file sonde can read: {source}")]
    Parse {
        path: String,
        #[source]
        source: object::Error,
    },
}

/// Byte offsets inside Go structs on the path `*tls.Conn` → fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoOffsets {
    /// `tls.Conn.conn` + 8: the data word of the `net.Conn` interface.
    pub conn_data: u8,
    /// `net.TCPConn.conn` + `net.conn.fd`: the `*netFD`.
    pub tcpconn_fd: u8,
    /// `netFD.pfd` + `poll.FD.Sysfd`.
    pub netfd_sysfd: u8,
}

impl GoOffsets {
    /// The layout of every Go release from 1.17 to 1.27 (checked against their sources):
    /// `conn` is the first field of `tls.Conn`, `fd` of `net.conn`, `pfd` of `netFD`, and
    /// `Sysfd` follows the 16-byte `fdMutex` in `poll.FD`.
    pub const FALLBACK: Self = Self {
        conn_data: 8,
        tcpconn_fd: 0,
        netfd_sysfd: 16,
    };

    pub fn cookie(self) -> u64 {
        sonde_proto::go_cookie(self.conn_data, self.tcpconn_fd, self.netfd_sysfd)
    }
}

/// A Go function to hook: its entry and every `RET`, as file offsets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFunc {
    pub entry: u64,
    pub rets: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inspection {
    /// Exports OpenSSL's API: (function, file offset) of those present.
    OpenSsl(Vec<(&'static str, u64)>),
    Go {
        version: Option<String>,
        write: GoFunc,
        read: GoFunc,
        offsets: GoOffsets,
        /// Where the offsets came from: "dwarf" or "fallback".
        offsets_from: &'static str,
    },
    /// Nothing to hook; the reason is for `sonde doctor` and logs.
    NotTls(&'static str),
}

/// Inspects the file at `path`. Most mapped files are neither Go nor OpenSSL: for those only
/// the headers and the dynamic string table are read (one search for `SSL_write`); the others
/// are read whole and parsed from memory.
pub fn inspect(path: &Path) -> Result<Inspection, ElfError> {
    let io = |source| ElfError::Io {
        path: path.display().to_string(),
        source,
    };
    let parse = |source| ElfError::Parse {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let cache = object::ReadCache::new(f);
    {
        let file = object::File::parse(&cache).map_err(parse)?;
        let is_go = file.section_by_name(".go.buildinfo").is_some()
            || file.section_by_name(".gopclntab").is_some();
        let exports_ssl = file
            .section_by_name(".dynstr")
            .and_then(|s| s.data().ok())
            .is_some_and(|d| memchr::memmem::find(d, b"\0SSL_write\0").is_some());
        if !is_go && !exports_ssl {
            return Ok(Inspection::NotTls("no exported SSL_write"));
        }
    }
    let data = std::fs::read(path).map_err(io)?;
    inspect_data(&data[..]).map_err(parse)
}

pub fn inspect_bytes(data: &[u8]) -> Result<Inspection, object::Error> {
    inspect_data(data)
}

fn inspect_data<'d, R: object::ReadRef<'d>>(data: R) -> Result<Inspection, object::Error> {
    let file = object::File::parse(data)?;
    let is_go = file.section_by_name(".go.buildinfo").is_some()
        || file.section_by_name(".gopclntab").is_some();
    if !is_go {
        let mut found = Vec::new();
        for sym in file.dynamic_symbols() {
            let Ok(name) = sym.name() else { continue };
            if let Some(f) = OPENSSL_FUNCS.iter().find(|f| **f == name)
                && sym.is_definition()
                && let Some(off) = file_offset(&file, sym.section_index(), sym.address())
                && !found.iter().any(|(n, _)| n == f)
            {
                found.push((*f, off));
            }
        }
        if found.iter().any(|(n, _)| *n == "SSL_write") {
            found.sort_by_key(|(n, _)| OPENSSL_FUNCS.iter().position(|f| f == n));
            return Ok(Inspection::OpenSsl(found));
        }
        return Ok(Inspection::NotTls("no exported SSL_write"));
    }
    let version = go_version(&file);
    if let Some(v) = &version
        && !register_abi(v)
    {
        return Ok(Inspection::NotTls(
            "Go before 1.17 (stack ABI) is not supported",
        ));
    }
    let mut funcs: HashMap<&str, GoFunc> = HashMap::new();
    let mut any_symbol = false;
    for sym in file.symbols() {
        any_symbol = true;
        let Ok(name) = sym.name() else { continue };
        if name != GO_WRITE && name != GO_READ {
            continue;
        }
        let Some(f) = go_func(&file, sym.section_index(), sym.address(), sym.size())? else {
            continue;
        };
        funcs.insert(if name == GO_WRITE { GO_WRITE } else { GO_READ }, f);
    }
    if !any_symbol {
        return Ok(Inspection::NotTls(
            "stripped Go binary: no symbol table to find crypto/tls in",
        ));
    }
    let (Some(write), Some(read)) = (funcs.remove(GO_WRITE), funcs.remove(GO_READ)) else {
        return Ok(Inspection::NotTls("Go binary without crypto/tls"));
    };
    let (offsets, offsets_from) = match dwarf_offsets(&file) {
        Some(o) => (o, "dwarf"),
        None => (GoOffsets::FALLBACK, "fallback"),
    };
    Ok(Inspection::Go {
        version,
        write,
        read,
        offsets,
        offsets_from,
    })
}

/// Go 1.17+ passes arguments in registers on amd64.
fn register_abi(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("go1.") else {
        return true;
    };
    let minor: String = rest.chars().take_while(char::is_ascii_digit).collect();
    minor.parse::<u32>().is_ok_and(|m| m >= 17)
}

/// `go1.N...` from `.go.buildinfo`.
fn go_version<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>) -> Option<String> {
    let data = file.section_by_name(".go.buildinfo")?.data().ok()?;
    let at = data.windows(4).position(|w| w == b"go1.")?;
    let v: String = data[at..]
        .iter()
        .take(32)
        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'.' || **b == b'-')
        .map(|&b| b as char)
        .collect();
    Some(v)
}

/// File offset of virtual address `addr` in the section `index`.
fn file_offset<'d, R: object::ReadRef<'d>>(
    file: &object::File<'d, R>,
    index: Option<SectionIndex>,
    addr: u64,
) -> Option<u64> {
    let section = file.section_by_index(index?).ok()?;
    let (off, size) = section.file_range()?;
    let rel = addr.checked_sub(section.address())?;
    (rel < size).then_some(off + rel)
}

/// Entry and `RET` offsets of a function, by decoding its instructions (a `0xC3` byte can sit
/// inside another instruction, so scanning bytes is not enough).
fn go_func<'d, R: object::ReadRef<'d>>(
    file: &object::File<'d, R>,
    index: Option<SectionIndex>,
    addr: u64,
    size: u64,
) -> Result<Option<GoFunc>, object::Error> {
    let Some(index) = index else { return Ok(None) };
    let section = file.section_by_index(index)?;
    if let object::SectionFlags::Elf { sh_flags } = section.flags()
        && sh_flags & u64::from(SHF_EXECINSTR) == 0
    {
        return Ok(None);
    }
    let Some((sec_off, _)) = section.file_range() else {
        return Ok(None);
    };
    let Some(code) = section.data_range(addr, size)? else {
        return Ok(None);
    };
    let mut decoder = Decoder::with_ip(64, code, addr, DecoderOptions::NONE);
    let mut rets = Vec::new();
    for insn in &mut decoder {
        if insn.mnemonic() == Mnemonic::Ret {
            rets.push(insn.ip() - section.address() + sec_off);
        }
    }
    if rets.is_empty() {
        return Ok(None);
    }
    Ok(Some(GoFunc {
        entry: addr - section.address() + sec_off,
        rets,
    }))
}

/// Struct member offsets from `.debug_info`.
fn dwarf_offsets<'d, R: object::ReadRef<'d>>(file: &object::File<'d, R>) -> Option<GoOffsets> {
    dwarf_offsets_in(file, false).or_else(|| dwarf_offsets_in(file, true))
}

type Slice<'a> = gimli::EndianSlice<'a, gimli::LittleEndian>;

/// A `DW_AT_name` value: inline (what Go writes) or in `.debug_str`.
fn name_of<'a>(
    dwarf: &gimli::Dwarf<Slice<'a>>,
    v: gimli::AttributeValue<Slice<'a>>,
) -> Option<&'a [u8]> {
    match v {
        gimli::AttributeValue::String(s) => Some(s.slice()),
        gimli::AttributeValue::DebugStrRef(o) => dwarf.debug_str.get_str(o).ok().map(|s| s.slice()),
        _ => None,
    }
}

fn dwarf_offsets_in<'d, R: object::ReadRef<'d>>(
    file: &object::File<'d, R>,
    all_units: bool,
) -> Option<GoOffsets> {
    // Only the sections a walk of type entries needs: decompressing the others (lines,
    // locations, frames) would cost more than the walk.
    let load = |id: gimli::SectionId| -> Result<Cow<'d, [u8]>, gimli::Error> {
        let needed = matches!(
            id,
            gimli::SectionId::DebugInfo
                | gimli::SectionId::DebugAbbrev
                | gimli::SectionId::DebugStr
        );
        Ok(needed
            .then(|| file.section_by_name(id.name()))
            .flatten()
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let name_of = |v| name_of(&dwarf, v);
    let wanted: [(&str, &str); 5] = [
        ("crypto/tls.Conn", "conn"),
        ("net.TCPConn", "conn"),
        ("net.conn", "fd"),
        ("net.netFD", "pfd"),
        ("internal/poll.FD", "Sysfd"),
    ];
    let mut found: HashMap<(&str, &str), u64> = HashMap::new();
    let mut units = dwarf.debug_info.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(abbrevs) = dwarf.abbreviations(&header) else {
            continue;
        };
        let mut entries = header.entries(&abbrevs);
        // Go's linker writes the type entries into the `runtime` compile unit (1.19 to 1.27);
        // the packages' own units are looked at too, the rest only if that was not enough.
        let Ok(Some((_, root))) = entries.next_dfs() else {
            continue;
        };
        let cu = root
            .attr_value(gimli::DW_AT_name)
            .ok()
            .flatten()
            .and_then(name_of);
        if !all_units
            && !matches!(
                cu,
                Some(b"runtime" | b"crypto/tls" | b"net" | b"internal/poll")
            )
        {
            continue;
        }
        let mut current: Option<(&str, isize)> = None;
        let mut depth: isize = 0;
        while let Ok(Some((delta, entry))) = entries.next_dfs() {
            depth += delta;
            if current.is_some_and(|(_, d)| depth <= d) {
                current = None;
            }
            let tag = entry.tag();
            if tag != gimli::DW_TAG_structure_type
                && (tag != gimli::DW_TAG_member || current.is_none())
            {
                continue;
            }
            let name = entry
                .attr_value(gimli::DW_AT_name)
                .ok()
                .flatten()
                .and_then(name_of)
                .and_then(|s| std::str::from_utf8(s).ok());
            if tag == gimli::DW_TAG_structure_type {
                current = name
                    .and_then(|n| wanted.iter().find(|(s, _)| *s == n))
                    .map(|(s, _)| (*s, depth));
            } else if let (Some((s, _)), Some(n)) = (current, name)
                && let Some(key) = wanted.iter().find(|(ws, wm)| *ws == s && *wm == n)
                && let Some(off) = entry
                    .attr_value(gimli::DW_AT_data_member_location)
                    .ok()
                    .flatten()
                    .and_then(|v| v.udata_value())
            {
                found.insert(*key, off);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    let get = |k: (&str, &str)| found.get(&k).copied();
    let conn_data = get(wanted[0])? + 8;
    let tcpconn_fd = get(wanted[1])? + get(wanted[2])?;
    let netfd_sysfd = get(wanted[3])? + get(wanted[4])?;
    Some(GoOffsets {
        conn_data: u8::try_from(conn_data).ok()?,
        tcpconn_fd: u8::try_from(tcpconn_fd).ok()?,
        netfd_sysfd: u8::try_from(netfd_sysfd).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_abi_starts_at_go_1_17() {
        assert!(!register_abi("go1.16.15"));
        assert!(register_abi("go1.17"));
        assert!(register_abi("go1.19.8"));
        assert!(register_abi("go1.27.3"));
    }

    #[test]
    fn libssl_exports_the_hooked_functions() {
        let lib = Path::new("/usr/lib/x86_64-linux-gnu/libssl.so.3");
        if !lib.exists() {
            return;
        }
        match inspect(lib).unwrap() {
            Inspection::OpenSsl(funcs) => {
                let names: Vec<_> = funcs.iter().map(|(n, _)| *n).collect();
                assert_eq!(names, OPENSSL_FUNCS.to_vec());
                assert!(funcs.iter().all(|(_, off)| *off > 0));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_programs_are_not_tls() {
        assert!(matches!(
            inspect(Path::new("/bin/sh")).unwrap(),
            Inspection::NotTls(_)
        ));
    }
}
