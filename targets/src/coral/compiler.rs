//! `edgetpu_compiler` (Coral's, x86-64 Linux only): find it, run it with a timeout, and read its
//! output — the summary (parameter cache use, subgraphs, op counts) and the per-op-type table
//! (`Operator  Count  Status`) it prints with `-s` and writes to `<model>_edgetpu.log`. The
//! format is the one compiler 15/16 logs show in google-coral/edgetpu issues (#342, #393, #490)
//! and ultralytics/yolov7 exports; the parser is lenient: unknown lines are ignored.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

pub const COMPILER: &str = "edgetpu_compiler";

/// Which compiler to run.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CompilerChoice {
    /// `edgetpu_compiler` from PATH, when there is one.
    #[default]
    Auto,
    /// This executable.
    Path(PathBuf),
    /// Do not compile.
    Off,
}

impl CompilerChoice {
    pub fn resolve(&self) -> Option<PathBuf> {
        match self {
            CompilerChoice::Auto => find_on_path(COMPILER),
            CompilerChoice::Path(p) => Some(p.clone()),
            CompilerChoice::Off => None,
        }
    }
}

/// The first executable file called `name` in PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.metadata().map(|m| m.is_file() && executable(&m)).unwrap_or(false))
}

#[cfg(unix)]
fn executable(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    m.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn executable(_: &std::fs::Metadata) -> bool {
    true
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum CompilerStatus {
    Compiled,
    /// Exited with an error (or without writing the `_edgetpu.tflite`).
    Failed { code: Option<i32> },
    TimedOut { seconds: f64 },
    CouldNotStart { why: String },
}

/// What one compiler run produced.
pub struct CompilerRun {
    pub exe: PathBuf,
    pub status: CompilerStatus,
    /// stdout then stderr.
    pub output: String,
    pub edgetpu_model: Option<Vec<u8>>,
    /// `<model>_edgetpu.log`, when written.
    pub log_file: Option<String>,
}

/// Run `exe -s -o DIR DIR/<model_file>` on `model` in the scratch directory `dir` (created and
/// left for the caller to delete), killing it after `timeout`.
pub fn run_compiler(exe: &Path, model: &[u8], model_file: &str, dir: &Path, timeout: Duration) -> CompilerRun {
    let fail = |why: String| CompilerRun { exe: exe.to_path_buf(), status: CompilerStatus::CouldNotStart { why }, output: String::new(), edgetpu_model: None, log_file: None };
    let input = dir.join(model_file);
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&input, model)) {
        return fail(format!("{}: {e}", input.display()));
    }
    let mut cmd = Command::new(exe);
    cmd.arg("-s").arg("-o").arg(dir).arg(&input).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so a timeout stops the compiler's children too (they would
    // otherwise hold the output pipes open).
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    // Drain both pipes on threads so a chatty compiler cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let start = Instant::now();
    let exit = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if start.elapsed() >= timeout => {
                // SAFETY: kill(2) on the process group created for this child above.
                #[cfg(unix)]
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.kill();
                let _ = child.wait();
                break Err(CompilerStatus::TimedOut { seconds: timeout.as_secs_f64() });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => break Err(CompilerStatus::CouldNotStart { why: e.to_string() }),
        }
    };
    let mut output = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !stderr.is_empty() {
        output.push_str(&stderr);
    }
    let stem = model_file.strip_suffix(".tflite").unwrap_or(model_file);
    let edgetpu_model = std::fs::read(dir.join(format!("{stem}_edgetpu.tflite"))).ok();
    let log_file = std::fs::read_to_string(dir.join(format!("{stem}_edgetpu.log"))).ok();
    let status = match exit {
        Ok(s) if s.success() && edgetpu_model.is_some() => CompilerStatus::Compiled,
        Ok(s) => CompilerStatus::Failed { code: s.code() },
        Err(st) => st,
    };
    CompilerRun { exe: exe.to_path_buf(), status, output, edgetpu_model, log_file }
}

/// One row of the compiler's op table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpTableRow {
    pub op: String,
    pub count: u64,
    pub status: String,
    /// Status "Mapped to Edge TPU".
    pub mapped: bool,
}

