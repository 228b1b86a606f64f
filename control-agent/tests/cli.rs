//! The binary's exit status and messages, as the data plane's: 0 done, 2
//! bad input, 1 a failure at run time. Nothing here reaches a server or a
//! data plane.

use std::path::PathBuf;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_control-agent"))
        .args(args)
        .env("RUST_LOG", "off")
        .output()
        .expect("run control-agent")
}

/// A bootstrap file with `yaml`, removed on drop.
struct File(PathBuf);

impl File {
    fn new(name: &str, yaml: &str) -> File {
        let p =
            std::env::temp_dir().join(format!("control-agent-cli-{}-{name}", std::process::id()));
        std::fs::write(&p, yaml).unwrap();
        File(p)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn check_prints_the_update_and_exits_0() {
    let f = File::new("good.yaml", "static_resources: {clusters: [{name: c}]}\n");
    let out = agent(&["--bootstrap", f.path(), "--check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let u: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(u["clusters"][0]["name"], "c", "{u}");
}

#[test]
fn bad_input_exits_2_with_the_reason() {
    let ring = File::new(
        "ring.yaml",
        "static_resources: {clusters: [{name: r, lb_policy: RING_HASH}]}\n",
    );
    let typo = File::new(
        "typo.yaml",
        "static_resources: {clusters: [{name: a, conect_timeout: 1s}]}\n",
    );
    let cases: [(Vec<&str>, &str); 5] = [
        (
            vec!["--bootstrap", ring.path(), "--check"],
            "static resources do not translate",
        ),
        (
            vec!["--bootstrap", typo.path(), "--check"],
            "conect_timeout",
        ),
        (
            vec!["--bootstrap", "/nonexistent/envoy.yaml", "--check"],
            "cannot read /nonexistent/envoy.yaml",
        ),
        (vec!["--server", "istiod"], "expected http://HOST:PORT"),
        // clap's own usage error.
        (vec!["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, want) in cases {
        let out = agent(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: missing {want:?} in {err}");
    }
}
