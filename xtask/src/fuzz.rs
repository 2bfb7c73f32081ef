//! `cargo xtask fuzz`: runs every cargo-fuzz target of `sonde-protocol` briefly.
//!
//! Installs cargo-fuzz from crates.io when it is missing, seeds the corpora from the captured
//! fixtures, then gives each target the same time budget. A crash fails the command and
//! leaves its input under `protocol/fuzz/artifacts/<target>/`.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{run, setup::ebpf_toolchain, step, workspace_root};

/// Targets and the longest input each is given: every `fuzz_targets/*.rs` with `#![no_main]`
/// (the others are shared modules; a test below keeps the two lists equal).
const TARGETS: &[(&str, u32)] = &[
    ("http1", 8192),
    ("h2_conn", 8192),
    ("hpack", 4096),
    ("postgres", 8192),
    ("mysql", 8192),
    ("redis", 8192),
    ("sql", 2048),
];

/// The cargo-fuzz release installed when missing.
const CARGO_FUZZ_VERSION: &str = "0.13.1";

pub fn fuzz(seconds: u32, only: Option<&str>) -> Result<()> {
    let (toolchain, _) = ebpf_toolchain()?;
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        step("installing cargo-fuzz");
        run(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    let dir = workspace_root().join("protocol/fuzz");
    for seed in ["seed.py", "seed_h2.py"] {
        run(Command::new("python3")
            .arg(dir.join(seed))
            .current_dir(&dir))
        .with_context(|| format!("seed the corpora with {seed}"))?;
    }
    for &(target, max_len) in TARGETS {
        if only.is_some_and(|o| o != target) {
            continue;
        }
        step(&format!("fuzzing {target} for {seconds} s"));
        let status = Command::new("cargo")
            .arg(format!("+{toolchain}"))
            .args(["fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={max_len}"))
            .current_dir(&dir)
            .status()
            .with_context(|| format!("run cargo fuzz for {target}"))?;
        if !status.success() {
            anyhow::bail!(
                "fuzz target {target} failed ({status}): the crashing input is under {}",
                dir.join("artifacts").join(target).display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fuzz_target_is_run() {
        let dir = workspace_root().join("protocol/fuzz/fuzz_targets");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                // A target is a crate root of its own; the shared modules are not.
                let text = std::fs::read_to_string(e.path()).unwrap();
                text.contains("#![no_main]")
                    .then(|| name.strip_suffix(".rs").map(str::to_owned))?
            })
            .collect();
        files.sort();
        let mut listed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
        listed.sort();
        assert_eq!(
            listed,
            files,
            "xtask/src/fuzz.rs TARGETS and {}",
            dir.display()
        );
    }
}
