//! The local admin socket: one Unix socket per running data plane, mode 0600.
//!
//! Protocol (`dataplane_config::admin`): the client sends one JSON object on
//! one line (`{"cmd":"stats"}`) and reads one JSON object back; the server
//! then closes the connection. Commands: `stats`, `config` (the listeners
//! and clusters in force), `apply` (a live update,
//! `{"cmd":"apply","update":{...}}`) and `ping`.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane_config::admin::{AdminError, AdminRequest, ClientError, ErrorKind, parse_reply};
use serde_json::Value;

/// Longest a client may pause while sending its request or reading the
/// answer. The control thread serves clients one by one, and it also
/// watches for SIGTERM.
const CLIENT_STALL: Duration = Duration::from_secs(1);
/// Longest one client may take in all (a large update streams for a while).
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);
/// Connections served per call, so a flood cannot starve the control loop.
const MAX_PER_POLL: usize = 16;

/// Why the admin socket cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("admin.socket: {0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error(
        "admin.socket: {0} is in use by another running data plane; give this one its own admin.socket"
    )]
    InUse(PathBuf),
    #[error("admin.socket: {what} {at}: {source}")]
    Io {
        what: &'static str,
        at: PathBuf,
        source: std::io::Error,
    },
}

/// What answers a request: the reply's JSON, or the refusal.
pub type Handler<'a> = dyn FnMut(AdminRequest<'static>) -> Result<Value, AdminError> + 'a;

#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of our socket file: removed on exit only if still ours.
    id: (u64, u64),
    /// Larger requests are refused rather than buffered.
    max_request: u64,
}

impl AdminServer {
    /// Bind `path` with mode 0600. A stale socket (nobody listening) is
    /// replaced; a live one means another data plane uses it, which is an
    /// error; anything that is not a socket is never touched.
    pub fn bind(path: &Path, max_request: u64) -> Result<AdminServer, BindError> {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("/"));
        let io = |what: &'static str, at: &Path| {
            let at = at.to_owned();
            move |source| BindError::Io { what, at, source }
        };
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(BindError::NotASocket(path.to_owned()));
            }
            match UnixStream::connect(path) {
                Ok(_) => return Err(BindError::InUse(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(path).map_err(io("cannot remove stale", path))?;
                }
                Err(e) => return Err(io("cannot check existing", path)(e)),
            }
        }
        // Bind inside a private 0700 directory, restrict the socket to 0600,
        // then move it into place: it is never reachable with looser
        // permissions, whatever the umask.
        let private = dir.join(format!(".dataplane-admin.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&private)
            .map_err(io("cannot create", &private))?;
        let tmp = private.join("admin.sock");
        let bound = UnixListener::bind(&tmp)
            .and_then(|l| {
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map(|_| l)
            })
            .and_then(|l| std::fs::rename(&tmp, path).map(|_| l));
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound.map_err(io("cannot bind", path))?;
        listener
            .set_nonblocking(true)
            .map_err(io("cannot set non-blocking", path))?;
        let meta = std::fs::metadata(path).map_err(io("cannot stat", path))?;
        Ok(AdminServer {
            listener,
            path: path.to_owned(),
            id: (meta.dev(), meta.ino()),
            max_request,
        })
    }

    /// Wait up to `timeout` for a client (or a signal): the control loop's
    /// pause, which a request ends at once.
    pub fn wait(&self, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let mut fds = [PollFd::new(&self.listener, PollFlags::IN)];
        let t = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let _ = poll(&mut fds, Some(&t));
    }

    /// Serve pending connections with `handle`; returns at once if none.
    pub fn serve_pending(&self, handle: &mut Handler<'_>) {
        for _ in 0..MAX_PER_POLL {
            let Ok((stream, _)) = self.listener.accept() else {
                return;
            };
            if let Err(e) = serve_one(stream, self.max_request, handle) {
                tracing::debug!("admin connection: {e}");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        // Another instance may have replaced a socket it found stale: leave it.
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn serve_one(
    stream: UnixStream,
    max_request: u64,
    handle: &mut Handler<'_>,
) -> std::io::Result<()> {
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), CLIENT_STALL)
    };
    stream.set_nonblocking(false)?;
    // Read one line, under one deadline for the whole request.
    let mut req = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut too_large = false;
    loop {
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request too slow",
            ));
        }
        if req.len() as u64 > max_request {
            too_large = true;
            break;
        }
        stream.set_read_timeout(Some(left()))?;
        let n = (&stream).read(&mut buf)?;
        if n == 0 {
            break;
        }
        // Only the new bytes can hold the end of the line.
        let done = buf[..n].contains(&b'\n');
        req.extend_from_slice(&buf[..n]);
        if done {
            break;
        }
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let reply = if too_large {
        Err(AdminError::new(
            ErrorKind::TooLarge,
            format!(
                "request larger than admin.max_request_bytes ({max_request}); raise it in the data plane's configuration"
            ),
        ))
    } else {
        AdminRequest::parse(line).and_then(&mut *handle)
    };
    let reply = match reply {
        Ok(v) => v,
        Err(e) => serde_json::to_value(&e)?,
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    stream.set_write_timeout(Some(left()))?;
    (&stream).write_all(&out)
}

/// Send one request to a running data plane and read its reply.
pub fn request<T: serde::de::DeserializeOwned>(
    path: &Path,
    req: &AdminRequest<'_>,
) -> Result<T, ClientError> {
    let mut s = UnixStream::connect(path).map_err(|source| ClientError::Unreachable {
        path: path.to_owned(),
        source,
    })?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut msg = serde_json::to_vec(req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    msg.push(b'\n');
    s.write_all(&msg)?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(parse_reply(&buf)?)
}
