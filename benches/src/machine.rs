//! What the numbers were measured on, and how much memory the process peaked at.
//!
//! Everything is best effort: a field the platform does not expose is `None`, never an error,
//! because the bench must run on boards with odd `/proc` layouts (Jetson, Coral dev board).

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Machine {
    /// CPU model (`model name` in /proc/cpuinfo; ARM boards often only have the board model).
    pub cpu: Option<String>,
    /// Board name from the device tree (Jetson, Raspberry Pi, Coral dev board).
    pub board: Option<String>,
    /// Logical cores this process may use.
    pub logical_cores: usize,
    pub os: String,
    pub arch: String,
    pub kernel: Option<String>,
    /// cpufreq governor of cpu0 ("performance" gives steadier numbers than "ondemand").
    pub governor: Option<String>,
    /// 1-minute load average when detected: other work on a shared machine skews latency.
    pub load_avg_1m: Option<f64>,
}

impl Machine {
    pub fn detect() -> Machine {
        let cpuinfo = read_trimmed("/proc/cpuinfo");
        Machine {
            cpu: cpuinfo.as_deref().and_then(cpu_model),
            board: read_trimmed("/proc/device-tree/model").map(|s| s.trim_end_matches('\0').to_string()),
            logical_cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            governor: read_trimmed("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            load_avg_1m: read_trimmed("/proc/loadavg").and_then(|s| s.split_whitespace().next()?.parse().ok()),
        }
    }

    /// One line for report headers: "AMD EPYC 7B13, 2 logical cores, linux x86_64".
    pub fn describe(&self) -> String {
        let name = self.cpu.as_deref().or(self.board.as_deref()).unwrap_or("unknown CPU");
        format!("{name}, {} logical cores, {} {}", self.logical_cores, self.os, self.arch)
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// The first CPU model line of a /proc/cpuinfo text (x86 `model name`, some ARM kernels
/// `Model`/`Hardware`/`cpu model`).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "cpu model", "Hardware", "Model"].iter().find_map(|key| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

/// Peak resident set size of this process in bytes: `VmHWM` from /proc/self/status, else
/// `getrusage` (ru_maxrss is KiB on Linux, bytes on macOS).
pub fn peak_rss_bytes() -> Option<u64> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if let Some(kib) = vm_hwm_kib(&status) {
            return Some(kib * 1024);
        }
    }
    rusage_max_rss()
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

#[cfg(unix)]
fn rusage_max_rss() -> Option<u64> {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let v = u64::try_from(ru.ru_maxrss).ok()?;
    Some(if cfg!(target_os = "macos") { v } else { v * 1024 })
}

#[cfg(not(unix))]
fn rusage_max_rss() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_model_lines() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) CPU @ 2.20GHz\n";
        assert_eq!(cpu_model(x86).as_deref(), Some("Intel(R) Xeon(R) CPU @ 2.20GHz"));
        let arm = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU part\t: 0xd42\n\nModel\t: Raspberry Pi 4\n";
        assert_eq!(cpu_model(arm).as_deref(), Some("Raspberry Pi 4"));
        assert_eq!(cpu_model("processor : 0\n"), None);
    }

    #[test]
    fn parses_vm_hwm() {
        assert_eq!(vm_hwm_kib("Name:\tx\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\n"), Some(2048));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn detects_something() {
        let m = Machine::detect();
        assert!(m.logical_cores >= 1);
        assert!(!m.describe().is_empty());
        assert!(peak_rss_bytes().unwrap_or(1) > 0);
    }
}
