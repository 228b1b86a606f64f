//! The admin socket's protocol, shared by the data plane (server), its own
//! CLI and `control-agent` (clients): one JSON object on one line each way,
//! then the server closes the connection.
//!
//! A request names its command in `cmd` (`{"cmd":"stats"}`,
//! `{"cmd":"apply","update":{...}}`); an answer is the command's reply, or
//! an [`AdminError`] (`{"error":"...","kind":"..."}`). `control-agent`
//! reports each xDS ACK and NACK with `xds_report` ([`XdsReport`]), which
//! the HTTP admin server turns into Envoy's `update_success` /
//! `update_rejected` stats and `/config_dump`.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ProxyState, ProxyUpdate, Rejected};

/// A request on the admin socket. A client sends an update it holds
/// borrowed; the server's parse owns it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum AdminRequest<'a> {
    /// Every counter (ports, cores, stack, listeners, clusters, endpoints).
    Stats,
    /// The listeners and clusters in force ([`ConfigReply`]).
    Config,
    /// Check and apply a live update ([`ApplyReply`]).
    Apply { update: Cow<'a, ProxyUpdate> },
    /// Which data plane answers, and how far its configuration has got
    /// ([`PingReply`]); cheap.
    Ping,
    /// The control agent's verdict on one xDS response (answered `{}`).
    XdsReport { report: Cow<'a, XdsReport> },
}

/// The xDS resource types the admin stats count, by Envoy's stat prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XdsType {
    Cds,
    Eds,
    Lds,
    Rds,
}

/// One xDS response as the agent answered it: ACK (`accepted`) or NACK.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdsReport {
    #[serde(rename = "type")]
    pub ty: XdsType,
    pub accepted: bool,
    /// The response's `version_info` (`system_version_info` for Delta).
    #[serde(default)]
    pub version: String,
    /// With an ACK: this type's section of Envoy's `/config_dump` (a
    /// `ClustersConfigDump`, `ListenersConfigDump`, ... in protobuf JSON,
    /// secrets already `[redacted]`) for the resources now in force. The
    /// data plane serves it as it is.
    /// Kept as JSON text: a section of 10 000 clusters is megabytes, and
    /// as a JSON tree several times that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_dump: Option<Box<serde_json::value::RawValue>>,
}

impl PartialEq for XdsReport {
    fn eq(&self, o: &Self) -> bool {
        (self.ty, self.accepted, &self.version) == (o.ty, o.accepted, &o.version)
            && self.config_dump.as_ref().map(|r| r.get()) == o.config_dump.as_ref().map(|r| r.get())
    }
}

impl AdminRequest<'static> {
    /// The command names, for error messages.
    pub const COMMANDS: &'static [&'static str] =
        &["stats", "config", "apply", "ping", "xds_report"];

    /// Parse one request line. The command is read first and the rest into
    /// the command's own types, so a large update is parsed once, straight
    /// into its structs (no JSON tree in between).
    pub fn parse(line: &[u8]) -> Result<AdminRequest<'static>, AdminError> {
        #[derive(Deserialize)]
        struct Head {
            cmd: Option<String>,
        }
        #[derive(Deserialize)]
        struct Apply {
            update: Option<ProxyUpdate>,
        }
        #[derive(Deserialize)]
        struct Report {
            report: Option<XdsReport>,
        }
        let bad = |msg: String| AdminError::new(ErrorKind::BadRequest, msg);
        let cmd = match serde_json::from_slice::<Head>(line) {
            Ok(Head { cmd: Some(cmd) }) => cmd,
            Ok(Head { cmd: None }) => return Err(bad("missing \"cmd\"".into())),
            Err(e) if e.is_data() => {
                return Err(bad(
                    "request must be a JSON object like {\"cmd\":\"stats\"}".into(),
                ));
            }
            Err(e) => return Err(bad(format!("request is not JSON: {e}"))),
        };
        Ok(match cmd.as_str() {
            "stats" => AdminRequest::Stats,
            "config" => AdminRequest::Config,
            "ping" => AdminRequest::Ping,
            "apply" => match serde_json::from_slice::<Apply>(line) {
                Ok(Apply {
                    update: Some(update),
                }) => AdminRequest::Apply {
                    update: Cow::Owned(update),
                },
                Ok(Apply { update: None }) => return Err(bad("missing \"update\"".into())),
                Err(e) => return Err(bad(format!("update: {e}"))),
            },
            "xds_report" => match serde_json::from_slice::<Report>(line) {
                Ok(Report {
                    report: Some(report),
                }) => AdminRequest::XdsReport {
                    report: Cow::Owned(report),
                },
                Ok(Report { report: None }) => return Err(bad("missing \"report\"".into())),
                Err(e) => return Err(bad(format!("report: {e}"))),
            },
            other => {
                return Err(bad(format!(
                    "unknown cmd {other:?}; known: {}",
                    Self::COMMANDS.join(", ")
                )));
            }
        })
    }
}

/// What kind of failure an [`AdminError`] is: whether the client may try
/// the same request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or names no command: not retryable.
    #[default]
    BadRequest,
    /// Larger than `admin.max_request_bytes`: not retryable as is.
    TooLarge,
    /// The update was checked and rejected whole (`rejected` says why):
    /// not retryable as is.
    Rejected,
    /// The data plane failed to answer (e.g. could not encode its reply):
    /// not the request's fault.
    Internal,
}

