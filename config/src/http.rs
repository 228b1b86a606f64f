//! HTTP: the connection manager a filter chain may run, and the route
//! configurations it names (Envoy's `HttpConnectionManager` and
//! `RouteConfiguration`, the parts this data plane honours, with Envoy's
//! field names and defaults).
//!
//! A route configuration stands alone (`route_configs[]`), as RDS sends it,
//! and HTTP filter chains name it; the xDS agent fills the same types from an
//! inline `route_config` or from RDS.

use serde::{Deserialize, Serialize};

/// `filter_chains[].http`: Envoy's HTTP connection manager with its router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The route configuration (`route_configs[].name`) requests are routed
    /// by. While it is missing (a live state may name one that has not
    /// arrived), every request is answered 404 with response flag NR.
    pub route_config: String,
    /// Envoy's `stat_prefix`: the admin stats' `http.<stat_prefix>.`
    /// (empty: the listener's name).
    pub stat_prefix: String,
    /// The `server` header of responses, ours and the upstream's alike
    /// (Envoy's `server_header_transformation: OVERWRITE`).
    pub server_name: String,
    /// Largest request head (request line and headers), in KiB; larger: 431.
    pub max_request_headers_kb: u32,
    /// Most request headers; more: 431.
    pub max_headers_count: u32,
    /// The whole request head must arrive within this long of the first
    /// byte; 0: no limit. Past it: 408, and the connection closes.
    pub request_headers_timeout_ms: u64,
    /// A request with no activity either way this long is ended: 408 before
    /// the response started, a closed connection after; 0: never.
    pub stream_idle_timeout_ms: u64,
    /// A request not fully received this long after it started: 408
    /// (reset if its response has begun); 0: never.
    pub request_timeout_ms: u64,
    /// A client connection with no request in progress this long is closed
    /// (`common_http_protocol_options.idle_timeout`); 0: never.
    pub idle_timeout_ms: u64,
    /// A client connection this old is closed once its request in progress
    /// is answered (that response carries `connection: close`); 0: never.
    pub max_connection_duration_ms: u64,
    /// After this many requests a client connection is closed (the last
    /// response carries `connection: close`); 0: no limit.
    pub max_requests_per_connection: u32,
    /// Normalize the path per RFC 3986 (resolve `.` and `..` segments,
    /// decode percent-encoded unreserved characters) before routing.
    pub normalize_path: bool,
    /// Merge adjacent slashes in the path before routing.
    pub merge_slashes: bool,
    /// Take the client's address as the connection's (and append it to
    /// `x-forwarded-for`); otherwise the client is the last address in
    /// `x-forwarded-for`, as a proxy behind another proxy sees it.
    pub use_remote_address: bool,
    /// Generate `x-request-id` when a request has none.
    pub generate_request_id: bool,
    /// Protocol upgrades allowed (`websocket`, `CONNECT` for the method).
    /// After the upgrade's 101 (or CONNECT's 2xx) the connection is an L4
    /// splice. Anything not listed is answered 403.
    pub upgrade_configs: Vec<UpgradeConfig>,
    /// The fault filter (`envoy.filters.http.fault`), before the router.
    pub fault: Option<FaultConfig>,
    /// Envoy's `tracing`: trace context (B3 and W3C `traceparent`) taken
    /// from requests and passed upstream, and a span per sampled request
    /// sent to `tracing.zipkin` (top level). Unset: headers pass untouched.
    pub tracing: Option<HttpTracing>,
}

/// `http.tracing`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpTracing {
    /// Percent of requests without a sampling decision of their own
    /// (`x-b3-sampled`, `b3`, `traceparent` flags) that are traced.
    /// Envoy's default: 100.
    pub random_sampling: f64,
}

