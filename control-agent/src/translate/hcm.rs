//! `envoy.filters.network.http_connection_manager` and route configurations
//! (inline, or from RDS) → the data plane's `http` filter and
//! `route_configs`.
//!
//! As for the rest of the translation: what changes what a request gets is
//! translated or refused with the field and the reason; what only observes
//! (tracing, access logs, Istio's stats and metadata exchange, a CORS filter
//! with no policy anywhere) is ignored and counted; retry policies are
//! accepted (the data plane applies them with the L7 resilience work).

use dataplane_config::http::{
    AppendAction, DirectResponse, FaultAbort, FaultConfig, FaultDelay, HeaderMatcher,
    HeaderValueOption, HttpConfig, QueryParameterMatcher, RedirectAction, RegexRewrite, Route,
    RouteAction, RouteConfig, RouteMatch, UpgradeConfig, VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption as PbHeader, config_source::ConfigSourceSpecifier, data_source,
};
use envoy_types::pb::envoy::config::route::v3 as rt;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::{HttpFault, fault_abort};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use prost::Message;

use super::{Ignored, TYPED_STRUCTS, duration_ms};

const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
const FAULT: &str = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault";
const CORS: &str = "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors";

/// HTTP filters that only observe requests: dropped (counted, logged once).
const TELEMETRY_HTTP_FILTERS: [&str; 4] = [
    "istio.metadata_exchange",
    "istio.stats",
    "envoy.filters.http.grpc_stats",
    "envoy.filters.http.peer_metadata",
];

/// Where an HTTP filter chain's routes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Routes {
    /// Inline in the connection manager; pushed under the name given.
    Inline(RouteConfig),
    /// From RDS, by this name.
    Rds(String),
}

/// The name an inline route configuration of `listener` is pushed under
/// (inline configurations need no name of their own in Envoy, and two
/// listeners may use the same one).
pub fn inline_name(listener: &str) -> String {
    format!("inline:{listener}")
}

