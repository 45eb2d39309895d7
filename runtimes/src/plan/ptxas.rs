//! What each of our kernels costs a GPU in registers and local memory, from NVIDIA's own
//! assembler (`ptxas -v`, the step the driver takes when it loads NVRTC's PTX): checked by the
//! tests without a GPU, since a kernel that spills or keeps an array in local memory runs several
//! times slower while still giving the right numbers. Test tooling (feature `host-replay`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where the tests find ptxas (scripts/test.sh installs it from PyPI and sets this).
pub const PTXAS_ENV: &str = "EFFV2_PTXAS";

/// One kernel as ptxas builds it for a GPU generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelResources {
    pub name: String,
    pub registers: u32,
    /// Per-thread local memory: arrays the compiler could not keep in registers.
    pub stack_bytes: u32,
    pub spill_store_bytes: u32,
    pub spill_load_bytes: u32,
}

/// ptxas from [`PTXAS_ENV`]; `None` (a skip) where it is unset, an error where
/// `EFFV2_REQUIRE_NVRTC` is set too (CI, which installs it, may not skip).
pub fn ptxas_for_tests() -> Option<PathBuf> {
    match std::env::var_os(PTXAS_ENV).map(PathBuf::from) {
        Some(p) if p.is_file() => Some(p),
        other => {
            // The CUDA backend's REQUIRE_NVRTC_ENV (this module builds without the cuda feature).
            assert!(std::env::var("EFFV2_REQUIRE_NVRTC").is_err(), "EFFV2_REQUIRE_NVRTC is set but {PTXAS_ENV} ({other:?}) names no ptxas");
            eprintln!("skipped: {PTXAS_ENV} names no ptxas");
            None
        }
    }
}

/// Assembles `ptx` for `sm` (e.g. `sm_90`) and reads each entry's resources off ptxas's report.
pub fn kernel_resources(ptxas: &std::path::Path, ptx: &str, sm: &str) -> Result<Vec<KernelResources>, String> {
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("effv2-ptxas-{}-{}", std::process::id(), CALLS.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let src = dir.join("kernels.ptx");
    let out = std::fs::write(&src, ptx)
        .map_err(|e| format!("{}: {e}", src.display()))
        .and_then(|_| Command::new(ptxas).args(["-v", &format!("-arch={sm}"), "-o"]).arg(dir.join("kernels.cubin")).arg(&src).output().map_err(|e| format!("{}: {e}", ptxas.display())));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    let report = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("ptxas failed for {sm}:\n{report}"));
    }
    parse_report(&report)
}

/// [`kernel_resources`], an error naming every kernel that keeps anything in local memory (a stack
/// frame or spilled registers): such a kernel gives the same outputs several times slower.
pub fn without_local_memory(ptxas: &std::path::Path, ptx: &str, sm: &str) -> Result<Vec<KernelResources>, String> {
    let kernels = kernel_resources(ptxas, ptx, sm)?;
    let local = local_memory_users(&kernels);
    if local.is_empty() {
        Ok(kernels)
    } else {
        Err(format!("{sm}: kernels using local memory: {local:?}"))
    }
}

fn local_memory_users(kernels: &[KernelResources]) -> Vec<&KernelResources> {
    kernels.iter().filter(|k| k.stack_bytes != 0 || k.spill_store_bytes != 0).collect()
}

/// ptxas -v prints, per entry: "Compiling entry function 'NAME' for 'sm_90'", then
/// "N bytes stack frame, N bytes spill stores, N bytes spill loads", then "Used N registers, ...".
fn parse_report(report: &str) -> Result<Vec<KernelResources>, String> {
    let number_before = |line: &str, what: &str| -> Option<u32> {
        let at = line.find(what)?;
        line[..at].split_whitespace().last()?.parse().ok()
    };
    let mut out: Vec<KernelResources> = vec![];
    for line in report.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            let name = rest.split('\'').next().unwrap_or_default().to_string();
            out.push(KernelResources { name, registers: 0, stack_bytes: 0, spill_store_bytes: 0, spill_load_bytes: 0 });
            continue;
        }
        let Some(k) = out.last_mut() else { continue };
        if line.contains("bytes stack frame") {
            k.stack_bytes = number_before(line, "bytes stack frame").ok_or_else(|| format!("unreadable ptxas line: {line}"))?;
            k.spill_store_bytes = number_before(line, "bytes spill stores").unwrap_or(0);
            k.spill_load_bytes = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("registers") {
            k.registers = number_before(line, "registers").ok_or_else(|| format!("unreadable ptxas line: {line}"))?;
        }
    }
    if out.is_empty() {
        return Err(format!("no entry functions in ptxas's report:\n{report}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ptxas_report_is_read_per_entry() {
        let report = "ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'bias_act' for 'sm_90'
ptxas info    : Function properties for bias_act
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 76 registers, used 0 barriers
ptxas info    : Compiling entry function 'chan_partials' for 'sm_90'
ptxas info    : Function properties for chan_partials
    40 bytes stack frame, 56 bytes spill stores, 76 bytes spill loads
ptxas info    : Used 128 registers, used 0 barriers, 40 bytes cumulative stack size
";
        let r = parse_report(report).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], KernelResources { name: "bias_act".into(), registers: 76, stack_bytes: 0, spill_store_bytes: 0, spill_load_bytes: 0 });
        assert_eq!(r[1], KernelResources { name: "chan_partials".into(), registers: 128, stack_bytes: 40, spill_store_bytes: 56, spill_load_bytes: 76 });
        assert!(parse_report("ptxas info    : 0 bytes gmem").is_err());
    }

    #[test]
    fn a_kernel_with_a_stack_frame_or_spills_is_named() {
        let ok = KernelResources { name: "add".into(), registers: 30, stack_bytes: 0, spill_store_bytes: 0, spill_load_bytes: 0 };
        let stack = KernelResources { name: "dw".into(), stack_bytes: 64, ..ok.clone() };
        let spill = KernelResources { name: "bn".into(), spill_store_bytes: 8, ..ok.clone() };
        assert!(local_memory_users(std::slice::from_ref(&ok)).is_empty());
        assert_eq!(local_memory_users(&[ok, stack, spill]).iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["dw", "bn"]);
    }
}