impl Default for HttpTracing {
    fn default() -> Self {
        HttpTracing {
            random_sampling: 100.0,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            route_config: String::new(),
            stat_prefix: String::new(),
            server_name: "dataplane".into(),
            max_request_headers_kb: 60,
            max_headers_count: 100,
            request_headers_timeout_ms: 0,
            stream_idle_timeout_ms: 300_000,
            request_timeout_ms: 0,
            idle_timeout_ms: 3_600_000,
            max_connection_duration_ms: 0,
            max_requests_per_connection: 0,
            normalize_path: false,
            merge_slashes: false,
            use_remote_address: false,
            generate_request_id: true,
            upgrade_configs: Vec::new(),
            fault: None,
            tracing: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeConfig {
    /// Compared case-insensitively with the request's `upgrade` header, or
    /// `CONNECT` for the method.
    pub upgrade_type: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// Delay or abort a share of requests (Envoy's fault filter, its
/// connection-manager-wide settings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub delay: Option<FaultDelay>,
    #[serde(default)]
    pub abort: Option<FaultAbort>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelay {
    pub fixed_delay_ms: u64,
    /// Share of requests delayed, 0-100.
    pub percentage: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbort {
    pub http_status: u16,
    /// Share of requests aborted, 0-100.
    pub percentage: f64,
}

/// Headers to add to and remove from requests or responses, at one level
/// of a route configuration (the config, a virtual host, a route), each of
/// which has Envoy's four fields.
#[derive(Debug, Clone, Copy)]
pub struct HeaderOps<'a> {
    pub request_headers_to_add: &'a [HeaderValueOption],
    pub request_headers_to_remove: &'a [String],
    pub response_headers_to_add: &'a [HeaderValueOption],
    pub response_headers_to_remove: &'a [String],
}

macro_rules! header_ops {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn header_ops(&self) -> HeaderOps<'_> {
                HeaderOps {
                    request_headers_to_add: &self.request_headers_to_add,
                    request_headers_to_remove: &self.request_headers_to_remove,
                    response_headers_to_add: &self.response_headers_to_add,
                    response_headers_to_remove: &self.response_headers_to_remove,
                }
            }
        }
    )*};
}
header_ops!(RouteConfig, VirtualHost, Route);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderValueOption {
    pub key: String,
    /// Used as given (Envoy's `%…%` substitutions are not supported).
    pub value: String,
    #[serde(default)]
    pub append_action: AppendAction,
}

/// Envoy's `HeaderValueOption.append_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppendAction {
    /// Add a value, keeping any already there.
    #[default]
    AppendIfExistsOrAdd,
    /// Add only if the header is absent.
    AddIfAbsent,
    /// Replace every value, or add.
    OverwriteIfExistsOrAdd,
    /// Replace every value if there is one; otherwise nothing.
    OverwriteIfExists,
}

/// A route configuration: virtual hosts chosen by the request's authority,
/// each with routes tried in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(default)]
    pub virtual_hosts: Vec<VirtualHost>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualHost {
    pub name: String,
    /// Exact (`api.example.com`), suffix (`*.example.com`), prefix
    /// (`api.*`) or `*`; with a port (`api.example.com:8080`) matched only
    /// against an authority with that port. Each domain once per route
    /// configuration. Precedence as Envoy's: exact, then the longest
    /// suffix, then the longest prefix, then `*`.
    pub domains: Vec<String>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
}

/// One route: the first whose `match` fits the request is taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    /// Exactly one of `route`, `redirect` and `direct_response`.
    #[serde(default)]
    pub route: Option<RouteAction>,
    #[serde(default)]
    pub redirect: Option<RedirectAction>,
    #[serde(default)]
    pub direct_response: Option<DirectResponse>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<String>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderValueOption>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<String>,
}

/// Exactly one of `prefix`, `path`, `safe_regex`, `path_separated_prefix`
/// (on the path without its query), and every header and query parameter
/// matcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub path: Option<String>,
    /// RE2 syntax (the `regex` crate's, linear time), matched against the
    /// whole path.
    #[serde(default)]
    pub safe_regex: Option<String>,
    /// A prefix that ends at a segment boundary: `/api` takes `/api`,
    /// `/api/x` and `/api?q`, not `/apix`.
    #[serde(default)]
    pub path_separated_prefix: Option<String>,
    /// CONNECT requests (which no path matcher takes): `connect_matcher: {}`.
    #[serde(default)]
    pub connect_matcher: Option<ConnectMatcher>,
    #[serde(default = "yes")]
    pub case_sensitive: bool,
    #[serde(default)]
    pub headers: Vec<HeaderMatcher>,
    #[serde(default)]
    pub query_parameters: Vec<QueryParameterMatcher>,
}