/// The `http` filter of a listener's chain, and where its routes come from.
pub fn hcm(
    h: &HttpConnectionManager,
    listener: &str,
    ignored: &Ignored,
) -> Result<(HttpConfig, Routes), String> {
    match h.codec_type {
        0 | 1 => {}
        2 => {
            return Err(
                "codec_type HTTP2: HTTP/2 is not supported yet (AUTO and HTTP1 are)".into(),
            );
        }
        t => return Err(format!("codec_type {t}: only AUTO and HTTP1 are supported")),
    }
    let mut cfg = HttpConfig::default();
    for (i, f) in h.http_filters.iter().enumerate() {
        let any = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(a)) => Some(a),
            Some(http_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(format!(
                    "http_filters[{i}] {:?}: config_discovery (ECDS) is not supported",
                    f.name
                ));
            }
            None => None,
        };
        let type_url = any.map(|a| a.type_url.as_str()).unwrap_or("");
        let last = i + 1 == h.http_filters.len();
        if f.disabled {
            ignored.note(
                &format!("disabled HTTP filter {:?}", f.name),
                "disabled by default (only routes could enable it)",
            );
            continue;
        }
        if type_url == ROUTER || f.name == "envoy.filters.http.router" {
            if !last {
                return Err(format!(
                    "http_filters[{i}]: the router must be the last HTTP filter"
                ));
            }
            continue;
        }
        if !last && (type_url == FAULT || f.name == "envoy.filters.http.fault") {
            let Some(any) = any else {
                continue; // no configuration: a fault filter that does nothing
            };
            let fault = HttpFault::decode(any.value.as_slice())
                .map_err(|e| format!("http_filters[{i}] fault: cannot decode: {e}"))?;
            cfg.fault = fault_config(&fault).map_err(|e| format!("http_filters[{i}] fault.{e}"))?;
            continue;
        }
        if type_url == CORS || f.name == "envoy.filters.http.cors" {
            // Istio puts it in every connection manager; with no policy on
            // any virtual host or route (those are refused) it does nothing.
            ignored.note(
                "HTTP filter envoy.filters.http.cors",
                "no CORS policy is configured, so it does nothing",
            );
            continue;
        }
        if TELEMETRY_HTTP_FILTERS.contains(&f.name.as_str())
            || (TYPED_STRUCTS.contains(&type_url) && f.name.starts_with("istio."))
        {
            ignored.note(
                &format!("HTTP filter {:?}", f.name),
                "telemetry only; the data plane keeps its own counters",
            );
            continue;
        }
        if f.is_optional {
            ignored.note(
                &format!("optional HTTP filter {:?}", f.name),
                "not supported, and marked is_optional",
            );
            continue;
        }
        return Err(format!(
            "http_filters[{i}]: HTTP filter {:?} ({}) is not supported; the router, fault, cors \
             (without policies) and Istio's telemetry filters are",
            f.name,
            if type_url.is_empty() {
                "no typed_config"
            } else {
                type_url
            }
        ));
    }
    if !h
        .http_filters
        .last()
        .is_some_and(|f| f.name == "envoy.filters.http.router" || typed_url(f) == ROUTER)
    {
        return Err("http_filters: the last HTTP filter must be envoy.filters.http.router".into());
    }

    if let Some(v) = h.use_remote_address {
        cfg.use_remote_address = v.value;
    }
    if let Some(v) = h.generate_request_id {
        cfg.generate_request_id = v.value;
    }
    if let Some(v) = h.normalize_path {
        cfg.normalize_path = v.value;
    }
    cfg.merge_slashes = h.merge_slashes;
    if let Some(v) = h.max_request_headers_kb {
        cfg.max_request_headers_kb = v.value;
    }
    if !h.server_name.is_empty() {
        cfg.server_name = h.server_name.clone();
    }
    cfg.stat_prefix = h.stat_prefix.clone();
    if let Some(t) = &h.tracing {
        cfg.tracing = Some(dataplane_config::http::HttpTracing {
            random_sampling: t.random_sampling.as_ref().map_or(100.0, |p| p.value),
        });
    }
    if let Some(o) = &h.common_http_protocol_options {
        if let Some(d) = &o.idle_timeout {
            cfg.idle_timeout_ms = ms_or_zero(d);
        }
        if let Some(d) = &o.max_connection_duration {
            cfg.max_connection_duration_ms = ms_or_zero(d);
        }
        if let Some(v) = o.max_headers_count {
            cfg.max_headers_count = v.value;
        }
        if let Some(v) = o.max_requests_per_connection {
            cfg.max_requests_per_connection = v.value;
        }
        if o.headers_with_underscores_action != 0 {
            return Err(
                "common_http_protocol_options.headers_with_underscores_action: only ALLOW is supported"
                    .into(),
            );
        }
    }
    if let Some(d) = &h.stream_idle_timeout {
        cfg.stream_idle_timeout_ms = ms_or_zero(d);
    }
    if let Some(d) = &h.request_headers_timeout {
        cfg.request_headers_timeout_ms = ms_or_zero(d);
    }
    if let Some(d) = &h.request_timeout {
        cfg.request_timeout_ms = ms_or_zero(d);
    }
    for (i, u) in h.upgrade_configs.iter().enumerate() {
        if !u.filters.is_empty() {
            return Err(format!(
                "upgrade_configs[{i}].filters: per-upgrade filter chains are not supported"
            ));
        }
        cfg.upgrade_configs.push(UpgradeConfig {
            upgrade_type: u.upgrade_type.clone(),
            enabled: u.enabled.is_none_or(|v| v.value),
        });
    }
    match h.path_with_escaped_slashes_action {
        0 | 1 => {} // the default / KEEP_UNCHANGED: what the data plane does
        a => {
            return Err(format!(
                "path_with_escaped_slashes_action {a}: only KEEP_UNCHANGED is supported"
            ));
        }
    }
    if h.strip_matching_host_port || h.strip_port_mode.is_some() {
        return Err("strip_matching_host_port / strip_any_host_port are not supported yet".into());
    }
    if h.local_reply_config.is_some() {
        return Err(
            "local_reply_config is not supported (local replies are Envoy's defaults)".into(),
        );
    }
    if h.scheme_header_transformation.is_some() {
        return Err("scheme_header_transformation is not supported".into());
    }
    for (on, what, why) in [
        (
            h.tracing.as_ref().is_some_and(|t| t.provider.is_some()),
            "tracing.provider",
            "spans go to the data plane's own tracing.zipkin collector",
        ),
        (
            !h.access_log.is_empty(),
            "access_log",
            "access logs come with the L7 resilience work",
        ),
        (
            h.server_header_transformation != 0,
            "server_header_transformation",
            "the server header is always overwritten",
        ),
        (
            h.xff_num_trusted_hops != 0,
            "xff_num_trusted_hops",
            "x-forwarded-for is appended to, never trusted",
        ),
        (
            h.internal_address_config.is_some(),
            "internal_address_config",
            "no internal/external distinction is made",
        ),
        (
            h.forward_client_cert_details != 0,
            "forward_client_cert_details",
            "no client certificates without TLS",
        ),
        (
            h.preserve_external_request_id,
            "preserve_external_request_id",
            "x-request-id is kept when present",
        ),
        (
            h.always_set_request_id_in_response,
            "always_set_request_id_in_response",
            "not supported",
        ),
        (!h.via.is_empty(), "via", "no via header is added"),
    ] {
        if on {
            ignored.note(&format!("HTTP connection manager field {what}"), why);
        }
    }
    let routes = match &h.route_specifier {
        Some(RouteSpecifier::RouteConfig(rc)) => {
            let mut r = route_config(rc, ignored).map_err(|e| format!("route_config.{e}"))?;
            r.name = inline_name(listener);
            Routes::Inline(r)
        }
        Some(RouteSpecifier::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return Err("rds.route_config_name: missing".into());
            }
            if let Some(src) = &rds.config_source
                && src.config_source_specifier.is_some()
                && !matches!(
                    src.config_source_specifier,
                    Some(ConfigSourceSpecifier::Ads(_))
                )
            {
                return Err("rds.config_source: only ads is supported as the RDS source".into());
            }
            Routes::Rds(rds.route_config_name.clone())
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err("scoped_routes is not supported (route_config and rds are)".into());
        }
        None => return Err("route_specifier: missing (route_config or rds)".into()),
    };
    cfg.route_config = match &routes {
        Routes::Inline(r) => r.name.clone(),
        Routes::Rds(n) => n.clone(),
    };
    Ok((cfg, routes))
}

