//! What runtime a process runs on, as far as it matters for linking spans inside it.
//!
//! Linking an outgoing request to the request its thread is serving assumes that a thread
//! works on one request at a time. Go breaks that: goroutines move between threads, so a
//! thread that read request A may next run the goroutine of request B. Go binaries are
//! recognised by the sections their linker always writes (`.go.buildinfo`, `.gopclntab`).

use std::path::Path;

use object::{LittleEndian, read::elf::FileHeader as _};

use crate::elfread::{BoundedFile, Inspector, Limits, REFUSALS, Refusals};

/// Whether the ELF file at `path` was built by the Go toolchain. Any read or format problem
/// answers false; files over the limits of [`Limits::DEFAULT`] are also counted and logged.
pub fn is_go_binary(path: &Path) -> bool {
    is_go_binary_with(path, Limits::DEFAULT, &REFUSALS)
}

/// [`is_go_binary`] with other limits and counters. Only the ELF header, the section headers
/// and the section names are read.
pub fn is_go_binary_with(path: &Path, limits: Limits, refusals: &Refusals) -> bool {
    let Ok(file) = BoundedFile::open(path, limits) else {
        return false;
    };
    let found = go_sections(&file);
    if let Some(r) = file.refusal() {
        refusals.record(Inspector::Runtime, &file, path, r);
        return false;
    }
    found.unwrap_or(false)
}

fn go_sections(file: &BoundedFile) -> Option<bool> {
    // Only 64-bit little-endian ELF (the machines sonde runs on).
    let header = file.elf64_header().ok()??;
    let sections = header.sections(LittleEndian, file).ok()?;
    for section in sections.iter() {
        let name = sections.section_name(LittleEndian, section).ok()?;
        if name == b".go.buildinfo" || name == b".gopclntab" {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elfread::testelf::{Sec, build, set_section_count, write};

    #[test]
    fn tells_go_binaries_from_others() {
        // This test binary is Rust; /bin/sh is C.
        assert!(!is_go_binary(&std::env::current_exe().unwrap()));
        assert!(!is_go_binary(Path::new("/bin/sh")));
        assert!(!is_go_binary(Path::new("/nonexistent")));
        assert!(!is_go_binary(Path::new("/etc/hostname")));
        let go = which_go();
        assert!(is_go_binary(&go), "{} is Go", go.display());
    }

    /// The Go toolchain's own binary (Debian's golang-go, which `cargo xtask setup` installs).
    fn which_go() -> std::path::PathBuf {
        const CANDIDATES: [&str; 3] = [
            "/usr/lib/go/bin/go",
            "/usr/lib/go-1.19/bin/go",
            "/usr/bin/go",
        ];
        CANDIDATES
            .iter()
            .find_map(|p| std::fs::canonicalize(p).ok())
            .unwrap_or_else(|| {
                panic!(
                    "no Go binary at any of {CANDIDATES:?}: this test needs one to recognise; \
                     install Go with `apt-get install golang-go` (or run `cargo xtask setup`)"
                )
            })
    }

    const SMALL: Limits = Limits {
        max_sections: 64,
        max_read: 64 << 10,
        budget: 256 << 10,
    };

    fn go_like() -> Vec<u8> {
        build(&[
            Sec::new(".text", object::elf::SHT_PROGBITS, vec![0xc3; 16]),
            Sec::new(".gopclntab", object::elf::SHT_PROGBITS, vec![0; 32]),
        ])
    }

    #[test]
    fn a_crafted_go_binary_is_recognised() {
        let refusals = Refusals::new();
        let path = write("runtime-go", &go_like());
        assert!(is_go_binary_with(&path, SMALL, &refusals));
        assert!(refusals.samples().iter().all(|(_, _, n)| *n == 0));
    }

    #[test]
    fn huge_section_counts_are_refused_and_counted() {
        let refusals = Refusals::new();
        for (i, count) in [65, 0xfeff, 1 << 32].into_iter().enumerate() {
            let mut elf = go_like();
            set_section_count(&mut elf, count);
            let path = write(&format!("runtime-sections-{count}"), &elf);
            assert!(!is_go_binary_with(&path, SMALL, &refusals), "{count}");
            assert_eq!(
                refusals.get(Inspector::Runtime, "too_many_sections"),
                i as u64 + 1
            );
        }
        // The agent's own limits refuse the largest counts too (65,279 headers would be 4 MiB).
        let mut elf = go_like();
        set_section_count(&mut elf, 0xfeff);
        let path = write("runtime-sections-default", &elf);
        assert!(!is_go_binary_with(&path, Limits::DEFAULT, &refusals));
        assert_eq!(refusals.get(Inspector::Runtime, "too_many_sections"), 4);
    }

    #[test]
    fn truncated_binaries_are_refused_and_counted() {
        let refusals = Refusals::new();
        let elf = go_like();
        let path = write("runtime-truncated", &elf[..elf.len() - 100]);
        assert!(!is_go_binary_with(&path, SMALL, &refusals));
        assert_eq!(refusals.get(Inspector::Runtime, "truncated"), 1);
    }

    #[test]
    fn a_large_section_name_table_is_not_read_whole() {
        // The names of the sections sit in a table that declares 1 MiB, over the 64 KiB a read
        // may take: names are read one at a time (at most 4 KiB each), never the whole table.
        let mut elf = go_like();
        let shoff = u64::from_le_bytes(elf[0x28..0x30].try_into().unwrap()) as usize;
        let shstrndx = u16::from_le_bytes([elf[0x3e], elf[0x3f]]) as usize;
        let size_at = shoff + shstrndx * 64 + 32;
        elf[size_at..size_at + 8].copy_from_slice(&(1u64 << 20).to_le_bytes());
        elf.resize(2 << 20, 0);
        let path = write("runtime-names", &elf);
        let file = BoundedFile::open(&path, SMALL).unwrap();
        assert_eq!(go_sections(&file), Some(true));
        assert_eq!(file.refusal(), None);
        assert!(file.copied() < 16 << 10, "copied {} bytes", file.copied());
        // Declared past the end of the file, the table is a truncation.
        elf.truncate(elf.len() - (1 << 20) - 1);
        let path = write("runtime-names-cut", &elf);
        let refusals = Refusals::new();
        assert!(!is_go_binary_with(&path, SMALL, &refusals));
        assert_eq!(refusals.get(Inspector::Runtime, "truncated"), 1);
    }
}