/// Matches CONNECT requests; no fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectMatcher {}

/// A condition on a request header (all its values joined with `,`, as
/// Envoy compares them). With no condition set, the header must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatcher {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub safe_regex: Option<String>,
    /// `true`: the header is present; `false`: it is absent.
    #[serde(default)]
    pub present: Option<bool>,
    /// For `exact`, `prefix`, `suffix`, `contains`.
    #[serde(default)]
    pub ignore_case: bool,
    /// Negate the outcome. (As in Envoy, an absent header matches an
    /// inverted string matcher.)
    #[serde(default)]
    pub invert_match: bool,
}

/// A condition on a query parameter (the first with that name). With no
/// condition set, it must be present.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParameterMatcher {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub safe_regex: Option<String>,
    #[serde(default)]
    pub present_match: Option<bool>,
    #[serde(default)]
    pub ignore_case: bool,
}

/// Forward to a cluster: exactly one of `cluster`, `weighted_clusters` and
/// `cluster_header`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAction {
    #[serde(default)]
    pub cluster: Option<String>,
    /// A cluster picked at random by weight, per request.
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedCluster>>,
    /// The cluster named by this request header (missing or unknown: 503 NC).
    #[serde(default)]
    pub cluster_header: Option<String>,
    /// Replace the part of the path the route's `prefix` (or
    /// `path_separated_prefix`, or `path`) matched.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    /// Replace every match of `pattern` in the path (query excluded) by
    /// `substitution` (`\1` for groups).
    #[serde(default)]
    pub regex_rewrite: Option<RegexRewrite>,
    /// Replace the `host` header with this.
    #[serde(default)]
    pub host_rewrite_literal: Option<String>,
    /// Replace the `host` header with the chosen endpoint's address.
    #[serde(default)]
    pub auto_host_rewrite: bool,
    /// The whole request and response must be done within this long; 0: no
    /// limit. Past it: 504, response flag UT.
    #[serde(default = "default_route_timeout")]
    pub timeout_ms: u64,
}

fn default_route_timeout() -> u64 {
    15_000
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedCluster {
    pub name: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexRewrite {
    pub pattern: String,
    pub substitution: String,
}

/// Answer with a redirect; what is not set is kept from the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectAction {
    #[serde(default)]
    pub https_redirect: bool,
    #[serde(default)]
    pub scheme_redirect: Option<String>,
    #[serde(default)]
    pub host_redirect: Option<String>,
    #[serde(default)]
    pub port_redirect: Option<u16>,
    /// The whole path (with its own query, if any).
    #[serde(default)]
    pub path_redirect: Option<String>,
    /// Replace the matched prefix, as `prefix_rewrite` does.
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub strip_query: bool,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_code")]
    pub response_code: u16,
}

fn default_redirect_code() -> u16 {
    301
}

/// Answer locally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponse {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
}

// === checks ===

use crate::ConfigError;
use crate::validate::Errors;

/// Largest `max_request_headers_kb` (Envoy's limit too).
pub const MAX_REQUEST_HEADERS_KB: u32 = 8192;