fn typed_url(
    f: &envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter,
) -> &str {
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(a)) => &a.type_url,
        _ => "",
    }
}

fn ms_or_zero(d: &envoy_types::pb::google::protobuf::Duration) -> u64 {
    duration_ms(d).unwrap_or(0)
}

fn percent(p: Option<&FractionalPercent>) -> f64 {
    let Some(p) = p else {
        return 0.0;
    };
    let denom = match p.denominator {
        1 => 10_000.0,
        2 => 1_000_000.0,
        _ => 100.0,
    };
    (f64::from(p.numerator) / denom * 100.0).min(100.0)
}

fn fault_config(f: &HttpFault) -> Result<Option<FaultConfig>, String> {
    if !f.upstream_cluster.is_empty() || !f.headers.is_empty() || !f.downstream_nodes.is_empty() {
        return Err(
            "upstream_cluster, headers, downstream_nodes: conditional faults are not supported"
                .into(),
        );
    }
    if f.response_rate_limit.is_some() {
        return Err("response_rate_limit: not supported".into());
    }
    let delay = match &f.delay {
        None => None,
        Some(d) => {
            use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
            match &d.fault_delay_secifier {
                Some(FaultDelaySecifier::FixedDelay(t)) => Some(FaultDelay {
                    fixed_delay_ms: duration_ms(t).unwrap_or(0),
                    percentage: percent(d.percentage.as_ref()),
                }),
                Some(_) => {
                    return Err("delay: only fixed_delay is supported (no header delay)".into());
                }
                None => return Err("delay.fixed_delay: missing".into()),
            }
        }
    };
    let abort = match &f.abort {
        None => None,
        Some(a) => match &a.error_type {
            Some(fault_abort::ErrorType::HttpStatus(s)) => Some(FaultAbort {
                http_status: u16::try_from(*s).unwrap_or(0),
                percentage: percent(a.percentage.as_ref()),
            }),
            Some(_) => {
                return Err(
                    "abort: only http_status aborts are supported (no gRPC, no header abort)"
                        .into(),
                );
            }
            None => return Err("abort.error_type: missing".into()),
        },
    };
    Ok((delay.is_some() || abort.is_some()).then_some(FaultConfig { delay, abort }))
}

