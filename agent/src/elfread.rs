//! Bounded reading of ELF files that strangers ship: the binaries and libraries of every
//! process on the node.
//!
//! A file's headers decide how much a naive reader allocates (section counts, section sizes,
//! the declared size of a compressed section). Here every byte taken from a file is copied by
//! `pread` into a buffer charged against [`Limits`]; a file that asks for more is refused, the
//! refusal counted in [`REFUSALS`] (`sonde_elf_refused_total` on `/metrics`) and logged once at
//! warn with the path.
//!
//! Why copies and not a memory map: a container can truncate a library while the agent reads it
//! (executing binaries are protected by `ETXTBSY`, mapped libraries are not). Touching a page of
//! a mapping past the new end of the file raises `SIGBUS`, which would kill the agent, and
//! recovering from it inside Rust is not sound. A `pread` of a shrunken file returns short and
//! becomes a [`Refusal::Truncated`]. The copies are small: the headers, the symbol and string
//! tables, two functions' code and, for Go binaries, three DWARF sections.

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    fs::File,
    io,
    ops::Range,
    os::unix::fs::{FileExt, MetadataExt},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use object::{LittleEndian, ReadRef, elf::FileHeader64, read::elf::FileHeader};

/// What an inspection may take from one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Section headers (ELF executables and libraries have tens; 4,096 is generous).
    pub max_sections: u64,
    /// One read or one decompressed section.
    pub max_read: u64,
    /// Everything copied or decompressed by one inspection; freed when it ends.
    pub budget: u64,
}

impl Limits {
    /// With the chart's 512 MiB memory limit, an inspection may take at most a quarter of it.
    /// The largest Go binaries (kubelet, ~110 MB) need about 10 MB of symbols and, when built
    /// with DWARF, tens of MB of decompressed `.debug_info`; when DWARF is refused, Go offsets
    /// fall back to the known layout.
    pub const DEFAULT: Self = Self {
        max_sections: 4096,
        max_read: 64 << 20,
        budget: 128 << 20,
    };
}

/// Why a file was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{count} section headers (limit {limit})")]
    TooManySections { count: u64, limit: u64 },
    #[error("a read of {size} bytes at offset {offset} (limit {limit} per read or section)")]
    TooLarge { offset: u64, size: u64, limit: u64 },
    #[error("{wanted} more bytes after {copied} already taken (limit {limit} per file)")]
    OverBudget {
        copied: u64,
        wanted: u64,
        limit: u64,
    },
    #[error("{size} bytes at offset {offset} lie past the end of the file ({len} bytes)")]
    Truncated { offset: u64, size: u64, len: u64 },
}

impl Refusal {
    pub const REASONS: [&'static str; 4] =
        ["too_many_sections", "too_large", "over_budget", "truncated"];

    pub fn reason(&self) -> &'static str {
        Self::REASONS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            Self::TooManySections { .. } => 0,
            Self::TooLarge { .. } => 1,
            Self::OverBudget { .. } => 2,
            Self::Truncated { .. } => 3,
        }
    }
}

/// Which part of the agent inspected the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inspector {
    /// TLS probes: libssl and Go binaries (`tls::elf`).
    Tls = 0,
    /// The runtime check of each traced process's executable (`enrich::runtime`).
    Runtime = 1,
}

impl Inspector {
    pub const ALL: [Self; 2] = [Self::Tls, Self::Runtime];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tls => "tls",
            Self::Runtime => "runtime",
        }
    }
}

/// Files whose refusal was logged; beyond this many, refusals are only counted.
const WARNED_MAX: usize = 1024;

/// Refusal counters by inspector and reason, and the files already logged.
pub struct Refusals {
    counts: [[AtomicU64; Refusal::REASONS.len()]; Inspector::ALL.len()],
    warned: Mutex<Vec<(u64, u64)>>,
}

/// The agent's refusals, rendered as `sonde_elf_refused_total`.
pub static REFUSALS: Refusals = Refusals::new();

impl Default for Refusals {
    fn default() -> Self {
        Self::new()
    }
}

impl Refusals {
    pub const fn new() -> Self {
        Self {
            counts: [const { [const { AtomicU64::new(0) }; 4] }; 2],
            warned: Mutex::new(Vec::new()),
        }
    }

