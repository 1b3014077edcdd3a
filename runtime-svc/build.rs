//! Links `berth-shim` statically against glibc (a static PIE), the other binaries as usual.
//!
//! One shim runs per container, so its resident memory is multiplied: linked dynamically it
//! maps most of libc.so and ld.so (about 1.6 MB of RSS, shared pages counted in full); linked
//! statically it carries only the parts of libc it uses (RSS about 1.5 MB in all). Cargo has no
//! per-binary `-C target-feature=+crt-static`, so this does by hand what that flag does at link
//! time: `-static-pie`, and every C library rustc names for std (`-lc`, `-lgcc_s`, …) resolved
//! to its static archive through a directory of links searched first (`gcc_s` → `libgcc_eh.a`).
//! Nothing is compiled differently. When a static archive is missing (no libc6-dev static
//! libs), or `BERTH_SHIM_DYNAMIC=1` is set, the shim is linked dynamically as before, with a
//! warning.

use std::path::PathBuf;
use std::process::Command;

/// (link name rustc uses, the archive that provides it).
const LIBS: [(&str, &str); 8] = [
    ("libgcc_s.a", "libgcc_eh.a"),
    ("libgcc.a", "libgcc.a"),
    ("libc.a", "libc.a"),
    ("libm.a", "libm.a"),
    ("libpthread.a", "libpthread.a"),
    ("libdl.a", "libdl.a"),
    ("librt.a", "librt.a"),
    ("libutil.a", "libutil.a"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=BERTH_SHIM_DYNAMIC");
    println!("cargo:rerun-if-env-changed=CC");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux")
        || std::env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu")
        || std::env::var("BERTH_SHIM_DYNAMIC").is_ok_and(|v| v == "1")
    {
        return;
    }
    let Ok(out) = std::env::var("OUT_DIR") else { return };
    let dir = PathBuf::from(out).join("shim-static-libs");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let _ = std::fs::remove_dir_all(&dir);
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for (link, real) in LIBS {
        let found = Command::new(&cc)
            .arg(format!("-print-file-name={real}"))
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| PathBuf::from(s.trim()))
            .filter(|p| p.is_absolute() && p.exists());
        let Some(path) = found else {
            println!("cargo:warning=berth-shim is linked dynamically: {real} not found (install the static C libraries, libc6-dev)");
            return;
        };
        if std::os::unix::fs::symlink(&path, dir.join(link)).is_err() {
            return;
        }
    }
    println!("cargo:rustc-link-arg-bin=berth-shim=-L{}", dir.display());
    println!("cargo:rustc-link-arg-bin=berth-shim=-static-pie");
}