/// A route configuration (inline or from RDS), checked as the data plane
/// will check it, so that a refusal lands on it.
pub fn route_config(rc: &rt::RouteConfiguration, ignored: &Ignored) -> Result<RouteConfig, String> {
    let unsupported = [
        (rc.vhds.is_some(), "vhds"),
        (
            !rc.cluster_specifier_plugins.is_empty(),
            "cluster_specifier_plugins",
        ),
        (
            !rc.request_mirror_policies.is_empty(),
            "request_mirror_policies",
        ),
        (
            rc.ignore_port_in_host_matching,
            "ignore_port_in_host_matching",
        ),
        (!rc.vhost_header.is_empty(), "vhost_header"),
        (
            rc.most_specific_header_mutations_wins,
            "most_specific_header_mutations_wins",
        ),
        (
            rc.ignore_path_parameters_in_path_matching,
            "ignore_path_parameters_in_path_matching",
        ),
        (
            !rc.typed_per_filter_config.is_empty(),
            "typed_per_filter_config",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!("{what}: not supported"));
    }
    if !rc.internal_only_headers.is_empty() {
        ignored.note("route_config internal_only_headers", "not enforced");
    }
    let mut out = RouteConfig {
        name: rc.name.clone(),
        virtual_hosts: Vec::new(),
        request_headers_to_add: headers(&rc.request_headers_to_add)
            .map_err(|e| format!("request_headers_to_add{e}"))?,
        request_headers_to_remove: rc.request_headers_to_remove.clone(),
        response_headers_to_add: headers(&rc.response_headers_to_add)
            .map_err(|e| format!("response_headers_to_add{e}"))?,
        response_headers_to_remove: rc.response_headers_to_remove.clone(),
    };
    for (i, v) in rc.virtual_hosts.iter().enumerate() {
        out.virtual_hosts
            .push(virtual_host(v, ignored).map_err(|e| format!("virtual_hosts[{i}].{e}"))?);
    }
    if let Err(errors) = out.check() {
        let e = &errors[0];
        return Err(if e.value.is_empty() {
            format!("{}: {}", e.path, e.reason)
        } else {
            format!("{} = {}: {}", e.path, e.value, e.reason)
        });
    }
    Ok(out)
}

// `cors` on a virtual host is deprecated; it is still refused when given.
#[allow(deprecated)]
fn virtual_host(v: &rt::VirtualHost, ignored: &Ignored) -> Result<VirtualHost, String> {
    let unsupported = [
        (v.matcher.is_some(), "matcher"),
        (v.require_tls != 0, "require_tls"),
        (!v.rate_limits.is_empty(), "rate_limits"),
        (v.cors.is_some(), "cors (a CORS policy)"),
        (
            !v.typed_per_filter_config.is_empty(),
            "typed_per_filter_config",
        ),
        (
            !v.request_mirror_policies.is_empty(),
            "request_mirror_policies",
        ),
        (
            v.retry_policy_typed_config.is_some(),
            "retry_policy_typed_config",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!("{what}: not supported"));
    }
    if v.retry_policy.is_some() {
        ignored.note(
            "virtual host retry_policy",
            "accepted; retries come with the L7 resilience work",
        );
    }
    if v.hedge_policy.is_some() || !v.virtual_clusters.is_empty() {
        ignored.note(
            "virtual host hedge_policy / virtual_clusters",
            "not supported",
        );
    }
    let mut routes = Vec::with_capacity(v.routes.len());
    for (i, r) in v.routes.iter().enumerate() {
        routes.push(route(r, ignored).map_err(|e| format!("routes[{i}].{e}"))?);
    }
    Ok(VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        routes,
        request_headers_to_add: headers(&v.request_headers_to_add)
            .map_err(|e| format!("request_headers_to_add{e}"))?,
        request_headers_to_remove: v.request_headers_to_remove.clone(),
        response_headers_to_add: headers(&v.response_headers_to_add)
            .map_err(|e| format!("response_headers_to_add{e}"))?,
        response_headers_to_remove: v.response_headers_to_remove.clone(),
    })
}