    /// Counts a refusal and logs it at warn, once per file (by device and inode).
    pub fn record(&self, inspector: Inspector, file: &BoundedFile, path: &Path, r: Refusal) {
        self.counts[inspector as usize][r.index()].fetch_add(1, Ordering::Relaxed);
        let first = self.warned.lock().is_ok_and(|mut w| {
            if w.contains(&file.id) || w.len() >= WARNED_MAX {
                return false;
            }
            w.push(file.id);
            true
        });
        if first {
            // `/proc/<pid>/exe` names the file through a link; show where it leads too.
            let shown = match std::fs::read_link(path) {
                Ok(target) => format!("{} ({})", target.display(), path.display()),
                Err(_) => path.display().to_string(),
            };
            tracing::warn!(
                "refused to inspect ELF file {shown} further: {r} (counted in \
                 sonde_elf_refused_total{{inspector=\"{}\",reason=\"{}\"}})",
                inspector.as_str(),
                r.reason()
            );
        }
    }

    pub fn get(&self, inspector: Inspector, reason: &str) -> u64 {
        Refusal::REASONS
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| {
                self.counts[inspector as usize][i].load(Ordering::Relaxed)
            })
    }

    /// (inspector, reason, count) for every pair.
    pub fn samples(&self) -> Vec<(&'static str, &'static str, u64)> {
        Inspector::ALL
            .iter()
            .flat_map(|i| {
                Refusal::REASONS
                    .iter()
                    .map(move |r| (i.as_str(), *r, self.get(*i, r)))
            })
            .collect()
    }
}

/// A file read through bounded, cached `pread`s; implements [`object::ReadRef`].
pub struct BoundedFile {
    file: File,
    len: u64,
    /// (device, inode): the identity under which a refusal is logged once.
    id: (u64, u64),
    limits: Limits,
    copied: Cell<u64>,
    refusal: Cell<Option<Refusal>>,
    /// Reads by (offset, size).
    bufs: RefCell<Cache<(u64, u64)>>,
    /// Strings read outside a cached buffer, by (offset, delimiter).
    strings: RefCell<Cache<(u64, u8)>>,
}

type Cache<K> = HashMap<K, Box<[u8]>>;

/// Longest string read outside a cached buffer (as `object::ReadCache` does).
const STRING_MAX: u64 = 4096;

impl BoundedFile {
    pub fn open(path: &Path, limits: Limits) -> io::Result<Self> {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        Ok(Self {
            file,
            len: meta.len(),
            id: (meta.dev(), meta.ino()),
            limits,
            copied: Cell::new(0),
            refusal: Cell::new(None),
            bufs: RefCell::default(),
            strings: RefCell::default(),
        })
    }

    /// Bytes copied or decompressed so far: what this inspection holds in memory.
    pub fn copied(&self) -> u64 {
        self.copied.get()
    }

    /// The first limit this file ran into, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.get()
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn refuse(&self, r: Refusal) {
        if self.refusal.get().is_none() {
            self.refusal.set(Some(r));
        }
    }

    /// Takes `size` bytes from the budget for a read at `offset` (or a decompression).
    pub fn charge(&self, offset: u64, size: u64) -> Result<(), Refusal> {
        let limits = self.limits;
        let r = if size > limits.max_read {
            Refusal::TooLarge {
                offset,
                size,
                limit: limits.max_read,
            }
        } else if self.copied.get().saturating_add(size) > limits.budget {
            Refusal::OverBudget {
                copied: self.copied.get(),
                wanted: size,
                limit: limits.budget,
            }
        } else {
            self.copied.set(self.copied.get() + size);
            return Ok(());
        };
        self.refuse(r);
        Err(r)
    }

    /// Checks the ELF header: a 64-bit little-endian file with at most `max_sections` section
    /// headers. `Ok(None)` when the file is not such an ELF file (nothing to refuse).
    pub fn elf64_header(&self) -> Result<Option<&FileHeader64<LittleEndian>>, Refusal> {
        let Ok(ident) = self.read_bytes_at(0, 6) else {
            self.refusal.set(None);
            return Ok(None);
        };
        if ident[..4] != object::elf::ELFMAG || ident[4] != 2 || ident[5] != 1 {
            return Ok(None);
        }
        let header = match FileHeader64::<LittleEndian>::parse(self) {
            Ok(h) => h,
            Err(_) => return Err(self.refusal().unwrap_or(self.past_end(0, 64))),
        };
        let count = match header.shnum(LittleEndian, self) {
            // With `e_shnum` 0, the count is section 0's `sh_size` (extended numbering).
            Ok(n) => n as u64,
            // Section 0, which holds the real count, is out of reach.
            Err(_) => return Err(self.refusal().unwrap_or(self.past_end(0, 64))),
        };
        if count > self.limits.max_sections {
            let r = Refusal::TooManySections {
                count,
                limit: self.limits.max_sections,
            };
            self.refuse(r);
            return Err(r);
        }
        Ok(Some(header))
    }