/// The data plane's refusal of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct AdminError {
    /// What went wrong, for a person.
    pub error: String,
    #[serde(default)]
    pub kind: ErrorKind,
    /// For [`ErrorKind::Rejected`]: each rejected item and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejected>,
}

impl AdminError {
    pub fn new(kind: ErrorKind, error: impl Into<String>) -> AdminError {
        AdminError {
            error: error.into(),
            kind,
            rejected: Vec::new(),
        }
    }
}

/// The answer to [`AdminRequest::Apply`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyReply {
    /// Every worker serves the update (false: not confirmed in time; they
    /// apply it when they run again).
    pub applied: bool,
    pub version: String,
    /// The data plane's generation once this update is in force.
    pub generation: u64,
    /// From receipt to the last worker's confirmation.
    pub apply_us: u64,
    /// Items refused by a partial update (the rest applied).
    #[serde(default)]
    pub rejected: Vec<Rejected>,
    /// The data plane process ([`PingReply::instance`]).
    pub instance: String,
}

/// The answer to [`AdminRequest::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingReply {
    /// Random per data plane process: a new one means a restart.
    pub instance: String,
    /// Updates applied since it started.
    pub generation: u64,
    /// The version label of the configuration in force.
    pub version: String,
}

/// The answer to [`AdminRequest::Config`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReply {
    #[serde(flatten)]
    pub state: ProxyState,
    pub generation: u64,
}

/// Why an answer is not the command's reply.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplyError {
    /// The data plane refused the request.
    #[error("{0}")]
    Refused(AdminError),
    /// The answer is neither the reply nor a refusal.
    #[error("{0}")]
    Protocol(String),
}

/// Read an answer: the command's reply `T`, or why not.
pub fn parse_reply<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ReplyError> {
    #[derive(Deserialize)]
    struct Probe {
        error: Option<serde::de::IgnoredAny>,
    }
    let protocol = |what: &str, e: serde_json::Error| ReplyError::Protocol(format!("{what}: {e}"));
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|e| protocol("the data plane answered non-JSON", e))?;
    if probe.error.is_some() {
        return Err(serde_json::from_slice::<AdminError>(bytes).map_or_else(
            |e| protocol("the data plane's error answer", e),
            ReplyError::Refused,
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| protocol("unexpected answer", e))
}

/// Why a client's request to a data plane failed: the data plane's own
/// CLI and `control-agent` say the same things.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the data plane's admin socket {path}: {source}")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the data plane did not answer within {0:?}")]
    Timeout(Duration),
    /// It answered, and refused.
    #[error("the data plane refused the request: {0}")]
    Refused(AdminError),
    /// It answered something that is not the command's reply.
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// Whether the data plane may be down or restarting (try again and
    /// watch it), rather than present and refusing (a verdict: asking again
    /// changes nothing).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ClientError::Refused(_))
    }
}

impl From<ReplyError> for ClientError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::Refused(refusal) => ClientError::Refused(refusal),
            ReplyError::Protocol(msg) => ClientError::Protocol(msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_on_the_wire_format() {
        let line = serde_json::to_vec(&AdminRequest::Stats).unwrap();
        assert_eq!(line, br#"{"cmd":"stats"}"#);
        assert_eq!(AdminRequest::parse(&line).unwrap(), AdminRequest::Stats);
        let apply = AdminRequest::Apply {
            update: Cow::Owned(ProxyUpdate {
                version: "v1".into(),
                ..ProxyUpdate::default()
            }),
        };
        let line = serde_json::to_vec(&apply).unwrap();
        assert!(line.starts_with(br#"{"cmd":"apply","update":{"#));
        assert_eq!(AdminRequest::parse(&line).unwrap(), apply);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let err = |l: &[u8]| AdminRequest::parse(l).unwrap_err();
        assert!(err(b"{}").error.contains("missing \"cmd\""));
        assert!(err(b"[1]").error.contains("JSON object"));
        assert!(err(b"{\"cmd\":").error.contains("not JSON"));
        let e = err(br#"{"cmd":"nope"}"#);
        assert!(e.error.contains("known: stats, config, apply, ping"), "{e}");
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(
            err(br#"{"cmd":"apply"}"#)
                .error
                .contains("missing \"update\"")
        );
    }

    #[test]
    fn replies_and_refusals_are_told_apart() {
        let ping = PingReply {
            instance: "ab".into(),
            generation: 3,
            version: "v".into(),
        };
        let bytes = serde_json::to_vec(&ping).unwrap();
        assert_eq!(parse_reply::<PingReply>(&bytes).unwrap(), ping);
        let refusal = AdminError::new(ErrorKind::TooLarge, "too big");
        let bytes = serde_json::to_vec(&refusal).unwrap();
        assert_eq!(
            parse_reply::<PingReply>(&bytes).unwrap_err(),
            ReplyError::Refused(refusal)
        );
        assert!(matches!(
            parse_reply::<PingReply>(b"nope"),
            Err(ReplyError::Protocol(_))
        ));
    }
}
