//! Envoy's protobuf JSON mapping, for YAML and JSON files: the v3
//! bootstrap (`--bootstrap envoy.yaml`) and single resources (tests,
//! tools). Parsed with prost-reflect against the descriptors of the
//! envoy-types package, so `@type`'d `Any`, durations (`"5s"`), wrappers
//! and enum names work as in Envoy, and an unknown field is an error that
//! names it.

use std::sync::OnceLock;

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{address, grpc_service};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::client::Target;

/// Why a file (or text) is not the Envoy message it should be, or why a
/// bootstrap's `ads_config` cannot be used. Always the user's input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("not YAML: {0}")]
    Yaml(#[source] Box<serde_saphyr::Error>),
    /// Does not fit the message: names the unknown field, type or value.
    #[error("{0}")]
    Mapping(#[source] serde_json::Error),
    #[error("{0}")]
    Decode(#[source] prost::DecodeError),
    #[error("ads_config.api_type: unknown value {0}")]
    UnknownApiType(i32),
    #[error("ads_config.api_type {0}: only GRPC and DELTA_GRPC are supported")]
    UnsupportedApiType(&'static str),
    #[error("ads_config.grpc_services: empty")]
    NoGrpcService,
    #[error("ads_config.grpc_services[0]: needs envoy_grpc or google_grpc")]
    NoGrpcTarget,
    #[error("ads_config names cluster {0:?}, which is not in static_resources.clusters")]
    UnknownAdsCluster(String),
    #[error("cluster {0:?}: no endpoint address for the ADS server")]
    NoAdsEndpoint(String),
    #[error("cluster {0:?}: its endpoint needs port_value")]
    NoAdsPort(String),
    #[error("cluster {0:?}: internal addresses cannot reach an ADS server")]
    InternalAdsAddress(String),
}

static POOL: OnceLock<DescriptorPool> = OnceLock::new();

/// Envoy's descriptors (and TypedStruct's), for protobuf JSON both ways.
pub(crate) fn pool() -> &'static DescriptorPool {
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::decode(
            include_bytes!(concat!(env!("OUT_DIR"), "/envoy_types.bin")).as_slice(),
        )
        .expect("envoy-types' descriptor set decodes");
        // Istio wraps extension configs in TypedStruct, which envoy-types
        // does not carry: declare both of its packages' versions.
        for (file, package) in [
            ("udpa/type/v1/typed_struct.proto", "udpa.type.v1"),
            ("xds/type/v3/typed_struct.proto", "xds.type.v3"),
        ] {
            pool.add_file_descriptor_proto(typed_struct(file, package))
                .expect("TypedStruct descriptor");
        }
        pool
    })
}

/// `message TypedStruct { string type_url = 1; google.protobuf.Struct value = 2; }`
fn typed_struct(file: &str, package: &str) -> prost_reflect::prost_types::FileDescriptorProto {
    use prost_reflect::prost_types::{
        DescriptorProto, FieldDescriptorProto, FileDescriptorProto, field_descriptor_proto::Label,
        field_descriptor_proto::Type,
    };
    let field = |name: &str, number, ty: Type, type_name: Option<&str>| FieldDescriptorProto {
        name: Some(name.into()),
        number: Some(number),
        label: Some(Label::Optional as i32),
        r#type: Some(ty as i32),
        type_name: type_name.map(str::to_owned),
        json_name: Some(
            name.split('_')
                .enumerate()
                .map(|(i, w)| {
                    if i == 0 {
                        w.to_owned()
                    } else {
                        w[..1].to_uppercase() + &w[1..]
                    }
                })
                .collect(),
        ),
        ..Default::default()
    };
    FileDescriptorProto {
        name: Some(file.into()),
        package: Some(package.into()),
        dependency: vec!["google/protobuf/struct.proto".into()],
        message_type: vec![DescriptorProto {
            name: Some("TypedStruct".into()),
            field: vec![
                field("type_url", 1, Type::String, None),
                field("value", 2, Type::Message, Some(".google.protobuf.Struct")),
            ],
            ..Default::default()
        }],
        syntax: Some("proto3".into()),
        ..Default::default()
    }
}

/// Parse YAML (or JSON, which is YAML) in protobuf's JSON mapping as the
/// message `full_name`, and encode it.
pub fn encode_yaml(full_name: &str, text: &str) -> Result<Vec<u8>, Error> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| Error::UnknownType(full_name.to_owned()))?;
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| Error::Yaml(Box::new(e)))?;
    let msg = DynamicMessage::deserialize(desc, value).map_err(Error::Mapping)?;
    Ok(msg.encode_to_vec())
}