    fn past_end(&self, offset: u64, size: u64) -> Refusal {
        Refusal::Truncated {
            offset,
            size,
            len: self.len,
        }
    }

    fn read_new(&self, offset: u64, size: u64) -> Result<Box<[u8]>, ()> {
        if offset.checked_add(size).is_none_or(|end| end > self.len) {
            self.refuse(self.past_end(offset, size));
            return Err(());
        }
        self.charge(offset, size).map_err(|_| ())?;
        let mut buf = vec![0u8; size as usize].into_boxed_slice();
        if self.file.read_exact_at(&mut buf, offset).is_err() {
            // The file shrank since it was opened.
            self.refuse(self.past_end(offset, size));
            return Err(());
        }
        Ok(buf)
    }
}

// SAFETY (both methods): the returned slices point into boxed buffers owned by the maps of
// `self`. Entries are only ever inserted, never removed or mutated, while `self` lives, and a
// box's heap block does not move when the map rehashes; so the slices stay valid for `'a`, the
// lifetime of the borrow of `self`. This is what `object::ReadCache` does.
impl<'a> ReadRef<'a> for &'a BoundedFile {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size == 0 {
            return Ok(&[]);
        }
        let mut bufs = self.bufs.borrow_mut();
        let buf: &[u8] = match bufs.entry((offset, size)) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(self.read_new(offset, size)?),
        };
        // SAFETY: see above the impl.
        Ok(unsafe { &*std::ptr::from_ref::<[u8]>(buf) })
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        if range.start > range.end || range.end > self.len {
            self.refuse(self.past_end(range.start, range.end.saturating_sub(range.start)));
            return Err(());
        }
        // Names in a string table already read whole (`.strtab`, `.dynstr`) cost no read.
        for (&(off, size), buf) in self.bufs.borrow().iter() {
            if off <= range.start && range.start < off + size {
                let from = (range.start - off) as usize;
                let to = (range.end.min(off + size) - off) as usize;
                let hay = &buf[from..to];
                if let Some(n) = memchr::memchr(delimiter, hay) {
                    // SAFETY: see above the impl.
                    return Ok(unsafe { &*std::ptr::from_ref::<[u8]>(&hay[..n]) });
                }
            }
        }
        let mut strings = self.strings.borrow_mut();
        if let Some(s) = strings.get(&(range.start, delimiter)) {
            // SAFETY: see above the impl.
            return Ok(unsafe { &*std::ptr::from_ref::<[u8]>(&s[..]) });
        }
        let size = (range.end - range.start).min(STRING_MAX);
        let chunk = self.read_new(range.start, size)?;
        let n = memchr::memchr(delimiter, &chunk).ok_or(())?;
        let s = strings
            .entry((range.start, delimiter))
            .or_insert_with(|| chunk[..n].into());
        // SAFETY: see above the impl.
        Ok(unsafe { &*std::ptr::from_ref::<[u8]>(&s[..]) })
    }
}

#[cfg(test)]
pub(crate) mod testelf {
    //! Crafted ELF files for the refusal tests.

    /// One section of a crafted file: name, type, flags, address, data, and a size to declare
    /// instead of the data's length.
    pub struct Sec {
        pub name: &'static str,
        pub kind: u32,
        pub flags: u64,
        pub addr: u64,
        pub data: Vec<u8>,
        pub declared_size: Option<u64>,
        pub link: u32,
        pub entsize: u64,
    }

    impl Sec {
        pub fn new(name: &'static str, kind: u32, data: Vec<u8>) -> Self {
            Self {
                name,
                kind,
                flags: 0,
                addr: 0,
                data,
                declared_size: None,
                link: 0,
                entsize: 0,
            }
        }
    }