fn route(r: &rt::Route, ignored: &Ignored) -> Result<Route, String> {
    if !r.typed_per_filter_config.is_empty() {
        let names: Vec<&String> = r.typed_per_filter_config.keys().collect();
        return Err(format!(
            "typed_per_filter_config {names:?}: per-route filter configuration is not supported"
        ));
    }
    let m = r.r#match.as_ref().ok_or("match: missing")?;
    let matcher = route_match(m).map_err(|e| format!("match.{e}"))?;
    let (mut action, mut redirect, mut direct) = (None, None, None);
    match &r.action {
        Some(rt::route::Action::Route(a)) => {
            action = Some(route_action(a, ignored).map_err(|e| format!("route.{e}"))?)
        }
        Some(rt::route::Action::Redirect(d)) => {
            redirect = Some(redirect_action(d).map_err(|e| format!("redirect.{e}"))?)
        }
        Some(rt::route::Action::DirectResponse(d)) => {
            if d.body_format.is_some() {
                return Err("direct_response.body_format: not supported".into());
            }
            let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
                None => None,
                Some(data_source::Specifier::InlineString(s)) => Some(s.clone()),
                Some(data_source::Specifier::InlineBytes(b)) => Some(
                    String::from_utf8(b.clone()).map_err(|_| "direct_response.body: not UTF-8")?,
                ),
                Some(_) => {
                    return Err(
                        "direct_response.body: only inline_string and inline_bytes are supported"
                            .into(),
                    );
                }
            };
            direct = Some(DirectResponse {
                status: u16::try_from(d.status).unwrap_or(0),
                body,
            });
        }
        Some(_) => {
            return Err("action: only route, redirect and direct_response are supported".into());
        }
        None => return Err("action: missing".into()),
    }
    Ok(Route {
        name: r.name.clone(),
        matcher,
        route: action,
        redirect,
        direct_response: direct,
        request_headers_to_add: headers(&r.request_headers_to_add)
            .map_err(|e| format!("request_headers_to_add{e}"))?,
        request_headers_to_remove: r.request_headers_to_remove.clone(),
        response_headers_to_add: headers(&r.response_headers_to_add)
            .map_err(|e| format!("response_headers_to_add{e}"))?,
        response_headers_to_remove: r.response_headers_to_remove.clone(),
    })
}