/// A resource from YAML as an `Any` (`type_url` + bytes): what an xDS
/// server sends.
pub fn any_from_yaml(full_name: &str, text: &str) -> Result<Any, Error> {
    Ok(Any {
        type_url: format!("type.googleapis.com/{full_name}"),
        value: encode_yaml(full_name, text)?,
    })
}

/// Read an Envoy v3 bootstrap.
pub fn parse(text: &str) -> Result<Bootstrap, Error> {
    let bytes = encode_yaml("envoy.config.bootstrap.v3.Bootstrap", text)?;
    Bootstrap::decode(bytes.as_slice()).map_err(Error::Decode)
}

/// The ADS server a bootstrap points at (`dynamic_resources.ads_config`),
/// if any: a Google gRPC `target_uri`, or an Envoy gRPC cluster of
/// `static_resources` with one endpoint (address and port, or a pipe).
pub fn ads_server(b: &Bootstrap) -> Result<Option<Target>, Error> {
    let Some(ads) = b
        .dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
    else {
        return Ok(None);
    };
    let api = envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType::try_from(
        ads.api_type,
    )
    .map_err(|_| Error::UnknownApiType(ads.api_type))?;
    use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
    if !matches!(
        api,
        ApiType::Grpc | ApiType::DeltaGrpc | ApiType::AggregatedGrpc | ApiType::AggregatedDeltaGrpc
    ) {
        return Err(Error::UnsupportedApiType(api.as_str_name()));
    }
    let svc = ads.grpc_services.first().ok_or(Error::NoGrpcService)?;
    match &svc.target_specifier {
        Some(grpc_service::TargetSpecifier::GoogleGrpc(g)) => {
            let uri = &g.target_uri;
            Ok(Some(match uri.strip_prefix("unix:") {
                Some(p) => Target::Unix(p.trim_start_matches("//").into()),
                None if uri.contains("://") => Target::Tcp(uri.clone()),
                None => Target::Tcp(format!("http://{uri}")),
            }))
        }
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) => {
            let static_clusters: &[Cluster] = b
                .static_resources
                .as_ref()
                .map(|s| s.clusters.as_slice())
                .unwrap_or(&[]);
            let c = static_clusters
                .iter()
                .find(|c| c.name == e.cluster_name)
                .ok_or_else(|| Error::UnknownAdsCluster(e.cluster_name.clone()))?;
            let ep = c
                .load_assignment
                .as_ref()
                .and_then(|la| la.endpoints.first())
                .and_then(|l| l.lb_endpoints.first())
                .and_then(|e| match &e.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(ep)) => ep.address.as_ref(),
                    _ => None,
                })
                .and_then(|a| a.address.as_ref())
                .ok_or_else(|| Error::NoAdsEndpoint(c.name.clone()))?;
            match ep {
                address::Address::SocketAddress(sa) => {
                    let port = match sa.port_specifier {
                        Some(envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(p)) => p,
                        _ => return Err(Error::NoAdsPort(c.name.clone())),
                    };
                    let host = if sa.address.contains(':') {
                        format!("[{}]", sa.address)
                    } else {
                        sa.address.clone()
                    };
                    Ok(Some(Target::Tcp(format!("http://{host}:{port}"))))
                }
                address::Address::Pipe(p) => Ok(Some(Target::Unix(p.path.clone().into()))),
                address::Address::EnvoyInternalAddress(_) => {
                    Err(Error::InternalAdsAddress(c.name.clone()))
                }
            }
        }
        None => Err(Error::NoGrpcTarget),
    }
}

/// The static cluster that only carries the ADS stream (`envoy_grpc`):
/// the agent's own, not the data plane's.
pub fn ads_cluster(b: &Bootstrap) -> Option<String> {
    let ads = b.dynamic_resources.as_ref()?.ads_config.as_ref()?;
    match &ads.grpc_services.first()?.target_specifier {
        Some(grpc_service::TargetSpecifier::EnvoyGrpc(e)) => Some(e.cluster_name.clone()),
        _ => None,
    }
}

/// Whether the bootstrap asks for the incremental (Delta) protocol.
pub fn wants_delta(b: &Bootstrap) -> bool {
    use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
    b.dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
        .is_some_and(|a| {
            matches!(
                ApiType::try_from(a.api_type),
                Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc)
            )
        })
}