impl HttpConfig {
    /// The checks of an HTTP filter on its own (not whether its route
    /// configuration exists).
    pub(crate) fn check(&self, at: &dyn Fn(&str) -> String, e: &mut Errors) {
        e.check(
            !self.route_config.is_empty(),
            at("route_config"),
            "\"\"",
            "must name a route configuration (route_configs[].name)",
        );
        e.check(
            valid_value(&self.server_name),
            at("server_name"),
            &self.server_name,
            "must be a valid header value",
        );
        e.check(
            (1..=MAX_REQUEST_HEADERS_KB).contains(&self.max_request_headers_kb),
            at("max_request_headers_kb"),
            self.max_request_headers_kb,
            format!("must be between 1 and {MAX_REQUEST_HEADERS_KB}"),
        );
        e.check(
            (1..=10_000).contains(&self.max_headers_count),
            at("max_headers_count"),
            self.max_headers_count,
            "must be between 1 and 10000",
        );
        for (f, v) in [
            (
                "request_headers_timeout_ms",
                self.request_headers_timeout_ms,
            ),
            ("stream_idle_timeout_ms", self.stream_idle_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "max_connection_duration_ms",
                self.max_connection_duration_ms,
            ),
        ] {
            e.check(
                v <= MAX_TIMEOUT_MS,
                at(f),
                v,
                "must be at most 86400000 (a day); 0 turns it off",
            );
        }
        for (i, u) in self.upgrade_configs.iter().enumerate() {
            e.check(
                valid_name(&u.upgrade_type),
                at(&format!("upgrade_configs[{i}].upgrade_type")),
                &u.upgrade_type,
                "must be a protocol token such as websocket, or CONNECT",
            );
        }
        if let Some(t) = &self.tracing {
            check_percentage(t.random_sampling, &at("tracing.random_sampling"), e);
        }
        if let Some(f) = &self.fault {
            if let Some(d) = &f.delay {
                check_percentage(d.percentage, &at("fault.delay.percentage"), e);
                e.check(
                    d.fixed_delay_ms <= MAX_TIMEOUT_MS,
                    at("fault.delay.fixed_delay_ms"),
                    d.fixed_delay_ms,
                    "must be at most 86400000 (a day)",
                );
            }
            if let Some(a) = &f.abort {
                check_percentage(a.percentage, &at("fault.abort.percentage"), e);
                e.check(
                    (200..=599).contains(&a.http_status),
                    at("fault.abort.http_status"),
                    a.http_status,
                    "must be between 200 and 599",
                );
            }
        }
    }
}

const MAX_TIMEOUT_MS: u64 = 86_400_000;

fn check_percentage(p: f64, path: &str, e: &mut Errors) {
    e.check(
        (0.0..=100.0).contains(&p),
        path,
        p,
        "must be between 0 and 100",
    );
}

impl RouteConfig {
    /// Every check of a route configuration on its own: a control plane
    /// runs them before it accepts one, so a refusal names the field.
    pub fn check(&self) -> Result<(), Vec<ConfigError>> {
        let mut e = Errors(Vec::new());
        self.check_into(&|f: &str| f.to_owned(), &mut e);
        if e.0.is_empty() { Ok(()) } else { Err(e.0) }
    }

    pub(crate) fn check_into(&self, at: &dyn Fn(&str) -> String, e: &mut Errors) {
        e.check(
            !self.name.is_empty(),
            at("name"),
            "\"\"",
            "must not be empty",
        );
        check_header_ops(self.header_ops(), at, e);
        let mut vhost_names = std::collections::HashMap::new();
        let mut domains = std::collections::HashMap::new();
        for (i, v) in self.virtual_hosts.iter().enumerate() {
            let at = |f: &str| at(&format!("virtual_hosts[{i}].{f}"));
            if let Some(j) = vhost_names.insert(v.name.as_str(), i) {
                e.push(
                    at("name"),
                    &v.name,
                    format!("already used by virtual_hosts[{j}]"),
                );
            }
            e.check(!v.name.is_empty(), at("name"), "\"\"", "must not be empty");
            e.check(
                !v.domains.is_empty(),
                at("domains"),
                "[]",
                "must list at least one domain",
            );
            for (k, d) in v.domains.iter().enumerate() {
                let lower = d.to_ascii_lowercase();
                if let Some(why) = domain_problem(d) {
                    e.push(at(&format!("domains[{k}]")), d, why);
                } else if let Some(j) = domains.insert(lower, i) {
                    e.push(
                        at(&format!("domains[{k}]")),
                        d,
                        format!("already a domain of virtual_hosts[{j}] (each domain once per route configuration)"),
                    );
                }
            }
            check_header_ops(v.header_ops(), &at, e);
            for (k, r) in v.routes.iter().enumerate() {
                check_route(r, &|f: &str| at(&format!("routes[{k}].{f}")), e);
            }
        }
    }

