//! The data plane's `/config_dump`, built here: the agent holds the xDS
//! resources as the server sent them and the protobuf descriptors to print
//! them, the data plane neither. Each ACK hands the data plane its type's
//! section of Envoy's `ConfigDump` (`ClustersConfigDump`,
//! `ListenersConfigDump`, `RoutesConfigDump`) in protobuf JSON, which it
//! serves as it is. Sensitive fields are `[redacted]` first, as Envoy does.
//! Endpoints are left out, as Envoy leaves them out without `include_eds`.

use std::time::SystemTime;

use dataplane_config::admin::XdsType;
use prost_reflect::{DynamicMessage, SerializeOptions};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::xds::{CDS, LDS, RDS, RawResource, Xds};

/// `ty`'s section of the dump as JSON text, or `None` for a type not
/// dumped. Written one resource at a time: only one resource is ever a
/// JSON tree, whatever the number of them.
pub fn section(xds: &Xds, ty: XdsType) -> Option<Box<RawValue>> {
    let (type_url, dump_type, list) = match ty {
        XdsType::Cds => (CDS, "ClustersConfigDump", "dynamic_active_clusters"),
        XdsType::Lds => (LDS, "ListenersConfigDump", "dynamic_listeners"),
        XdsType::Rds => (RDS, "RoutesConfigDump", "dynamic_route_configs"),
        XdsType::Eds => return None,
    };
    let (version, held) = xds.held_raw(type_url);
    let text = |v: &str| Value::String(v.to_string()).to_string();
    let mut out = format!(
        "{{\"@type\":{}",
        text(&format!("type.googleapis.com/envoy.admin.v3.{dump_type}"))
    );
    if ty != XdsType::Rds {
        out.push_str(&format!(",\"version_info\":{}", text(&version)));
    }
    out.push_str(&format!(",\"{list}\":["));
    let mut first = true;
    for (name, r) in held {
        let body = match any_json(r) {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!("config_dump: {name}: {e}");
                continue;
            }
        };
        let updated = rfc3339(r.updated);
        let item = match ty {
            XdsType::Cds => json!({
                "version_info": r.version, "cluster": body, "last_updated": updated,
            }),
            XdsType::Lds => json!({
                "name": name,
                "active_state": {"version_info": r.version, "listener": body, "last_updated": updated},
            }),
            _ => json!({
                "version_info": r.version, "route_config": body, "last_updated": updated,
            }),
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&item.to_string());
    }
    out.push_str("]}");
    RawValue::from_string(out).ok()
}

/// The resource as protobuf JSON with its `@type`, redacted.
fn any_json(r: &RawResource) -> Result<Value, String> {
    let pool = crate::bootstrap::pool();
    let any_desc = pool
        .get_message_by_name("google.protobuf.Any")
        .ok_or("no google.protobuf.Any descriptor")?;
    let mut any = DynamicMessage::new(any_desc);
    any.set_field_by_name(
        "type_url",
        prost_reflect::Value::String(r.any.type_url.clone()),
    );
    any.set_field_by_name(
        "value",
        prost_reflect::Value::Bytes(r.any.value.clone().into()),
    );
    let opts = SerializeOptions::new().skip_default_fields(true);
    let mut v = any
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| e.to_string())?;
    redact(&mut v);
    Ok(v)
}

/// Fields Envoy marks sensitive: their contents become `[redacted]`.
const SENSITIVE: &[&str] = &[
    "private_key",
    "password",
    "session_ticket_keys",
    "hmac_secret",
    "generic_secret",
    "private_key_provider",
];

fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if SENSITIVE.contains(&k.as_str()) {
                    blank(x);
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Every string under `v` becomes `[redacted]` (bytes fields its base64),
/// keeping the shape, so the dump still parses as Envoy's protos.
fn blank(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "inline_bytes" {
                    *x = json!("W3JlZGFjdGVkXQ==");
                } else if k != "@type" {
                    blank(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(blank),
        Value::String(s) => *s = "[redacted]".into(),
        _ => {}
    }
}

/// `2026-12-03T06:10:00.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Whether `json` (a `/config_dump` answer) reads as Envoy's
/// `envoy.admin.v3.ConfigDump` in protobuf JSON, unknown fields refused.
pub fn check(json: &str) -> Result<(), String> {
    let pool = crate::bootstrap::pool();
    let desc = pool
        .get_message_by_name("envoy.admin.v3.ConfigDump")
        .ok_or("no envoy.admin.v3.ConfigDump descriptor")?;
    let mut de = serde_json::Deserializer::from_str(json);
    let opts = prost_reflect::DeserializeOptions::new().deny_unknown_fields(true);
    DynamicMessage::deserialize_with_options(desc, &mut de, &opts).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_redaction() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_796_277_600_123);
        assert_eq!(rfc3339(t), "2026-12-03T06:00:00.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let mut v = json!({"tls": {"private_key": {"inline_string": "KEY"}, "cert": "C"},
                           "x": [{"password": {"inline_bytes": "cGFzcw=="}}]});
        redact(&mut v);
        assert_eq!(v["tls"]["private_key"]["inline_string"], "[redacted]");
        assert_eq!(v["tls"]["cert"], "C");
        assert_eq!(v["x"][0]["password"]["inline_bytes"], "W3JlZGFjdGVkXQ==");
        assert!(!v.to_string().contains("KEY"));
    }
}
