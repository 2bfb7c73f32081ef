//! Builds the kernel programs (`agent-ebpf`, binary `sonde`) for the BPF target with aya-build,
//! using the one nightly toolchain named in the workspace's `[workspace.metadata.sonde]`.
//! The object lands in `$OUT_DIR/sonde` and is embedded by `probes::load`.
//!
//! `SONDE_SKIP_EBPF=1` (or aya-build's `AYA_BUILD_SKIP=1`) writes an empty object instead, for
//! hosts without the eBPF toolchain: the agent then builds and unit-tests, and refuses to load.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use cargo_metadata::MetadataCommand;

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SONDE_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let skip = ["SONDE_SKIP_EBPF", "AYA_BUILD_SKIP"]
        .iter()
        .any(|v| env::var(v).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")));
    if skip {
        println!("cargo:warning=eBPF build skipped: this sonde cannot load its kernel programs");
        fs::write(out_dir.join("sonde"), []).context("write empty eBPF object")?;
        return Ok(());
    }

    let metadata = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let toolchain = metadata.workspace_metadata["sonde"]["ebpf-toolchain"]
        .as_str()
        .ok_or_else(|| anyhow!("[workspace.metadata.sonde] ebpf-toolchain missing"))?
        .to_owned();
    let ebpf = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == "sonde-ebpf")
        .ok_or_else(|| anyhow!("package sonde-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("sonde-ebpf manifest has no parent dir"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
    .map_err(|e| {
        anyhow!(
            "building the kernel programs failed: {e:#}\n\
             hint: run `cargo xtask setup` (installs bpf-linker and rust-src for `{toolchain}`), \
             or set SONDE_SKIP_EBPF=1 to build without them"
        )
    })
}
