//! The node identity sent to the management server.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{Node, node::UserAgentVersionType};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value, value::Kind};

/// Check a node id. Istio's forms are `sidecar~IP~pod.namespace~namespace.svc.cluster.local`
/// and `router~IP~name.namespace~namespace.svc.cluster.local`; an id
/// without `~` is taken as is (go-control-plane servers use plain ids).
pub fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("node id is empty".into());
    }
    if !id.contains('~') {
        return Ok(());
    }
    let parts: Vec<&str> = id.split('~').collect();
    let [kind, ip, name, domain] = parts.as_slice() else {
        return Err(format!(
            "node id {id:?}: Istio's form has four parts, TYPE~IP~NAME.NAMESPACE~NAMESPACE.svc.cluster.local; this has {}",
            parts.len()
        ));
    };
    if !matches!(*kind, "sidecar" | "router") {
        return Err(format!(
            "node id {id:?}: type {kind:?} is not one of Istio's proxy types sidecar or router"
        ));
    }
    if ip.parse::<std::net::IpAddr>().is_err() {
        return Err(format!("node id {id:?}: {ip:?} is not an IP address"));
    }
    if name.is_empty() || !name.contains('.') {
        return Err(format!(
            "node id {id:?}: {name:?} should be NAME.NAMESPACE (the pod or gateway and its namespace)"
        ));
    }
    if domain.is_empty() {
        return Err(format!("node id {id:?}: the DNS domain part is empty"));
    }
    Ok(())
}

/// A node with our user agent, `metadata` from JSON values.
pub fn build(id: &str, cluster: &str, metadata: &BTreeMap<String, serde_json::Value>) -> Node {
    Node {
        id: id.to_owned(),
        cluster: cluster.to_owned(),
        metadata: (!metadata.is_empty()).then(|| Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| (k.clone(), value(v)))
                .collect(),
        }),
        user_agent_name: "dataplane-control-agent".into(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").into(),
        )),
        ..Node::default()
    }
}

fn value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), value(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_ids_are_checked_part_by_part() {
        check_id("sidecar~10.1.2.3~reviews-v1-abc.default~default.svc.cluster.local").unwrap();
        check_id(
            "router~10.1.2.3~istio-ingressgateway-xyz.istio-system~istio-system.svc.cluster.local",
        )
        .unwrap();
        check_id("plain-node-1").unwrap();
        let e = check_id("gateway~10.1.2.3~a.b~b.svc.cluster.local").unwrap_err();
        assert!(e.contains("sidecar or router"), "{e}");
        let e = check_id("sidecar~not-an-ip~a.b~b.svc.cluster.local").unwrap_err();
        assert!(e.contains("not an IP"), "{e}");
        let e = check_id("sidecar~10.1.2.3~a.b").unwrap_err();
        assert!(e.contains("four parts"), "{e}");
    }
}