    /// A 64-bit little-endian executable with `secs` after the null section, then `.shstrtab`.
    /// Section indices: the null section is 0, `secs[i]` is `i + 1`.
    pub fn build(secs: &[Sec]) -> Vec<u8> {
        let mut shstrtab = vec![0u8];
        let mut names = Vec::new();
        for s in secs.iter().map(|s| s.name).chain([".shstrtab"]) {
            names.push(shstrtab.len() as u32);
            shstrtab.extend_from_slice(s.as_bytes());
            shstrtab.push(0);
        }
        let mut out = vec![0u8; 64];
        let mut offsets = Vec::new();
        for s in secs {
            while !out.len().is_multiple_of(16) {
                out.push(0);
            }
            offsets.push(out.len() as u64);
            out.extend_from_slice(&s.data);
        }
        let shstr_off = out.len() as u64;
        out.extend_from_slice(&shstrtab);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        out.extend_from_slice(&[0u8; 64]);
        let shdr = |out: &mut Vec<u8>, name, kind, flags, addr, off, size, link, entsize| {
            let mut h = Vec::with_capacity(64);
            h.extend_from_slice(&u32::to_le_bytes(name));
            h.extend_from_slice(&u32::to_le_bytes(kind));
            h.extend_from_slice(&u64::to_le_bytes(flags));
            h.extend_from_slice(&u64::to_le_bytes(addr));
            h.extend_from_slice(&u64::to_le_bytes(off));
            h.extend_from_slice(&u64::to_le_bytes(size));
            h.extend_from_slice(&u32::to_le_bytes(link));
            h.extend_from_slice(&u32::to_le_bytes(0));
            h.extend_from_slice(&u64::to_le_bytes(16));
            h.extend_from_slice(&u64::to_le_bytes(entsize));
            out.extend_from_slice(&h);
        };
        for (i, s) in secs.iter().enumerate() {
            let size = s.declared_size.unwrap_or(s.data.len() as u64);
            shdr(
                &mut out, names[i], s.kind, s.flags, s.addr, offsets[i], size, s.link, s.entsize,
            );
        }
        shdr(
            &mut out,
            names[secs.len()],
            object::elf::SHT_STRTAB,
            0,
            0,
            shstr_off,
            shstrtab.len() as u64,
            0,
            0,
        );
        let shnum = secs.len() as u16 + 2;
        let h = &mut out[..64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little-endian
        h[6] = 1; // version
        h[0x10..0x12].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        h[0x12..0x14].copy_from_slice(&62u16.to_le_bytes()); // x86-64
        h[0x14..0x18].copy_from_slice(&1u32.to_le_bytes());
        h[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        h[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        h[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        h[0x3c..0x3e].copy_from_slice(&shnum.to_le_bytes());
        h[0x3e..0x40].copy_from_slice(&(shnum - 1).to_le_bytes()); // e_shstrndx
        out
    }

    /// Sets the section count of a built file: in `e_shnum`, or, for counts beyond `u16`, in
    /// section 0's `sh_size` with `e_shnum` 0 (extended numbering).
    pub fn set_section_count(elf: &mut [u8], count: u64) {
        let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap()) as usize;
        if let Ok(n) = u16::try_from(count)
            && n < 0xff00
        {
            elf[0x3c..0x3e].copy_from_slice(&n.to_le_bytes());
        } else {
            elf[0x3c..0x3e].copy_from_slice(&0u16.to_le_bytes());
            elf[shoff + 32..shoff + 40].copy_from_slice(&count.to_le_bytes());
        }
    }

    /// Writes `bytes` to a new file in the test's temporary directory.
    pub fn write(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sonde-elf-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

#[cfg(test)]
mod tests {
    use object::read::elf::SectionHeader as _;

    use super::{testelf::*, *};

    const SMALL: Limits = Limits {
        max_sections: 16,
        max_read: 4096,
        budget: 16 << 10,
    };

    #[test]
    fn a_plain_file_is_read_within_its_limits() {
        let elf = build(&[Sec::new(".data", object::elf::SHT_PROGBITS, vec![7; 100])]);
        let path = write("plain", &elf);
        let f = BoundedFile::open(&path, SMALL).unwrap();
        let h = f.elf64_header().unwrap().expect("an ELF64 file");
        let sections = h.sections(LittleEndian, &f).unwrap();
        let (_, data) = sections.section_by_name(LittleEndian, b".data").unwrap();
        assert_eq!(data.data(LittleEndian, &f).unwrap(), &[7u8; 100][..]);
        assert_eq!(f.refusal(), None);
        assert!(f.copied() < 1024, "{}", f.copied());
    }

    #[test]
    fn non_elf_files_are_not_refusals() {
        let path = write("text", b"hello\n");
        let f = BoundedFile::open(&path, SMALL).unwrap();
        assert!(matches!(f.elf64_header(), Ok(None)));
        assert_eq!(f.refusal(), None);
    }

    #[test]
    fn huge_section_counts_are_refused_before_the_table_is_read() {
        for count in [17, 65_000, 1 << 40] {
            let mut elf = build(&[Sec::new(".data", object::elf::SHT_PROGBITS, vec![1; 8])]);
            set_section_count(&mut elf, count);
            let path = write(&format!("sections-{count}"), &elf);
            let f = BoundedFile::open(&path, SMALL).unwrap();
            let r = f.elf64_header().unwrap_err();
            assert_eq!(r, Refusal::TooManySections { count, limit: 16 });
            assert!(f.copied() < 256, "{count}: copied {}", f.copied());
        }
    }

    #[test]
    fn reads_past_the_end_are_truncation() {
        let elf = build(&[Sec::new(".data", object::elf::SHT_PROGBITS, vec![1; 200])]);
        // Cut the file in the middle of the section data: the section table is gone.
        let path = write("truncated", &elf[..150]);
        let f = BoundedFile::open(&path, SMALL).unwrap();
        let h = f.elf64_header().unwrap().expect("the header is intact");
        assert!(h.sections(LittleEndian, &f).is_err());
        let r = f.refusal().expect("a refusal");
        assert!(
            matches!(r, Refusal::Truncated { len: 150, .. }),
            "{r:?} for a 150-byte cut of a {}-byte file",
            elf.len()
        );
    }

    #[test]
    fn a_file_cut_while_it_is_read_is_a_truncation_not_a_crash() {
        // What a memory map would turn into SIGBUS.
        let elf = build(&[Sec::new(".data", object::elf::SHT_PROGBITS, vec![1; 2000])]);
        let path = write("shrinks", &elf);
        let f = BoundedFile::open(&path, SMALL).unwrap();
        let h = f.elf64_header().unwrap().expect("an ELF64 file");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(100)
            .unwrap();
        assert!(h.sections(LittleEndian, &f).is_err());
        assert!(
            matches!(f.refusal(), Some(Refusal::Truncated { len, .. }) if len == elf.len() as u64),
            "{:?}",
            f.refusal()
        );
    }

    #[test]
    fn reads_over_the_limits_are_refused_and_nothing_is_allocated() {
        let elf = build(&[Sec::new(".big", object::elf::SHT_PROGBITS, vec![1; 8192])]);
        let path = write("big", &elf);
        let f = BoundedFile::open(&path, SMALL).unwrap();
        assert!((&f).read_bytes_at(64, 8192).is_err());
        assert_eq!(
            f.refusal(),
            Some(Refusal::TooLarge {
                offset: 64,
                size: 8192,
                limit: 4096
            })
        );
        assert_eq!(f.copied(), 0);
        // Many reads under the per-read limit add up to the per-file budget.
        let f = BoundedFile::open(&path, SMALL).unwrap();
        let mut n = 0;
        while (&f).read_bytes_at(64 + n, 4000).is_ok() {
            n += 1;
        }
        assert_eq!(n, 4, "16 KiB budget / 4000-byte reads");
        assert!(matches!(f.refusal(), Some(Refusal::OverBudget { .. })));
        assert!(f.copied() <= SMALL.budget);
    }

    #[test]
    fn refusals_are_counted_by_inspector_and_reason() {
        let refusals = Refusals::new();
        let path = write("counted", b"\x7fELF");
        let f = BoundedFile::open(&path, SMALL).unwrap();
        let r = Refusal::Truncated {
            offset: 0,
            size: 64,
            len: 4,
        };
        refusals.record(Inspector::Runtime, &f, &path, r);
        refusals.record(Inspector::Runtime, &f, &path, r);
        assert_eq!(refusals.get(Inspector::Runtime, "truncated"), 2);
        assert_eq!(refusals.get(Inspector::Tls, "truncated"), 0);
        assert_eq!(refusals.samples().len(), 8);
        assert_eq!(refusals.warned.lock().unwrap().len(), 1, "logged once");
    }
}
