//! Rebuild the kernel programs when `bpf-linker` changes: the link step is an undeclared
//! dependency on that binary (cargo has no artifact dependencies on tools yet).
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(err) => {
            println!("cargo:warning=bpf-linker not found ({err}); run `cargo xtask setup`");
        }
    }
}