fn route_match(m: &rt::RouteMatch) -> Result<RouteMatch, String> {
    let unsupported = [
        (m.runtime_fraction.is_some(), "runtime_fraction"),
        (!m.cookies.is_empty(), "cookies"),
        (m.grpc.is_some(), "grpc"),
        (m.tls_context.is_some(), "tls_context"),
        (!m.dynamic_metadata.is_empty(), "dynamic_metadata"),
        (!m.filter_state.is_empty(), "filter_state"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!("{what}: not supported"));
    }
    use rt::route_match::PathSpecifier as P;
    let mut out = RouteMatch {
        prefix: None,
        path: None,
        safe_regex: None,
        path_separated_prefix: None,
        connect_matcher: None,
        case_sensitive: m.case_sensitive.is_none_or(|v| v.value),
        headers: Vec::new(),
        query_parameters: Vec::new(),
    };
    match &m.path_specifier {
        Some(P::Prefix(p)) => out.prefix = Some(p.clone()),
        Some(P::Path(p)) => out.path = Some(p.clone()),
        Some(P::SafeRegex(r)) => out.safe_regex = Some(r.regex.clone()),
        Some(P::PathSeparatedPrefix(p)) => out.path_separated_prefix = Some(p.clone()),
        Some(P::ConnectMatcher(_)) => out.connect_matcher = Some(Default::default()),
        Some(P::PathMatchPolicy(_)) => return Err("path_match_policy: not supported".into()),
        None => return Err("path_specifier: missing".into()),
    }
    for (i, h) in m.headers.iter().enumerate() {
        out.headers
            .push(header_matcher(h).map_err(|e| format!("headers[{i}].{e}"))?);
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        use rt::query_parameter_matcher::QueryParameterMatchSpecifier as Q;
        let mut qm = QueryParameterMatcher {
            name: q.name.clone(),
            exact: None,
            prefix: None,
            suffix: None,
            contains: None,
            safe_regex: None,
            present_match: None,
            ignore_case: false,
        };
        match &q.query_parameter_match_specifier {
            Some(Q::StringMatch(s)) => {
                let (e, p, su, c, r, ic) = string_matcher(s)
                    .map_err(|e| format!("query_parameters[{i}].string_match.{e}"))?;
                (
                    qm.exact,
                    qm.prefix,
                    qm.suffix,
                    qm.contains,
                    qm.safe_regex,
                    qm.ignore_case,
                ) = (e, p, su, c, r, ic);
            }
            Some(Q::PresentMatch(b)) => qm.present_match = Some(*b),
            None => qm.present_match = Some(true),
        }
        out.query_parameters.push(qm);
    }
    Ok(out)
}

type Strings = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    bool,
);

fn string_matcher(s: &StringMatcher) -> Result<Strings, String> {
    let mut out: Strings = (None, None, None, None, None, s.ignore_case);
    match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => out.0 = Some(v.clone()),
        Some(MatchPattern::Prefix(v)) => out.1 = Some(v.clone()),
        Some(MatchPattern::Suffix(v)) => out.2 = Some(v.clone()),
        Some(MatchPattern::Contains(v)) => out.3 = Some(v.clone()),
        Some(MatchPattern::SafeRegex(r)) => out.4 = Some(r.regex.clone()),
        Some(MatchPattern::Custom(_)) => return Err("custom: not supported".into()),
        None => return Err("match_pattern: missing".into()),
    }
    Ok(out)
}

// The older `exact_match` ... forms are deprecated, and control planes
// still send them.
#[allow(deprecated)]
fn header_matcher(h: &rt::HeaderMatcher) -> Result<HeaderMatcher, String> {
    use rt::header_matcher::HeaderMatchSpecifier as S;
    if h.treat_missing_header_as_empty {
        return Err("treat_missing_header_as_empty: not supported".into());
    }
    let mut m = HeaderMatcher {
        name: h.name.clone(),
        exact: None,
        prefix: None,
        suffix: None,
        contains: None,
        safe_regex: None,
        present: None,
        ignore_case: false,
        invert_match: h.invert_match,
    };
    match &h.header_match_specifier {
        Some(S::ExactMatch(v)) => m.exact = Some(v.clone()),
        Some(S::PrefixMatch(v)) => m.prefix = Some(v.clone()),
        Some(S::SuffixMatch(v)) => m.suffix = Some(v.clone()),
        Some(S::ContainsMatch(v)) => m.contains = Some(v.clone()),
        Some(S::SafeRegexMatch(r)) => m.safe_regex = Some(r.regex.clone()),
        Some(S::PresentMatch(b)) => m.present = Some(*b),
        Some(S::StringMatch(s)) => {
            let (e, p, su, c, r, ic) =
                string_matcher(s).map_err(|e| format!("string_match.{e}"))?;
            (
                m.exact,
                m.prefix,
                m.suffix,
                m.contains,
                m.safe_regex,
                m.ignore_case,
            ) = (e, p, su, c, r, ic);
        }
        Some(S::RangeMatch(_)) => return Err("range_match: not supported".into()),
        None => m.present = Some(true),
    }
    Ok(m)
}