    /// Every cluster its routes name (not those chosen by a header).
    pub fn clusters(&self) -> impl Iterator<Item = (String, &str)> + '_ {
        self.virtual_hosts.iter().enumerate().flat_map(|(i, v)| {
            v.routes.iter().enumerate().flat_map(move |(k, r)| {
                let a = r.route.as_ref();
                let one = a
                    .and_then(|a| a.cluster.as_deref())
                    .map(|c| (format!("virtual_hosts[{i}].routes[{k}].route.cluster"), c));
                let weighted = a
                    .and_then(|a| a.weighted_clusters.as_ref())
                    .into_iter()
                    .flatten()
                    .enumerate()
                    .map(move |(w, c)| {
                        (
                            format!(
                                "virtual_hosts[{i}].routes[{k}].route.weighted_clusters[{w}].name"
                            ),
                            c.name.as_str(),
                        )
                    });
                one.into_iter().chain(weighted)
            })
        })
    }
}

/// Why `d` is not a usable virtual-host domain, if it is not.
fn domain_problem(d: &str) -> Option<&'static str> {
    if d.is_empty() {
        return Some("must not be empty");
    }
    if d == "*" {
        return None;
    }
    let stars = d.matches('*').count();
    if stars > 1 || (stars == 1 && !d.starts_with('*') && !d.ends_with('*')) {
        return Some("a wildcard may only be the first or the last character, once");
    }
    if !d
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:*[]".contains(&b))
    {
        return Some("must be a host name or address, with an optional :port");
    }
    None
}

