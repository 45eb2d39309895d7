//! Compiles the C stand-ins for libtensorflowlite_c and libedgetpu (`tflite_c_stub.c`,
//! `edgetpu_stub.c`) with the system C compiler, once per test process. Shared by the runtime,
//! targets and bench tests (`#[path]`-included).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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
