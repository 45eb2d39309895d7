//! Finding and opening the two libraries: the file an environment variable names, else the
//! platform's standard names through the dynamic loader's search path. Each is opened once per
//! process and never closed — TFLite's thread pool and libedgetpu's USB threads must not outlive
//! their code — so the tables are `'static`.

use std::ffi::OsString;
use std::sync::Mutex;

use libloading::Library;

use super::sys::{EdgeTpuApi, TfLiteApi};

pub const TFLITE_ENV: &str = "EFFV2_TFLITE_C";
pub const EDGETPU_ENV: &str = "EFFV2_EDGETPU_LIB";

const TFLITE_INSTALL: &str = "install a build of TFLite's C library (Bazel `//tensorflow/lite/c:tensorflowlite_c` or \
    CMake `tensorflow/lite/c`) on the loader path (ldconfig, LD_LIBRARY_PATH), or set EFFV2_TFLITE_C to the file; \
    the ai-edge-litert and tflite-runtime Python wheels do not ship it";
const EDGETPU_INSTALL: &str = "install libedgetpu1-std (or libedgetpu1-max) from Coral's apt repository \
    (https://coral.ai/software/#debian-packages), or set EFFV2_EDGETPU_LIB to libedgetpu.so.1";

#[cfg(target_os = "macos")]
const TFLITE_NAMES: &[&str] = &["libtensorflowlite_c.dylib"];
#[cfg(target_os = "macos")]
const EDGETPU_NAMES: &[&str] = &["libedgetpu.1.dylib", "libedgetpu.dylib"];
#[cfg(windows)]
const TFLITE_NAMES: &[&str] = &["tensorflowlite_c.dll"];
#[cfg(windows)]
const EDGETPU_NAMES: &[&str] = &["edgetpu.dll"];
#[cfg(not(any(target_os = "macos", windows)))]
const TFLITE_NAMES: &[&str] = &["libtensorflowlite_c.so"];
#[cfg(not(any(target_os = "macos", windows)))]
const EDGETPU_NAMES: &[&str] = &["libedgetpu.so.1", "libedgetpu.so"];

/// A loaded table per name tried, so reopening is free and nothing is ever unloaded.
type Cache<T> = Mutex<Vec<(OsString, &'static T)>>;
static TFLITE: Cache<TfLiteApi> = Mutex::new(Vec::new());
static EDGETPU: Cache<EdgeTpuApi> = Mutex::new(Vec::new());

/// libtensorflowlite_c, or why it cannot be used (naming what was tried and how to install it).
pub fn tflite() -> Result<&'static TfLiteApi, String> {
    // SAFETY: `TfLiteApi::load` declares c_api.h's signatures, which every TFLite 2.x C library has.
    open("libtensorflowlite_c", TFLITE_ENV, TFLITE_NAMES, TFLITE_INSTALL, &TFLITE, |lib| unsafe { TfLiteApi::load(lib) })
}

/// libedgetpu, or why it cannot be used.
pub fn edgetpu() -> Result<&'static EdgeTpuApi, String> {
    // SAFETY: `EdgeTpuApi::load` declares edgetpu_c.h's signatures, unchanged since libedgetpu's first release.
    open("libedgetpu", EDGETPU_ENV, EDGETPU_NAMES, EDGETPU_INSTALL, &EDGETPU, |lib| unsafe { EdgeTpuApi::load(lib) })
}

fn open<T>(
    label: &str,
    env: &str,
    names: &[&str],
    install: &str,
    cache: &Cache<T>,
    load: impl Fn(Library) -> Result<T, String>,
) -> Result<&'static T, String> {
    let from_env = std::env::var_os(env).filter(|v| !v.is_empty());
    let candidates: Vec<OsString> = match &from_env {
        Some(v) => vec![v.clone()],
        None => names.iter().map(OsString::from).collect(),
    };
    // A poisoned lock only means another thread panicked mid-push; the list is still valid.
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let mut tried = vec![];
    for c in candidates {
        if let Some((_, t)) = cache.iter().find(|(n, _)| *n == c) {
            return Ok(*t);
        }
        // SAFETY: loading runs the library's initialisers; it is the file the user named in `env`
        // or the system's copy under the standard name — TFLite's or libedgetpu's own code.
        match unsafe { Library::new(&c) } {
            Ok(lib) => {
                let table = load(lib).map_err(|e| format!("{} is not a usable {label}: {e}", c.to_string_lossy()))?;
                let table: &'static T = Box::leak(Box::new(table));
                cache.push((c, table));
                return Ok(table);
            }
            Err(e) => tried.push(format!("{}: {e}", c.to_string_lossy())),
        }
    }
    let how = if from_env.is_some() { format!("{env} names a file that cannot be loaded") } else { format!("{env} is not set") };
    Err(format!("{label} not found ({how}; tried {}); {install}", tried.join("; ")))
}