fn check_route(r: &Route, at: &dyn Fn(&str) -> String, e: &mut Errors) {
    let m = &r.matcher;
    let kinds = [
        m.prefix.is_some(),
        m.path.is_some(),
        m.safe_regex.is_some(),
        m.path_separated_prefix.is_some(),
        m.connect_matcher.is_some(),
    ];
    e.check(
        kinds.iter().filter(|&&k| k).count() == 1,
        at("match"),
        "",
        "needs exactly one of prefix, path, safe_regex, path_separated_prefix, connect_matcher",
    );
    if let Some(p) = &m.path
        && !p.starts_with('/')
    {
        e.push(at("match.path"), p, "must start with /");
    }
    if let Some(p) = &m.path_separated_prefix
        && (!p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']))
    {
        e.push(
            at("match.path_separated_prefix"),
            p,
            "must start with /, not end with /, and hold no ? or #",
        );
    }
    if let Some(re) = &m.safe_regex {
        check_regex(re, &at("match.safe_regex"), e);
    }
    for (i, h) in m.headers.iter().enumerate() {
        let at = |f: &str| at(&format!("match.headers[{i}].{f}"));
        e.check(
            valid_name(&h.name)
                || [":method", ":path", ":authority", ":scheme"].contains(&h.name.as_str()),
            at("name"),
            &h.name,
            "must be a header name, or :method, :path, :authority, :scheme",
        );
        let set = [
            h.exact.is_some(),
            h.prefix.is_some(),
            h.suffix.is_some(),
            h.contains.is_some(),
            h.safe_regex.is_some(),
            h.present.is_some(),
        ];
        e.check(
            set.iter().filter(|&&k| k).count() <= 1,
            at("name"),
            &h.name,
            "at most one of exact, prefix, suffix, contains, safe_regex, present",
        );
        if let Some(re) = &h.safe_regex {
            check_regex(re, &at("safe_regex"), e);
        }
    }
    for (i, q) in m.query_parameters.iter().enumerate() {
        let at = |f: &str| at(&format!("match.query_parameters[{i}].{f}"));
        e.check(!q.name.is_empty(), at("name"), "\"\"", "must not be empty");
        let set = [
            q.exact.is_some(),
            q.prefix.is_some(),
            q.suffix.is_some(),
            q.contains.is_some(),
            q.safe_regex.is_some(),
            q.present_match.is_some(),
        ];
        e.check(
            set.iter().filter(|&&k| k).count() <= 1,
            at("name"),
            &q.name,
            "at most one of exact, prefix, suffix, contains, safe_regex, present_match",
        );
        if let Some(re) = &q.safe_regex {
            check_regex(re, &at("safe_regex"), e);
        }
    }
    let actions = [
        r.route.is_some(),
        r.redirect.is_some(),
        r.direct_response.is_some(),
    ];
    e.check(
        actions.iter().filter(|&&k| k).count() == 1,
        at("route"),
        "",
        "needs exactly one of route, redirect, direct_response",
    );
    if let Some(a) = &r.route {
        check_action(a, at, e);
    }
    if let Some(d) = &r.redirect {
        e.check(
            [301, 302, 303, 307, 308].contains(&d.response_code),
            at("redirect.response_code"),
            d.response_code,
            "must be 301, 302, 303, 307 or 308",
        );
        e.check(
            !(d.path_redirect.is_some() && d.prefix_rewrite.is_some()),
            at("redirect.prefix_rewrite"),
            "",
            "give path_redirect or prefix_rewrite, not both",
        );
        e.check(
            !(d.https_redirect && d.scheme_redirect.is_some()),
            at("redirect.scheme_redirect"),
            "",
            "give https_redirect or scheme_redirect, not both",
        );
        for (f, v) in [
            ("host_redirect", &d.host_redirect),
            ("path_redirect", &d.path_redirect),
            ("prefix_rewrite", &d.prefix_rewrite),
            ("scheme_redirect", &d.scheme_redirect),
        ] {
            if let Some(v) = v
                && !valid_value(v)
            {
                e.push(
                    at(&format!("redirect.{f}")),
                    v,
                    "must be a valid header value",
                );
            }
        }
    }
    if let Some(d) = &r.direct_response {
        e.check(
            (200..=599).contains(&d.status),
            at("direct_response.status"),
            d.status,
            "must be between 200 and 599",
        );
        if let Some(b) = &d.body {
            e.check(
                b.len() <= 4096,
                at("direct_response.body"),
                b.len(),
                "at most 4096 bytes (Envoy's max_direct_response_body_size_bytes)",
            );
        }
    }
    check_header_ops(r.header_ops(), at, e);
}

fn check_action(a: &RouteAction, at: &dyn Fn(&str) -> String, e: &mut Errors) {
    let targets = [
        a.cluster.is_some(),
        a.weighted_clusters.is_some(),
        a.cluster_header.is_some(),
    ];
    e.check(
        targets.iter().filter(|&&k| k).count() == 1,
        at("route"),
        "",
        "needs exactly one of cluster, weighted_clusters, cluster_header",
    );
    if let Some(c) = &a.cluster {
        e.check(
            !c.is_empty(),
            at("route.cluster"),
            "\"\"",
            "must not be empty",
        );
    }
    if let Some(w) = &a.weighted_clusters {
        e.check(
            !w.is_empty(),
            at("route.weighted_clusters"),
            "[]",
            "must list at least one cluster",
        );
        let mut total = 0u64;
        for (i, c) in w.iter().enumerate() {
            e.check(
                !c.name.is_empty(),
                at(&format!("route.weighted_clusters[{i}].name")),
                "\"\"",
                "must not be empty",
            );
            total += u64::from(c.weight);
        }
        e.check(
            w.is_empty() || (1..=u64::from(u32::MAX)).contains(&total),
            at("route.weighted_clusters"),
            total,
            "the weights must add up to between 1 and 4294967295",
        );
    }
    if let Some(h) = &a.cluster_header {
        e.check(
            valid_name(h),
            at("route.cluster_header"),
            h,
            "must be a header name",
        );
    }
    e.check(
        !(a.prefix_rewrite.is_some() && a.regex_rewrite.is_some()),
        at("route.regex_rewrite"),
        "",
        "give prefix_rewrite or regex_rewrite, not both",
    );
    if let Some(p) = &a.prefix_rewrite
        && !valid_value(p)
    {
        e.push(at("route.prefix_rewrite"), p, "must be a valid path");
    }
    if let Some(r) = &a.regex_rewrite {
        check_regex(&r.pattern, &at("route.regex_rewrite.pattern"), e);
    }
    e.check(
        !(a.host_rewrite_literal.is_some() && a.auto_host_rewrite),
        at("route.auto_host_rewrite"),
        "",
        "give host_rewrite_literal or auto_host_rewrite, not both",
    );
    if let Some(h) = &a.host_rewrite_literal
        && (h.is_empty() || !valid_value(h))
    {
        e.push(at("route.host_rewrite_literal"), h, "must be a host name");
    }
    e.check(
        a.timeout_ms <= MAX_TIMEOUT_MS,
        at("route.timeout_ms"),
        a.timeout_ms,
        "must be at most 86400000 (a day); 0 turns it off",
    );
}

fn check_header_ops(ops: HeaderOps<'_>, at: &dyn Fn(&str) -> String, e: &mut Errors) {
    for (f, add) in [
        ("request_headers_to_add", ops.request_headers_to_add),
        ("response_headers_to_add", ops.response_headers_to_add),
    ] {
        for (i, h) in add.iter().enumerate() {
            let at = |g: &str| at(&format!("{f}[{i}].{g}"));
            check_settable(&h.key, &at("key"), e);
            e.check(
                valid_value(&h.value),
                at("value"),
                &h.value,
                "must be a valid header value (no CR, LF or NUL)",
            );
        }
    }
    for (f, names) in [
        ("request_headers_to_remove", ops.request_headers_to_remove),
        ("response_headers_to_remove", ops.response_headers_to_remove),
    ] {
        for (i, n) in names.iter().enumerate() {
            check_settable(n, &at(&format!("{f}[{i}]")), e);
        }
    }
}

/// Envoy refuses to let a route configuration touch pseudo-headers and
/// `host`; so do we.
fn check_settable(name: &str, path: &str, e: &mut Errors) {
    if !valid_name(name) {
        e.push(path, name, "must be a header name (RFC 9110 token)");
    } else if name.eq_ignore_ascii_case("host") {
        e.push(
            path,
            name,
            "host cannot be set or removed here (use host_rewrite_literal)",
        );
    }
}

fn check_regex(re: &str, path: &str, e: &mut Errors) {
    if let Err(why) = regex::Regex::new(re) {
        let why = why.to_string();
        let last = why.lines().last().unwrap_or("invalid").trim().to_owned();
        e.push(path, re, format!("not a valid regex: {last}"));
    }
}

/// An RFC 9110 token: what a header name may be.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value we may send: visible characters, spaces and tabs.
pub fn valid_value(s: &str) -> bool {
    s.bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80)
}

