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
use object::{
    CompressionFormat, Object, ObjectSection, ObjectSymbol, SectionIndex, elf::SHF_EXECINSTR,
};

use crate::elfread::{BoundedFile, Inspector, Limits, REFUSALS, Refusal, Refusals};

/// Longest function whose instructions are decoded (Go's `Write`/`Read` are about 1 KiB).
const FUNC_MAX: u64 = 1 << 20;

type ElfFile<'d> = object::File<'d, &'d BoundedFile>;

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
    #[error("{path} was not inspected: {refusal}")]
    Refused {
        path: String,
        #[source]
        refusal: Refusal,
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

/// Inspects the file at `path` within [`Limits::DEFAULT`]; refusals are counted in
/// [`REFUSALS`].
pub fn inspect(path: &Path) -> Result<Inspection, ElfError> {
    inspect_with(path, Limits::DEFAULT, &REFUSALS)
}

/// Inspects the file at `path`. Most mapped files are neither Go nor OpenSSL: for those only
/// the headers, the dynamic symbols and the dynamic string table are read. Every read is
/// bounded by `limits`; a file over them is refused and counted in `refusals`, except that Go
/// DWARF over them only loses its offsets to [`GoOffsets::FALLBACK`] (and is counted).
pub fn inspect_with(
    path: &Path,
    limits: Limits,
    refusals: &Refusals,
) -> Result<Inspection, ElfError> {
    let file = BoundedFile::open(path, limits).map_err(|source| ElfError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let result = inspect_file(&file);
    if let Some(refusal) = file.refusal() {
        refusals.record(Inspector::Tls, &file, path, refusal);
        if !matches!(result, Ok(Inspection::Go { .. })) {
            return Err(ElfError::Refused {
                path: path.display().to_string(),
                refusal,
            });
        }
    }
    result.map_err(|source| ElfError::Parse {
        path: path.display().to_string(),
        source,
    })
}

fn inspect_file(bounded: &BoundedFile) -> Result<Inspection, object::Error> {
    if !matches!(bounded.elf64_header(), Ok(Some(_))) {
        return Ok(Inspection::NotTls("not a 64-bit little-endian ELF file"));
    }
    let file = object::File::parse(bounded)?;
    let is_go = file.section_by_name(".go.buildinfo").is_some()
        || file.section_by_name(".gopclntab").is_some();
    if !is_go {
        let exports_ssl = file
            .section_by_name(".dynstr")
            .and_then(|s| s.data().ok())
            .is_some_and(|d| memchr::memmem::find(d, b"\0SSL_write\0").is_some());
        if !exports_ssl {
            return Ok(Inspection::NotTls("no exported SSL_write"));
        }
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
    // Symbol names are read from the string table in one piece, not one read per name.
    if let Some(strtab) = file.section_by_name(".strtab") {
        strtab.data()?;
    }
    let mut funcs: HashMap<&str, GoFunc> = HashMap::new();
    let mut any_symbol = false;
    for sym in file.symbols() {
        any_symbol = true;
        let Ok(name) = sym.name() else { continue };
        if name != GO_WRITE && name != GO_READ {
            continue;
        }
        let Some(f) = go_func(
            bounded,
            &file,
            sym.section_index(),
            sym.address(),
            sym.size(),
        )?
        else {
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
    let (offsets, offsets_from) = match dwarf_offsets(bounded, &file) {
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
fn go_version(file: &ElfFile<'_>) -> Option<String> {
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
fn file_offset(file: &ElfFile<'_>, index: Option<SectionIndex>, addr: u64) -> Option<u64> {
    let section = file.section_by_index(index?).ok()?;
    let (off, size) = section.file_range()?;
    let rel = addr.checked_sub(section.address())?;
    (rel < size).then_some(off + rel)
}

/// Entry and `RET` offsets of a function, by decoding its instructions (a `0xC3` byte can sit
/// inside another instruction, so scanning bytes is not enough). Only the function's bytes are
/// read, not its section.
fn go_func<'d>(
    bounded: &'d BoundedFile,
    file: &ElfFile<'d>,
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
    let Some((sec_off, sec_size)) = section.file_range() else {
        return Ok(None);
    };
    let Some(rel) = addr.checked_sub(section.address()) else {
        return Ok(None);
    };
    if rel.checked_add(size).is_none_or(|end| end > sec_size) {
        return Ok(None);
    }
    if size > FUNC_MAX {
        bounded.refuse(Refusal::TooLarge {
            offset: sec_off + rel,
            size,
            limit: FUNC_MAX,
        });
        return Ok(None);
    }
    let Ok(code) = object::ReadRef::read_bytes_at(bounded, sec_off + rel, size) else {
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
        entry: sec_off + rel,
        rets,
    }))
}

/// A section's bytes, decompressed if it is compressed. The declared size of a compressed
/// section is charged to the file's limits before anything is allocated; zlib (what Go
/// writes) never inflates past it. Other formats are left alone: object's zstd path grows its
/// output past the declared size.
fn bounded_section<'d>(
    bounded: &'d BoundedFile,
    section: &object::Section<'d, '_, &'d BoundedFile>,
) -> Option<Cow<'d, [u8]>> {
    let range = section.compressed_file_range().ok()?;
    match range.format {
        CompressionFormat::None => section.data().ok().map(Cow::Borrowed),
        CompressionFormat::Zlib => {
            bounded.charge(range.offset, range.uncompressed_size).ok()?;
            section.compressed_data().ok()?.decompress().ok()
        }
        _ => None,
    }
}

/// Struct member offsets from `.debug_info`.
fn dwarf_offsets<'d>(bounded: &'d BoundedFile, file: &ElfFile<'d>) -> Option<GoOffsets> {
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
            .and_then(|s| bounded_section(bounded, &s))
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load).ok()?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    dwarf_offsets_in(&dwarf, false).or_else(|| dwarf_offsets_in(&dwarf, true))
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

fn dwarf_offsets_in(dwarf: &gimli::Dwarf<Slice<'_>>, all_units: bool) -> Option<GoOffsets> {
    let name_of = |v| name_of(dwarf, v);
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
        assert!(
            lib.exists(),
            "{} is missing: this test inspects the system OpenSSL; install it with \
             `apt-get install libssl3` (or run `cargo xtask setup`)",
            lib.display()
        );
        let refusals = Refusals::new();
        match inspect_with(lib, Limits::DEFAULT, &refusals).unwrap() {
            Inspection::OpenSsl(funcs) => {
                let names: Vec<_> = funcs.iter().map(|(n, _)| *n).collect();
                assert_eq!(names, OPENSSL_FUNCS.to_vec());
                assert!(funcs.iter().all(|(_, off)| *off > 0));
            }
            other => panic!("{other:?}"),
        }
        assert!(refusals.samples().iter().all(|(_, _, n)| *n == 0));
        // Only the headers, dynamic symbols and names are copied, not the 670 KB library.
        let file = BoundedFile::open(lib, Limits::DEFAULT).unwrap();
        assert!(matches!(inspect_file(&file), Ok(Inspection::OpenSsl(_))));
        assert!(file.copied() < 128 << 10, "copied {} bytes", file.copied());
    }

    #[test]
    fn plain_programs_are_not_tls() {
        assert!(matches!(
            inspect(Path::new("/bin/sh")).unwrap(),
            Inspection::NotTls(_)
        ));
    }

    use crate::elfread::testelf::{Sec, build, set_section_count, write};
    use object::elf::{SHF_ALLOC, SHF_COMPRESSED, SHT_PROGBITS, SHT_STRTAB, SHT_SYMTAB};

    const TEXT_ADDR: u64 = 0x40_1000;

    /// A Go binary in miniature: `crypto/tls.(*Conn).Write` and `Read` (each `nop; ret`) in
    /// `.text`, a version in `.go.buildinfo`, and a `.debug_info` compressed with zlib whose
    /// header declares `debug_info_size` bytes.
    fn go_tls_binary(debug_info_size: u64) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut symtab = vec![0u8; 24];
        for (i, name) in [GO_WRITE, GO_READ].iter().enumerate() {
            let name_off = strtab.len() as u32;
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
            symtab.extend_from_slice(&name_off.to_le_bytes());
            symtab.push(0x12); // STB_GLOBAL, STT_FUNC
            symtab.push(0);
            symtab.extend_from_slice(&1u16.to_le_bytes()); // .text
            symtab.extend_from_slice(&(TEXT_ADDR + 2 * i as u64).to_le_bytes());
            symtab.extend_from_slice(&2u64.to_le_bytes());
        }
        let mut debug_info = Vec::new();
        debug_info.extend_from_slice(&1u32.to_le_bytes()); // ELFCOMPRESS_ZLIB
        debug_info.extend_from_slice(&0u32.to_le_bytes());
        debug_info.extend_from_slice(&debug_info_size.to_le_bytes());
        debug_info.extend_from_slice(&1u64.to_le_bytes());
        // A zlib stream of a run of zeros: what a decompression bomb looks like.
        debug_info.extend_from_slice(&[0x78, 0x9c, 0xed, 0xc1, 0x01, 0x0d, 0, 0, 0, 0xc2]);
        let mut text = Sec::new(".text", SHT_PROGBITS, vec![0x90, 0xc3, 0x90, 0xc3]);
        text.flags = u64::from(SHF_ALLOC | SHF_EXECINSTR);
        text.addr = TEXT_ADDR;
        let mut buildinfo = b"\xff Go buildinf:".to_vec();
        buildinfo.extend_from_slice(b"\x08\x02\0\0\0\0\0\0\0\0\0\0\0\0\x08go1.21.13");
        let mut sym = Sec::new(".symtab", SHT_SYMTAB, symtab);
        sym.link = 4;
        sym.entsize = 24;
        let mut info = Sec::new(".debug_info", SHT_PROGBITS, debug_info);
        info.flags = u64::from(SHF_COMPRESSED);
        build(&[
            text,
            Sec::new(".go.buildinfo", SHT_PROGBITS, buildinfo),
            sym,
            Sec::new(".strtab", SHT_STRTAB, strtab),
            info,
        ])
    }

    #[test]
    fn a_crafted_go_binary_is_inspected() {
        let path = write("tls-go", &go_tls_binary(64));
        let refusals = Refusals::new();
        let Inspection::Go {
            version,
            write,
            read,
            offsets_from,
            ..
        } = inspect_with(&path, Limits::DEFAULT, &refusals).unwrap()
        else {
            panic!("not recognised as Go with crypto/tls");
        };
        assert_eq!(version.as_deref(), Some("go1.21.13"));
        // .text is the first section, at file offset 64.
        assert_eq!((write.entry, write.rets), (64, vec![65]));
        assert_eq!((read.entry, read.rets), (66, vec![67]));
        // 64 bytes of zeros are not DWARF: the known layout is used.
        assert_eq!(offsets_from, "fallback");
        assert!(refusals.samples().iter().all(|(_, _, n)| *n == 0));
    }

    #[test]
    fn dwarf_declaring_4_gib_is_refused_and_the_fallback_used() {
        let path = write("tls-go-4gib", &go_tls_binary(4 << 30));
        let refusals = Refusals::new();
        let inspection = inspect_with(&path, Limits::DEFAULT, &refusals).unwrap();
        assert!(
            matches!(
                inspection,
                Inspection::Go {
                    offsets_from: "fallback",
                    ..
                }
            ),
            "{inspection:?}"
        );
        assert_eq!(refusals.get(Inspector::Tls, "too_large"), 1);
        let file = BoundedFile::open(&path, Limits::DEFAULT).unwrap();
        inspect_file(&file).unwrap();
        assert_eq!(
            file.refusal(),
            Some(Refusal::TooLarge {
                offset: file_offset_of_debug_info(&path),
                size: 4 << 30,
                limit: Limits::DEFAULT.max_read
            })
        );
        assert!(file.copied() < 4 << 10, "copied {} bytes", file.copied());
    }

    fn file_offset_of_debug_info(path: &Path) -> u64 {
        let data = std::fs::read(path).unwrap();
        let f = object::File::parse(&data[..]).unwrap();
        let (off, _) = f
            .section_by_name(".debug_info")
            .unwrap()
            .file_range()
            .unwrap();
        off + 24 // after the compression header
    }

    #[test]
    fn huge_section_counts_are_refused() {
        let mut elf = go_tls_binary(64);
        set_section_count(&mut elf, 1 << 32);
        let path = write("tls-sections", &elf);
        let refusals = Refusals::new();
        let err = inspect_with(&path, Limits::DEFAULT, &refusals).unwrap_err();
        assert!(
            matches!(
                err,
                ElfError::Refused {
                    refusal: Refusal::TooManySections {
                        count: 4294967296,
                        ..
                    },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(refusals.get(Inspector::Tls, "too_many_sections"), 1);
    }

    #[test]
    fn truncated_files_are_refused() {
        let elf = go_tls_binary(64);
        // Cut inside the section headers.
        let path = write("tls-truncated", &elf[..elf.len() - 32]);
        let refusals = Refusals::new();
        let err = inspect_with(&path, Limits::DEFAULT, &refusals).unwrap_err();
        assert!(
            matches!(
                err,
                ElfError::Refused {
                    refusal: Refusal::Truncated { .. },
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(refusals.get(Inspector::Tls, "truncated"), 1);
    }
}
