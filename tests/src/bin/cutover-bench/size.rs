//! Sizes of the binaries and zips, and the no-op build.

use super::*;

pub(crate) fn sizes() -> Value {
    let mut out = BTreeMap::new();
    for function in FUNCTIONS {
        let binary = std::fs::metadata(release_dir().join(function.as_str()))
            .map(|m| m.len())
            .unwrap_or(0);
        let zip_dir = release_dir()
            .parent()
            .unwrap()
            .join("lambda")
            .join(function.as_str());
        let zip = std::fs::metadata(zip_dir.join("bootstrap.zip"))
            .map(|m| m.len())
            .ok();
        // cargo lambda leaves the zipped binary under the triple it cross-compiled for.
        let arm64 = release_dir()
            .parent()
            .unwrap()
            .join("aarch64-unknown-linux-gnu/release")
            .join(function.as_str());
        let arch = zip.map(|_| {
            if arm64.exists() {
                file_arch(&arm64)
            } else {
                "x86_64".to_owned()
            }
        });
        out.insert(
            function.as_str(),
            json!({"binary_bytes": binary, "zip_bytes": zip, "zip_arch": arch}),
        );
    }
    json!(out)
}

pub(crate) fn file_arch(path: &Path) -> String {
    // ELF e_machine at offset 18: 0xB7 aarch64, 0x3E x86_64.
    match std::fs::read(path).ok().and_then(|b| b.get(18).copied()) {
        Some(0xB7) => "arm64".into(),
        Some(0x3E) => "x86_64".into(),
        _ => "unknown".into(),
    }
}

pub(crate) fn noop_build() -> Value {
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(["build", "--workspace", "--locked", "--quiet"])
        .current_dir(repo_root())
        .status();
    json!({"noop_debug_build_s": started.elapsed().as_secs_f64(), "ok": status.map(|s| s.success()).unwrap_or(false)})
}
