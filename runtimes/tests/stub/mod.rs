//! Compiles the C stand-ins for libtensorflowlite_c and libedgetpu (`tflite_c_stub.c`,
//! `edgetpu_stub.c`) with the system C compiler, once per test process. Shared by the runtime,
//! targets and bench tests (`#[path]`-included).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The library environment variables are process-wide: tests that set them take turns.
#[allow(dead_code)] // each test binary that includes this module uses its own part of it
pub static ENV: Mutex<()> = Mutex::new(());

/// Run `f` with `vars` set, holding [`ENV`], then put the previous values back.
#[allow(dead_code)]
pub fn with_env<T>(vars: &[(&str, &OsStr)], f: impl FnOnce() -> T) -> T {
    let _g = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let old: Vec<_> = vars.iter().map(|(k, _)| (*k, std::env::var_os(k))).collect();
    for (k, v) in vars {
        // Every test that touches the environment holds `ENV`.
        std::env::set_var(k, v);
    }
    let r = f();
    for (k, v) in old {
        match v {
            Some(v) => std::env::set_var(k, v),
            None => std::env::remove_var(k),
        }
    }
    r
}

pub struct Stubs {
    pub tflite: PathBuf,
    pub edgetpu: PathBuf,
}

/// Build both stubs into `dir` (a per-process directory: test binaries may run concurrently).
pub fn stubs(dir: &Path) -> &'static Stubs {
    static STUBS: OnceLock<Stubs> = OnceLock::new();
    STUBS.get_or_init(|| {
        let out = dir.join(format!("effv2-tflite-stub-{}", std::process::id()));
        std::fs::create_dir_all(&out).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtimes/tests/stub");
        let build = |c: &str, lib: &str| {
            let so = out.join(lib);
            let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
            let o = Command::new(&cc)
                .args(["-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o"])
                .arg(&so)
                .arg(src.join(c))
                .output()
                .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
            assert!(o.status.success(), "compiling {c}: {}", String::from_utf8_lossy(&o.stderr));
            so
        };
        Stubs { tflite: build("tflite_c_stub.c", "libtensorflowlite_c.so"), edgetpu: build("edgetpu_stub.c", "libedgetpu.so.1") }
    })
}
