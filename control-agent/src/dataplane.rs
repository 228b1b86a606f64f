//! The data plane's admin socket, from the agent's side: one request per
//! connection, one answer, in the typed protocol of
//! `dataplane_config::admin` (the same types the data plane serves).

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane_config::ProxyUpdate;
use dataplane_config::admin::{
    AdminRequest, ApplyReply, ClientError, PingReply, XdsReport, parse_reply,
};
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

/// Why a request to the data plane failed (the data plane's CLI says the
/// same).
pub type DpError = ClientError;

impl DataPlane {
    pub fn new(socket: &Path) -> DataPlane {
        DataPlane {
            socket: socket.to_owned(),
        }
    }

    async fn request<T: serde::de::DeserializeOwned>(
        &self,
        req: &AdminRequest<'_>,
    ) -> Result<T, DpError> {
        let io = async {
            let mut s =
                UnixStream::connect(&self.socket)
                    .await
                    .map_err(|source| DpError::Unreachable {
                        path: self.socket.clone(),
                        source,
                    })?;
            // Serialized straight from the update (no JSON tree in between).
            let mut msg = serde_json::to_vec(req).map_err(|e| DpError::Protocol(e.to_string()))?;
            msg.push(b'\n');
            s.write_all(&msg).await?;
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await?;
            Ok(parse_reply(&buf)?)
        };
        tokio::time::timeout(TIMEOUT, io)
            .await
            .map_err(|_| DpError::Timeout(TIMEOUT))?
    }

    /// The admin socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Apply `u`; the reply lists the items the data plane rejected.
    pub async fn apply(&self, u: &ProxyUpdate) -> Result<ApplyReply, DpError> {
        let r: ApplyReply = self
            .request(&AdminRequest::Apply {
                update: Cow::Borrowed(u),
            })
            .await?;
        if !r.applied {
            tracing::warn!(
                "the data plane took the update but not every worker confirmed it in time"
            );
        }
        Ok(r)
    }

    /// Which data plane is there (cheap: no configuration in the answer).
    pub async fn identity(&self) -> Result<Identity, DpError> {
        let r: PingReply = self.request(&AdminRequest::Ping).await?;
        Ok(Identity {
            instance: r.instance,
            generation: r.generation,
        })
    }

    /// Report one ACK or NACK, for the data plane's admin stats.
    pub async fn report(&self, r: &XdsReport) -> Result<(), DpError> {
        let _: serde_json::Value = self
            .request(&AdminRequest::XdsReport {
                report: Cow::Borrowed(r),
            })
            .await?;
        Ok(())
    }
}