// Deprecated fields are still sent, and still refused or noted.
#[allow(deprecated)]
fn route_action(a: &rt::RouteAction, ignored: &Ignored) -> Result<RouteAction, String> {
    use rt::route_action::{ClusterSpecifier as C, HostRewriteSpecifier as H};
    let unsupported = [
        (
            a.cluster_not_found_response_code != 0,
            "cluster_not_found_response_code",
        ),
        (
            a.metadata_match.is_some(),
            "metadata_match (subset load balancing)",
        ),
        (a.path_rewrite_policy.is_some(), "path_rewrite_policy"),
        (!a.path_rewrite.is_empty(), "path_rewrite"),
        (a.append_x_forwarded_host, "append_x_forwarded_host"),
        (
            !a.request_mirror_policies.is_empty(),
            "request_mirror_policies",
        ),
        (!a.rate_limits.is_empty(), "rate_limits"),
        (a.cors.is_some(), "cors (a CORS policy)"),
        (!a.upgrade_configs.is_empty(), "upgrade_configs"),
        (
            a.internal_redirect_policy.is_some() || a.internal_redirect_action != 0,
            "internal redirects",
        ),
        (
            a.retry_policy_typed_config.is_some(),
            "retry_policy_typed_config",
        ),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(on, _)| *on) {
        return Err(format!("{what}: not supported"));
    }
    for (on, what, why) in [
        (
            a.retry_policy.is_some(),
            "route retry_policy",
            "accepted; retries come with the L7 resilience work",
        ),
        (
            !a.hash_policy.is_empty(),
            "route hash_policy",
            "hash load balancing comes with the L7 resilience work; the cluster's policy picks meanwhile",
        ),
        (
            a.idle_timeout.is_some(),
            "route idle_timeout",
            "the connection manager's stream_idle_timeout applies",
        ),
        (
            a.hedge_policy.is_some(),
            "route hedge_policy",
            "not supported",
        ),
        (
            a.max_stream_duration.is_some()
                || a.max_grpc_timeout.is_some()
                || a.grpc_timeout_offset.is_some(),
            "route max_stream_duration / grpc timeouts",
            "gRPC comes later",
        ),
    ] {
        if on {
            ignored.note(what, why);
        }
    }
    let mut out = RouteAction {
        cluster: None,
        weighted_clusters: None,
        cluster_header: None,
        prefix_rewrite: (!a.prefix_rewrite.is_empty()).then(|| a.prefix_rewrite.clone()),
        regex_rewrite: None,
        host_rewrite_literal: None,
        auto_host_rewrite: false,
        timeout_ms: 15_000,
    };
    match &a.cluster_specifier {
        Some(C::Cluster(c)) => out.cluster = Some(c.clone()),
        Some(C::ClusterHeader(h)) => out.cluster_header = Some(h.clone()),
        Some(C::WeightedClusters(w)) => {
            let mut v = Vec::new();
            for (i, c) in w.clusters.iter().enumerate() {
                if !c.cluster_header.is_empty()
                    || !c.request_headers_to_add.is_empty()
                    || !c.request_headers_to_remove.is_empty()
                    || !c.response_headers_to_add.is_empty()
                    || !c.response_headers_to_remove.is_empty()
                    || !c.typed_per_filter_config.is_empty()
                    || c.host_rewrite_specifier.is_some()
                    || c.metadata_match.is_some()
                {
                    return Err(format!(
                        "weighted_clusters.clusters[{i}]: only name and weight are supported"
                    ));
                }
                v.push(WeightedCluster {
                    name: c.name.clone(),
                    weight: c.weight.map_or(0, |w| w.value),
                });
            }
            out.weighted_clusters = Some(v);
        }
        Some(_) => {
            return Err("cluster_specifier: cluster specifier plugins are not supported".into());
        }
        None => return Err("cluster_specifier: missing".into()),
    }
    if let Some(r) = &a.regex_rewrite {
        out.regex_rewrite = Some(RegexRewrite {
            pattern: r
                .pattern
                .as_ref()
                .map(|p| p.regex.clone())
                .unwrap_or_default(),
            substitution: r.substitution.clone(),
        });
    }
    match &a.host_rewrite_specifier {
        None => {}
        Some(H::HostRewriteLiteral(h)) => out.host_rewrite_literal = Some(h.clone()),
        Some(H::AutoHostRewrite(b)) => out.auto_host_rewrite = b.value,
        Some(_) => return Err(
            "host_rewrite_specifier: only host_rewrite_literal and auto_host_rewrite are supported"
                .into(),
        ),
    }
    if let Some(t) = &a.timeout {
        out.timeout_ms = ms_or_zero(t);
    }
    Ok(out)
}

