//! The local admin socket: one Unix socket per running data plane, mode 0600.
//!
//! Protocol: the client sends one JSON object on one line (`{"cmd":"stats"}`)
//! and reads one JSON object back; the server then closes the connection.
//! Later commands (config push, admin API) extend this same socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

/// Requests are small; refuse anything bigger rather than buffer it.
const MAX_REQUEST: u64 = 64 * 1024;

#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
}

impl AdminServer {
    /// Bind `path` with mode 0600. A stale socket (nobody listening) is
    /// replaced; a live one means another data plane uses it, which is an error.
    pub fn bind(path: &Path) -> Result<AdminServer, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("admin.socket: cannot create {}: {e}", dir.display()))?;
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(format!(
                    "admin.socket: {} is in use by another running data plane; give this one its own admin.socket",
                    path.display()
                ));
            }
            std::fs::remove_file(path).map_err(|e| {
                format!("admin.socket: cannot remove stale {}: {e}", path.display())
            })?;
        }
        // Bind under a temporary name, restrict it, then move it into place,
        // so the final path is never reachable with looser permissions.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = UnixListener::bind(&tmp)
            .map_err(|e| format!("admin.socket: cannot bind {}: {e}", tmp.display()))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| format!("admin.socket: cannot install {}: {e}", path.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("admin.socket: {e}"))?;
        Ok(AdminServer {
            listener,
            path: path.to_owned(),
        })
    }

    /// Serve every pending connection with `handle`; returns at once if none.
    pub fn serve_pending(&self, handle: &mut dyn FnMut(&Value) -> Value) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = serve_one(stream, handle) {
                tracing::debug!("admin connection: {e}");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_one(stream: UnixStream, handle: &mut dyn FnMut(&Value) -> Value) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<Value>(line.trim()) {
        Ok(req) if req.is_object() => handle(&req),
        Ok(_) => json!({"error": "request must be a JSON object like {\"cmd\":\"stats\"}"}),
        Err(e) => json!({"error": format!("request is not JSON: {e}")}),
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}

/// Send one request to a running data plane and return its answer.
pub fn request(path: &Path, req: &Value) -> Result<Value, String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        format!("cannot reach the data plane's admin socket {}: {e} (is it running? pass --socket or --config)", path.display())
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut msg = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    msg.push(b'\n');
    s.write_all(&msg)
        .map_err(|e| format!("admin socket write: {e}"))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)
        .map_err(|e| format!("admin socket read: {e}"))?;
    let v: Value =
        serde_json::from_str(&buf).map_err(|e| format!("admin socket answered non-JSON: {e}"))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(format!("data plane refused the request: {err}"));
    }
    Ok(v)
}