#[cfg(test)]
mod tests {
    use crate::{Config, Filter};

    const PORTS: &str = "ports: [{name: a, device: net_null0, address: 10.0.0.1/24}]\n";

    fn errors(yaml: &str) -> Vec<String> {
        match Config::from_yaml(&format!("{PORTS}{yaml}")) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn an_http_listener_names_a_route_configuration() {
        let cfg = Config::from_yaml(&format!(
            "{PORTS}
listeners:
  - name: web
    address: 0.0.0.0:80
    filter_chains: [{{http: {{route_config: local, normalize_path: true}}}}]
  - {{name: old, address: 0.0.0.0:81, tcp_proxy: {{cluster: b}}}}
clusters: [{{name: b}}, {{name: c}}]
route_configs:
  - name: local
    virtual_hosts:
      - name: all
        domains: ['*']
        routes:
          - match: {{prefix: /api, headers: [{{name: x-canary, exact: '1'}}]}}
            route: {{weighted_clusters: [{{name: b, weight: 1}}, {{name: c, weight: 3}}]}}
          - match: {{prefix: /}}
            route: {{cluster: b, prefix_rewrite: /v1/}}
"
        ))
        .unwrap();
        let Some(Filter::Http(h)) = cfg.listeners[0].filter() else {
            panic!("{:?}", cfg.listeners[0]);
        };
        assert_eq!(h.route_config, "local");
        assert_eq!(h.max_request_headers_kb, 60);
        assert_eq!(h.stream_idle_timeout_ms, 300_000);
        assert!(h.normalize_path && !h.merge_slashes);
        // The older form is one chain with that filter, and saved as such.
        assert!(matches!(cfg.listeners[1].filter(), Some(Filter::TcpProxy(t)) if t.cluster == "b"));
        let saved = serde_json::to_string(&cfg.listeners[1]).unwrap();
        assert!(saved.contains("filter_chains"), "{saved}");
        let back: crate::ListenerConfig = serde_json::from_str(&saved).unwrap();
        assert_eq!(back, cfg.listeners[1]);
        let r = &cfg.route_configs[0].virtual_hosts[0].routes[1];
        assert_eq!(r.route.as_ref().unwrap().timeout_ms, 15_000);
    }

    #[test]
    fn both_listener_forms_at_once_are_refused() {
        let e = errors(
            "listeners: [{name: l, address: 0.0.0.0:80, tcp_proxy: {cluster: c}, filter_chains: [{tcp_proxy: {cluster: c}}]}]\nclusters: [{name: c}]\n",
        );
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("not both"), "{e:?}");
    }