fn redirect_action(d: &rt::RedirectAction) -> Result<RedirectAction, String> {
    use rt::redirect_action::{PathRewriteSpecifier as P, SchemeRewriteSpecifier as S};
    let mut out = RedirectAction {
        https_redirect: false,
        scheme_redirect: None,
        host_redirect: (!d.host_redirect.is_empty()).then(|| d.host_redirect.clone()),
        port_redirect: match d.port_redirect {
            0 => None,
            p => Some(u16::try_from(p).map_err(|_| format!("port_redirect {p}: not a port"))?),
        },
        path_redirect: None,
        prefix_rewrite: None,
        strip_query: d.strip_query,
        response_code: match d.response_code {
            0 => 301,
            1 => 302,
            2 => 303,
            3 => 307,
            4 => 308,
            c => return Err(format!("response_code {c}: unknown")),
        },
    };
    match &d.scheme_rewrite_specifier {
        Some(S::HttpsRedirect(b)) => out.https_redirect = *b,
        Some(S::SchemeRedirect(s)) => out.scheme_redirect = Some(s.clone()),
        None => {}
    }
    match &d.path_rewrite_specifier {
        Some(P::PathRedirect(p)) => out.path_redirect = Some(p.clone()),
        Some(P::PrefixRewrite(p)) => out.prefix_rewrite = Some(p.clone()),
        Some(_) => return Err("regex_rewrite / path_rewrite in a redirect: not supported".into()),
        None => {}
    }
    Ok(out)
}

/// Header additions; an error is the `[i].field: why` suffix. The older
/// `append` flag (deprecated, still sent) wins over `append_action`.
#[allow(deprecated)]
fn headers(v: &[PbHeader]) -> Result<Vec<HeaderValueOption>, String> {
    v.iter()
        .enumerate()
        .map(|(i, h)| {
            let hv = h.header.as_ref().ok_or(format!("[{i}].header: missing"))?;
            let value = if hv.raw_value.is_empty() {
                hv.value.clone()
            } else {
                String::from_utf8(hv.raw_value.clone())
                    .map_err(|_| format!("[{i}].header.raw_value: not UTF-8"))?
            };
            if value.contains('%') && !value.contains("%%") {
                return Err(format!(
                    "[{i}].header.value {value:?}: %VARIABLE% substitution is not supported"
                ));
            }
            let append_action = match (h.append, h.append_action) {
                (Some(a), _) => {
                    if a.value {
                        AppendAction::AppendIfExistsOrAdd
                    } else {
                        AppendAction::OverwriteIfExistsOrAdd
                    }
                }
                (None, 0) => AppendAction::AppendIfExistsOrAdd,
                (None, 1) => AppendAction::AddIfAbsent,
                (None, 2) => AppendAction::OverwriteIfExistsOrAdd,
                (None, 3) => AppendAction::OverwriteIfExists,
                (None, a) => return Err(format!("[{i}].append_action {a}: unknown")),
            };
            Ok(HeaderValueOption {
                key: hv.key.clone(),
                value: value.replace("%%", "%"),
                append_action,
            })
        })
        .collect()
}
