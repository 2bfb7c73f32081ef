//! What runtime a process runs on, as far as it matters for linking spans inside it.
//!
//! Linking an outgoing request to the request its thread is serving assumes that a thread
//! works on one request at a time. Go breaks that: goroutines move between threads, so a
//! thread that read request A may next run the goroutine of request B. Go binaries are
//! recognised by the sections their linker always writes (`.go.buildinfo`, `.gopclntab`).

use std::{fs::File, io::Read, os::unix::fs::FileExt, path::Path};

/// Whether the ELF file at `path` was built by the Go toolchain. Any read or format problem
/// answers false.
pub fn is_go_binary(path: &Path) -> bool {
    go_sections(path).unwrap_or(false)
}

fn go_sections(path: &Path) -> Option<bool> {
    let mut f = File::open(path).ok()?;
    let mut ident = [0u8; 64];
    f.read_exact(&mut ident).ok()?;
    if &ident[..4] != b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
        // Only 64-bit little-endian ELF (the machines sonde runs on).
        return None;
    }
    let u16_at = |b: &[u8], o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let shoff = u64_at(&ident, 0x28);
    let shentsize = u16_at(&ident, 0x3a) as usize;
    let shnum = u16_at(&ident, 0x3c) as usize;
    let shstrndx = u16_at(&ident, 0x3e) as usize;
    if shentsize < 64 || shnum == 0 || shnum > 4096 || shstrndx >= shnum {
        return None;
    }
    let mut table = vec![0u8; shentsize * shnum];
    f.read_exact_at(&mut table, shoff).ok()?;
    let section = |i: usize| &table[i * shentsize..(i + 1) * shentsize];
    let strtab = section(shstrndx);
    let (str_off, str_size) = (u64_at(strtab, 0x18), u64_at(strtab, 0x20));
    if str_size > 1 << 20 {
        return None;
    }
    let mut names = vec![0u8; str_size as usize];
    f.read_exact_at(&mut names, str_off).ok()?;
    for i in 0..shnum {
        let name_off = u32_at(section(i), 0) as usize;
        let name = names.get(name_off..)?;
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        if name == b".go.buildinfo" || name == b".gopclntab" {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_go_binaries_from_others() {
        // This test binary is Rust; /bin/sh is C.
        assert!(!is_go_binary(&std::env::current_exe().unwrap()));
        assert!(!is_go_binary(Path::new("/bin/sh")));
        assert!(!is_go_binary(Path::new("/nonexistent")));
        assert!(!is_go_binary(Path::new("/etc/hostname")));
        // A Go binary, when the toolchain is on this machine (it is on ours: golang-go).
        if let Ok(go) = which_go() {
            assert!(is_go_binary(&go), "{}", go.display());
        }
    }

    fn which_go() -> Result<std::path::PathBuf, ()> {
        [
            "/usr/lib/go/bin/go",
            "/usr/lib/go-1.19/bin/go",
            "/usr/bin/go",
        ]
        .iter()
        .map(std::path::PathBuf::from)
        .find_map(|p| std::fs::canonicalize(&p).ok())
        .ok_or(())
    }
}
