//! The data plane's admin socket, from the agent's side: one JSON request
//! per connection, one JSON answer (see `dataplane/src/admin.rs`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane_config::{ProxyUpdate, Rejected};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest a request may take (a large update is checked and applied by
/// every worker before the answer comes).
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct DataPlane {
    socket: PathBuf,
}

/// Who answered: changes when the data plane restarts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub instance: String,
    pub generation: u64,
}

impl DataPlane {
    pub fn new(socket: &Path) -> DataPlane {
        DataPlane {
            socket: socket.to_owned(),
        }
    }

    async fn request(&self, req: &impl serde::Serialize) -> Result<Value, String> {
        let io = async {
            let mut s = UnixStream::connect(&self.socket).await.map_err(|e| {
                format!(
                    "cannot reach the data plane at {}: {e}",
                    self.socket.display()
                )
            })?;
            let mut msg = serde_json::to_vec(req).map_err(|e| e.to_string())?;
            msg.push(b'\n');
            s.write_all(&msg)
                .await
                .map_err(|e| format!("admin socket write: {e}"))?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf)
                .await
                .map_err(|e| format!("admin socket read: {e}"))?;
            serde_json::from_slice::<Value>(&buf)
                .map_err(|e| format!("the data plane answered non-JSON: {e}"))
        };
        tokio::time::timeout(TIMEOUT, io)
            .await
            .map_err(|_| format!("the data plane did not answer within {TIMEOUT:?}"))?
    }

    /// Apply `u`; the items the data plane rejected come back.
    pub async fn apply(&self, u: &ProxyUpdate) -> Result<(Vec<Rejected>, Value), String> {
        // Serialized straight from `u` (no JSON tree in between).
        #[derive(serde::Serialize)]
        struct Apply<'a> {
            cmd: &'static str,
            update: &'a ProxyUpdate,
        }
        let v = self
            .request(&Apply {
                cmd: "apply",
                update: u,
            })
            .await?;
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return Err(format!("the data plane refused the update: {e}"));
        }
        if v.get("applied") != Some(&Value::Bool(true)) {
            tracing::warn!(
                "the data plane took the update but not every worker confirmed it in time"
            );
        }
        let rejected = v
            .get("rejected")
            .cloned()
            .map(serde_json::from_value::<Vec<Rejected>>)
            .transpose()
            .map_err(|e| format!("the data plane's rejections: {e}"))?
            .unwrap_or_default();
        Ok((rejected, v))
    }

    /// Which data plane is there (cheap: no configuration in the answer).
    pub async fn identity(&self) -> Result<Identity, String> {
        let v = self.request(&json!({"cmd": "ping"})).await?;
        match (v["instance"].as_str(), v["generation"].as_u64()) {
            (Some(i), Some(g)) => Ok(Identity {
                instance: i.to_owned(),
                generation: g,
            }),
            _ => Err(format!("unexpected answer to ping: {v}")),
        }
    }
}
