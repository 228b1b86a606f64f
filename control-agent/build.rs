//! Finds the FileDescriptorSet that the envoy-types package carries (it is
//! not exported by the crate) and copies it into OUT_DIR, so that the agent
//! can read Envoy's protobuf JSON/YAML (bootstrap files, `@type`'d Any) with
//! prost-reflect. Set ENVOY_TYPES_DESCRIPTORS to a `types.bin` to override.

use std::path::PathBuf;

const PACKAGE: &str = "envoy-types-0.7.7";

fn main() {
    println!("cargo:rerun-if-env-changed=ENVOY_TYPES_DESCRIPTORS");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let found = std::env::var_os("ENVOY_TYPES_DESCRIPTORS")
        .map(PathBuf::from)
        .or_else(find);
    let Some(src) = found else {
        panic!(
            "cannot find {PACKAGE}/src/generated/types.bin in the cargo registry ($CARGO_HOME/registry/src/*/); \
             run `cargo fetch`, or set ENVOY_TYPES_DESCRIPTORS to its path"
        );
    };
    println!("cargo:rerun-if-changed={}", src.display());
    std::fs::copy(&src, out.join("envoy_types.bin"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", src.display()));
}

fn find() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut roots = vec![];
    if let Ok(rd) = std::fs::read_dir(home.join("registry/src")) {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    // `cargo vendor` layouts, next to the workspace.
    if let Some(m) = std::env::var_os("CARGO_MANIFEST_DIR") {
        roots.push(PathBuf::from(m).join("../vendor"));
    }
    roots
        .into_iter()
        .map(|r| r.join(PACKAGE).join("src/generated/types.bin"))
        .find(|p| p.is_file())
}