/// What the compiler said, as far as it could be read.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CompilerLog {
    pub version: Option<String>,
    pub on_chip_cache_used_bytes: Option<u64>,
    pub on_chip_cache_remaining_bytes: Option<u64>,
    pub off_chip_streamed_bytes: Option<u64>,
    pub edgetpu_subgraphs: Option<u64>,
    pub total_ops: Option<u64>,
    pub ops_on_edgetpu: Option<u64>,
    pub ops_on_cpu: Option<u64>,
    pub table: Vec<OpTableRow>,
    /// Lines reporting a failure ("ERROR: …", "Compilation failed…").
    pub errors: Vec<String>,
}

impl CompilerLog {
    /// Ops the table says are mapped / not mapped.
    pub fn table_counts(&self) -> (u64, u64) {
        let mapped = self.table.iter().filter(|r| r.mapped).map(|r| r.count).sum();
        let total: u64 = self.table.iter().map(|r| r.count).sum();
        (mapped, total - mapped)
    }
}

/// Parse compiler output and/or its `.log` file (both have the op table; stdout adds the
/// summary). Rows repeat an op when its instances have different statuses.
pub fn parse_compiler_log(text: &str) -> CompilerLog {
    let mut log = CompilerLog::default();
    let mut in_table = false;
    for line in text.lines().map(str::trim) {
        let after = |key: &str| line.strip_prefix(key).map(str::trim);
        if let Some(v) = after("Edge TPU Compiler version") {
            log.version = Some(v.to_string());
        } else if let Some(v) = after("On-chip memory used for caching model parameters:") {
            log.on_chip_cache_used_bytes = parse_size(v);
        } else if let Some(v) = after("On-chip memory remaining for caching model parameters:") {
            log.on_chip_cache_remaining_bytes = parse_size(v);
        } else if let Some(v) = after("Off-chip memory used for streaming uncached model parameters:") {
            log.off_chip_streamed_bytes = parse_size(v);
        } else if let Some(v) = after("Number of Edge TPU subgraphs:") {
            log.edgetpu_subgraphs = v.parse().ok();
        } else if let Some(v) = after("Total number of operations:") {
            log.total_ops = v.parse().ok();
        } else if let Some(v) = after("Number of operations that will run on Edge TPU:") {
            log.ops_on_edgetpu = v.parse().ok();
        } else if let Some(v) = after("Number of operations that will run on CPU:") {
            log.ops_on_cpu = v.parse().ok();
        } else if line.starts_with("ERROR") || line.starts_with("Compilation failed") || line.starts_with("Internal compiler error") {
            log.errors.push(line.to_string());
        } else if is_table_header(line) {
            in_table = true;
        } else if in_table {
            if let Some(row) = parse_row(line) {
                log.table.push(row);
            }
        }
    }
    log
}

fn is_table_header(line: &str) -> bool {
    let w: Vec<&str> = line.split_whitespace().collect();
    w == ["Operator", "Count", "Status"]
}

/// `CONV_2D    35    Mapped to Edge TPU`.
fn parse_row(line: &str) -> Option<OpTableRow> {
    let mut it = line.splitn(2, char::is_whitespace);
    let op = it.next()?.trim();
    let rest = it.next()?.trim_start();
    let mut it = rest.splitn(2, char::is_whitespace);
    let count = it.next()?.parse().ok()?;
    let status = it.next()?.trim();
    let op_like = !op.is_empty() && op.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !op_like || status.is_empty() {
        return None;
    }
    Some(OpTableRow { op: op.to_string(), count, status: status.to_string(), mapped: status.starts_with("Mapped to Edge TPU") })
}

/// `4.33MiB`, `41.75KiB`, `0.00B`, `512.00KiB`, `1.2GiB` → bytes.
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "B" => 1.0,
        "KiB" | "KB" | "K" => 1024.0,
        "MiB" | "MB" | "M" => 1024.0 * 1024.0,
        "GiB" | "GB" | "G" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((num * mult).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4.00MiB"), Some(4 << 20));
        assert_eq!(parse_size("41.75KiB"), Some(42752));
        assert_eq!(parse_size("0.00B"), Some(0));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("3 parsecs"), None);
    }

    #[test]
    fn rows() {
        let r = parse_row("CONV_2D                        35         Mapped to Edge TPU").unwrap();
        assert_eq!((r.op.as_str(), r.count, r.mapped), ("CONV_2D", 35, true));
        let r = parse_row("QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation").unwrap();
        assert!(!r.mapped && r.status.starts_with("Operation is otherwise"));
        assert!(parse_row("Model compiled successfully in 1158 ms.").is_none());
        assert!(parse_row("Operator Count Status").is_none());
        assert!(parse_row("").is_none());
    }
}
