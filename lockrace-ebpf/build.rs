//! Rebuild the eBPF object when the linker changes (aya-template's recipe).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