    #[test]
    fn route_configurations_are_checked_field_by_field() {
        let e = errors(
            r#"
listeners:
  - {name: a, address: 0.0.0.0:80, filter_chains: [{http: {route_config: nope, max_request_headers_kb: 0}}]}
  - {name: b, address: 0.0.0.0:81, filter_chains: [{}]}
clusters: [{name: c}]
route_configs:
  - name: r
    request_headers_to_add: [{key: host, value: x}]
    virtual_hosts:
      - name: v
        domains: ['*.a.com', 'a.*.com']
        routes:
          - match: {prefix: /, path: /x}
            route: {cluster: gone}
          - match: {safe_regex: '(', headers: [{name: 'bad name', exact: x}]}
            direct_response: {status: 99}
          - match: {path_separated_prefix: /api/}
            redirect: {response_code: 200}
          - match: {prefix: /}
            route: {weighted_clusters: [{name: c, weight: 0}], prefix_rewrite: /a, regex_rewrite: {pattern: a, substitution: b}}
      - name: v
        domains: ['*.A.com']
"#,
        );
        let want = [
            "listeners[0].filter_chains[0].http.max_request_headers_kb = 0: must be between 1 and 8192",
            "listeners[0].filter_chains[0].http.route_config = nope: no route configuration of that name (route_configs[].name)",
            "listeners[1].filter_chains[0]: needs exactly one of tcp_proxy and http",
            "route_configs[0].request_headers_to_add[0].key = host: host cannot be set or removed here (use host_rewrite_literal)",
            "route_configs[0].virtual_hosts[0].domains[1] = a.*.com: a wildcard may only be the first or the last character, once",
            "route_configs[0].virtual_hosts[0].routes[0].match: needs exactly one of prefix, path, safe_regex, path_separated_prefix, connect_matcher",
            "route_configs[0].virtual_hosts[0].routes[1].match.safe_regex = (: not a valid regex: error: unclosed group",
            "route_configs[0].virtual_hosts[0].routes[1].match.headers[0].name = bad name: must be a header name, or :method, :path, :authority, :scheme",
            "route_configs[0].virtual_hosts[0].routes[1].direct_response.status = 99: must be between 200 and 599",
            "route_configs[0].virtual_hosts[0].routes[2].match.path_separated_prefix = /api/: must start with /, not end with /, and hold no ? or #",
            "route_configs[0].virtual_hosts[0].routes[2].redirect.response_code = 200: must be 301, 302, 303, 307 or 308",
            "route_configs[0].virtual_hosts[0].routes[3].route.weighted_clusters = 0: the weights must add up to between 1 and 4294967295",
            "route_configs[0].virtual_hosts[0].routes[3].route.regex_rewrite: give prefix_rewrite or regex_rewrite, not both",
            "route_configs[0].virtual_hosts[1].name = v: already used by virtual_hosts[0]",
            "route_configs[0].virtual_hosts[1].domains[0] = *.A.com: already a domain of virtual_hosts[0] (each domain once per route configuration)",
            "route_configs[0].virtual_hosts[0].routes[0].route.cluster = gone: no cluster of that name (clusters[].name)",
        ];
        assert_eq!(e, want);
    }
}
