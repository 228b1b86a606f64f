//! The real-NIC load profiles (bench/pktgen, bench/trex) as their docs say
//! to run them: no root, no DPDK, no network.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sed` line a document gives for filling in the proxy's MAC.
fn sed_lines(doc: &str) -> Vec<String> {
    doc.lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.starts_with("sed ") && l.contains("@PROXY_MAC@"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_pktgen_profile_renders_with_no_placeholder_left() {
    let root = repo();
    let pkt = std::fs::read_to_string(root.join("bench/pktgen/proxy-syn.pkt")).unwrap();
    let doc = std::fs::read_to_string(root.join("bench/REAL-NICS.md")).unwrap();
    let mut lines = sed_lines(&pkt);
    lines.extend(sed_lines(&doc));
    assert!(
        lines.len() >= 2,
        "the profile and REAL-NICS.md each give the sed line"
    );
    let out_dir = std::env::temp_dir().join(format!("dp-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    for (i, line) in lines.iter().enumerate() {
        // As documented, writing to a file of ours instead of /tmp/proxy-syn.pkt.
        let out = out_dir.join(format!("proxy-syn-{i}.pkt"));
        let cmd = line.replace("/tmp/proxy-syn.pkt", &out.display().to_string());
        let st = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .current_dir(&root)
            .status()
            .unwrap();
        assert!(st.success(), "{cmd}");
        let rendered = std::fs::read_to_string(&out).unwrap();
        let left: Vec<&str> = rendered
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && l.contains('@'))
            .collect();
        assert!(left.is_empty(), "{line}\nleaves placeholders: {left:?}");
        assert!(
            rendered
                .contains("range 0 dst mac 3c:fd:fe:aa:bb:cc 3c:fd:fe:aa:bb:cc 3c:fd:fe:aa:bb:cc"),
            "every MAC of the range line is filled in"
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// The TRex ASTF profile compiles, and `register().get_profile()` runs to
/// the end with its defaults and with tunables, against a stand-in for
/// TRex's `trex.astf.api` (TRex ships with its own Python tree, not on
/// PyPI) that accepts the calls the profile makes: a misspelt name or an
/// argument-parsing error in our code fails here.
#[test]
fn the_trex_profile_loads_in_python() {
    let root = repo();
    let script = r#"
import sys, types, importlib.util
class Any:
    def __init__(self, *a, **k): self.args, self.kwargs = a, k
    def __getattr__(self, name): return Any()
    def __call__(self, *a, **k): return Any()
api = types.ModuleType("trex.astf.api")
for name in ["ASTFProfile", "ASTFTemplate", "ASTFTCPClientTemplate", "ASTFTCPServerTemplate",
             "ASTFAssociationRule", "ASTFIPGen", "ASTFIPGenDist", "ASTFIPGenGlobal",
             "ASTFProgram", "ASTFCapInfo", "ASTFGlobalInfo"]:
    setattr(api, name, Any)
api.__all__ = [n for n in dir(api) if n.startswith("ASTF")]
sys.modules["trex"] = types.ModuleType("trex")
sys.modules["trex.astf"] = types.ModuleType("trex.astf")
sys.modules["trex.astf.api"] = api
spec = importlib.util.spec_from_file_location("http_l4", sys.argv[1])
m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
p = m.register()
assert isinstance(p.get_profile([]), Any)
assert isinstance(p.get_profile(["--dport", "9090", "--upstream_port", "8081"]), Any)
print("ok")
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(root.join("bench/trex/http_l4.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
