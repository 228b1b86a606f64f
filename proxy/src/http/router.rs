//! Routing as Envoy's RouteConfiguration defines it, compiled once per
//! configuration (on the control thread; regexes included) and matched per
//! request without allocating beyond the lowercased authority.
//!
//! - A virtual host is chosen by the request's authority (the whole
//!   `host` value, port included, in lowercase): an exact domain first,
//!   then the longest `*suffix`, then the longest `prefix*`, then `*`. A
//!   wildcard matches at least one character.
//! - Its routes are tried in order; the first whose path matcher, header
//!   matchers and query parameter matchers all fit is taken.

use std::time::Duration;

use bytes::Bytes;
use dataplane_config::http::{
    AppendAction, DirectResponse, HeaderMatcher, HeaderValueOption, QueryParameterMatcher,
    RedirectAction, RouteConfig,
};
use hashbrown::HashMap;
use regex::Regex;

use super::codec::Header;

/// One route configuration, ready to match.
#[derive(Debug)]
pub struct RouteTable {
    pub name: String,
    vhosts: Vec<VirtualHost>,
    exact: HashMap<String, usize>,
    /// `*suffix` without its star, longest first.
    suffixes: Vec<(String, usize)>,
    /// `prefix*` without its star, longest first.
    prefixes: Vec<(String, usize)>,
    any: Option<usize>,
    pub headers: HeaderActions,
}

#[derive(Debug)]
pub struct VirtualHost {
    pub name: String,
    pub routes: Vec<Route>,
    pub headers: HeaderActions,
}

#[derive(Debug)]
pub struct Route {
    pub name: String,
    path: PathMatch,
    case_sensitive: bool,
    header_matchers: Vec<HeaderMatch>,
    query_matchers: Vec<QueryMatch>,
    pub action: Action,
    pub headers: HeaderActions,
}

#[derive(Debug)]
enum PathMatch {
    Prefix(String),
    Exact(String),
    Regex(Regex),
    Separated(String),
    /// CONNECT requests, and only they.
    Connect,
}

#[derive(Debug)]
enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    Regex(Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

#[derive(Debug)]
struct HeaderMatch {
    name: String,
    m: StrMatch,
    ignore_case: bool,
    invert: bool,
}

#[derive(Debug)]
struct QueryMatch {
    name: String,
    m: StrMatch,
    ignore_case: bool,
}

#[derive(Debug)]
pub enum Action {
    Route(RouteAction),
    Redirect(RedirectAction),
    Direct { status: u16, body: Bytes },
}

#[derive(Debug)]
pub struct RouteAction {
    pub target: Target,
    prefix_rewrite: Option<String>,
    regex_rewrite: Option<(Regex, String)>,
    pub host_rewrite: Option<Bytes>,
    pub auto_host_rewrite: bool,
    /// `None`: no limit.
    pub timeout: Option<Duration>,
}

#[derive(Debug)]
pub enum Target {
    Cluster(String),
    Weighted {
        clusters: Vec<(String, u32)>,
        total: u64,
    },
    Header(String),
}

/// Header additions and removals at one level.
#[derive(Debug, Default)]
pub struct HeaderActions {
    pub request_add: Vec<(Header, AppendAction)>,
    pub request_remove: Vec<String>,
    pub response_add: Vec<(Header, AppendAction)>,
    pub response_remove: Vec<String>,
}

impl HeaderActions {
    fn new(
        req_add: &[HeaderValueOption],
        req_rm: &[String],
        resp_add: &[HeaderValueOption],
        resp_rm: &[String],
    ) -> HeaderActions {
        let add = |v: &[HeaderValueOption]| {
            v.iter()
                .map(|h| {
                    (
                        Header {
                            name: Bytes::from(h.key.to_ascii_lowercase()),
                            value: Bytes::from(h.value.clone()),
                        },
                        h.append_action,
                    )
                })
                .collect()
        };
        let rm = |v: &[String]| v.iter().map(|n| n.to_ascii_lowercase()).collect();
        HeaderActions {
            request_add: add(req_add),
            request_remove: rm(req_rm),
            response_add: add(resp_add),
            response_remove: rm(resp_rm),
        }
    }

    /// Apply to request (`request`) or response headers: removals, then
    /// additions.
    pub fn apply(&self, hs: &mut Vec<Header>, request: bool) {
        let (add, rm) = if request {
            (&self.request_add, &self.request_remove)
        } else {
            (&self.response_add, &self.response_remove)
        };
        for n in rm {
            hs.retain(|h| !h.is(n));
        }
        for (h, how) in add {
            let present = hs
                .iter()
                .any(|x| x.is(std::str::from_utf8(&h.name).unwrap_or("")));
            match how {
                AppendAction::AppendIfExistsOrAdd => hs.push(h.clone()),
                AppendAction::AddIfAbsent => {
                    if !present {
                        hs.push(h.clone());
                    }
                }
                AppendAction::OverwriteIfExistsOrAdd | AppendAction::OverwriteIfExists => {
                    if present || *how == AppendAction::OverwriteIfExistsOrAdd {
                        hs.retain(|x| !x.name.eq_ignore_ascii_case(&h.name));
                        hs.push(h.clone());
                    }
                }
            }
        }
    }
}

fn regex(re: &str) -> Regex {
    // Checked when the configuration was accepted; a regex that still does
    // not compile matches nothing rather than everything.
    Regex::new(&format!("^(?:{re})$")).unwrap_or_else(|_| Regex::new("[^\\s\\S]").expect("valid"))
}

fn str_match(
    exact: &Option<String>,
    prefix: &Option<String>,
    suffix: &Option<String>,
    contains: &Option<String>,
    re: &Option<String>,
    present: Option<bool>,
    ignore_case: bool,
) -> StrMatch {
    let cased = |s: &String| {
        if ignore_case {
            s.to_ascii_lowercase()
        } else {
            s.clone()
        }
    };
    if let Some(s) = exact {
        StrMatch::Exact(cased(s))
    } else if let Some(s) = prefix {
        StrMatch::Prefix(cased(s))
    } else if let Some(s) = suffix {
        StrMatch::Suffix(cased(s))
    } else if let Some(s) = contains {
        StrMatch::Contains(cased(s))
    } else if let Some(r) = re {
        StrMatch::Regex(regex(r))
    } else {
        StrMatch::Present(present.unwrap_or(true))
    }
}

impl StrMatch {
    /// Whether `v` (`None`: absent) matches.
    fn matches(&self, v: Option<&[u8]>, ignore_case: bool) -> bool {
        let Some(v) = v else {
            return matches!(self, StrMatch::Present(false));
        };
        let v = String::from_utf8_lossy(v);
        let lower;
        let s: &str = if ignore_case && !matches!(self, StrMatch::Regex(_)) {
            lower = v.to_ascii_lowercase();
            &lower
        } else {
            &v
        };
        match self {
            StrMatch::Exact(x) => s == x,
            StrMatch::Prefix(x) => s.starts_with(x.as_str()),
            StrMatch::Suffix(x) => s.ends_with(x.as_str()),
            StrMatch::Contains(x) => s.contains(x.as_str()),
            StrMatch::Regex(r) => r.is_match(s),
            StrMatch::Present(p) => *p,
        }
    }
}

impl RouteTable {
    /// Compile a checked route configuration.
    pub fn new(cfg: &RouteConfig) -> RouteTable {
        let mut t = RouteTable {
            name: cfg.name.clone(),
            vhosts: Vec::new(),
            exact: HashMap::new(),
            suffixes: Vec::new(),
            prefixes: Vec::new(),
            any: None,
            headers: HeaderActions::new(
                &cfg.request_headers_to_add,
                &cfg.request_headers_to_remove,
                &cfg.response_headers_to_add,
                &cfg.response_headers_to_remove,
            ),
        };
        for (i, v) in cfg.virtual_hosts.iter().enumerate() {
            for d in &v.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    t.any.get_or_insert(i);
                } else if let Some(s) = d.strip_prefix('*') {
                    t.suffixes.push((s.to_owned(), i));
                } else if let Some(p) = d.strip_suffix('*') {
                    t.prefixes.push((p.to_owned(), i));
                } else {
                    t.exact.entry(d).or_insert(i);
                }
            }
            t.vhosts.push(VirtualHost {
                name: v.name.clone(),
                routes: v.routes.iter().map(compile_route).collect(),
                headers: HeaderActions::new(
                    &v.request_headers_to_add,
                    &v.request_headers_to_remove,
                    &v.response_headers_to_add,
                    &v.response_headers_to_remove,
                ),
            });
        }
        t.suffixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t.prefixes.sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        t
    }

    /// The virtual host for `authority` (the `host` header's value).
    pub fn virtual_host(&self, authority: &[u8]) -> Option<&VirtualHost> {
        self.virtual_host_index(authority).map(|i| &self.vhosts[i])
    }

    fn virtual_host_index(&self, authority: &[u8]) -> Option<usize> {
        let host = String::from_utf8_lossy(authority).to_ascii_lowercase();
        let i = self
            .exact
            .get(host.as_str())
            .copied()
            .or_else(|| {
                self.suffixes
                    .iter()
                    .find(|(s, _)| host.len() > s.len() && host.ends_with(s.as_str()))
                    .map(|&(_, i)| i)
            })
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(p, _)| host.len() > p.len() && host.starts_with(p.as_str()))
                    .map(|&(_, i)| i)
            })
            .or(self.any)?;
        (i < self.vhosts.len()).then_some(i)
    }

    /// The virtual host and route for a request, if any.
    pub fn route(&self, r: &Request<'_>) -> Option<(&VirtualHost, &Route)> {
        self.route_index(r).map(|(v, i)| self.at(v, i))
    }

    /// The indices of the virtual host and route for a request (what a
    /// stream keeps to find them again, with [`RouteTable::at`]).
    pub fn route_index(&self, r: &Request<'_>) -> Option<(usize, usize)> {
        let vi = self.virtual_host_index(r.authority)?;
        let ri = self.vhosts[vi].routes.iter().position(|rt| rt.matches(r))?;
        Some((vi, ri))
    }

    /// The virtual host and route at indices from [`RouteTable::route_index`].
    pub fn at(&self, vi: usize, ri: usize) -> (&VirtualHost, &Route) {
        let v = &self.vhosts[vi];
        (v, &v.routes[ri])
    }
}

/// What routing looks at in a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    pub authority: &'a [u8],
    /// The path with its query.
    pub path: &'a [u8],
    pub scheme: &'a [u8],
    pub headers: &'a [Header],
}

impl Request<'_> {
    /// The path without its query.
    pub fn path_only(&self) -> &[u8] {
        match self.path.iter().position(|b| *b == b'?') {
            Some(q) => &self.path[..q],
            None => self.path,
        }
    }

    /// The values of header `name` joined with `,` (as Envoy matches them),
    /// pseudo-headers included; `None` if absent.
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, [u8]>> {
        use std::borrow::Cow;
        match name {
            ":method" => return Some(Cow::Borrowed(self.method)),
            ":authority" | "host" => return Some(Cow::Borrowed(self.authority)),
            ":path" => return Some(Cow::Borrowed(self.path)),
            ":scheme" => return Some(Cow::Borrowed(self.scheme)),
            _ => {}
        }
        let mut it = self.headers.iter().filter(|h| h.is(name));
        let first = it.next()?;
        match it.next() {
            None => Some(Cow::Borrowed(&first.value[..])),
            Some(second) => {
                let mut v = first.value.to_vec();
                for h in std::iter::once(second).chain(it) {
                    v.push(b',');
                    v.extend_from_slice(&h.value);
                }
                Some(Cow::Owned(v))
            }
        }
    }

    /// The first value of query parameter `name`, as written.
    fn query(&self, name: &str) -> Option<&[u8]> {
        let q = self.path.iter().position(|b| *b == b'?')?;
        let q = &self.path[q + 1..];
        let q = match q.iter().position(|b| *b == b'#') {
            Some(f) => &q[..f],
            None => q,
        };
        q.split(|b| *b == b'&').find_map(|kv| {
            let (k, v) = match kv.iter().position(|b| *b == b'=') {
                Some(i) => (&kv[..i], &kv[i + 1..]),
                None => (kv, &kv[kv.len()..]),
            };
            (k == name.as_bytes()).then_some(v)
        })
    }
}

fn compile_route(r: &dataplane_config::http::Route) -> Route {
    let m = &r.matcher;
    let cs = m.case_sensitive;
    let cased = |s: &String| {
        if cs {
            s.clone()
        } else {
            s.to_ascii_lowercase()
        }
    };
    let path = if let Some(p) = &m.prefix {
        PathMatch::Prefix(cased(p))
    } else if let Some(p) = &m.path {
        PathMatch::Exact(cased(p))
    } else if let Some(p) = &m.path_separated_prefix {
        PathMatch::Separated(cased(p))
    } else if m.connect_matcher.is_some() {
        PathMatch::Connect
    } else {
        let re = m.safe_regex.as_deref().unwrap_or("[^\\s\\S]");
        PathMatch::Regex(regex(re))
    };
    let header_matchers = m
        .headers
        .iter()
        .map(|h: &HeaderMatcher| HeaderMatch {
            name: h.name.to_ascii_lowercase(),
            m: str_match(
                &h.exact,
                &h.prefix,
                &h.suffix,
                &h.contains,
                &h.safe_regex,
                h.present,
                h.ignore_case,
            ),
            ignore_case: h.ignore_case,
            invert: h.invert_match,
        })
        .collect();
    let query_matchers = m
        .query_parameters
        .iter()
        .map(|q: &QueryParameterMatcher| QueryMatch {
            name: q.name.clone(),
            m: str_match(
                &q.exact,
                &q.prefix,
                &q.suffix,
                &q.contains,
                &q.safe_regex,
                q.present_match,
                q.ignore_case,
            ),
            ignore_case: q.ignore_case,
        })
        .collect();
    let action = if let Some(a) = &r.route {
        let target = if let Some(c) = &a.cluster {
            Target::Cluster(c.clone())
        } else if let Some(w) = &a.weighted_clusters {
            Target::Weighted {
                clusters: w.iter().map(|c| (c.name.clone(), c.weight)).collect(),
                total: w.iter().map(|c| u64::from(c.weight)).sum(),
            }
        } else {
            Target::Header(
                a.cluster_header
                    .clone()
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            )
        };
        Action::Route(RouteAction {
            target,
            prefix_rewrite: a.prefix_rewrite.clone(),
            regex_rewrite: a.regex_rewrite.as_ref().map(|r| {
                (
                    Regex::new(&r.pattern).unwrap_or_else(|_| regex("")),
                    substitution(&r.substitution),
                )
            }),
            host_rewrite: a.host_rewrite_literal.clone().map(Bytes::from),
            auto_host_rewrite: a.auto_host_rewrite,
            timeout: (a.timeout_ms > 0).then(|| Duration::from_millis(a.timeout_ms)),
        })
    } else if let Some(d) = &r.redirect {
        Action::Redirect(d.clone())
    } else {
        let d: &DirectResponse = r.direct_response.as_ref().expect("checked: one action");
        Action::Direct {
            status: d.status,
            body: Bytes::from(d.body.clone().unwrap_or_default()),
        }
    };
    Route {
        name: r.name.clone(),
        path,
        case_sensitive: cs,
        header_matchers,
        query_matchers,
        action,
        headers: HeaderActions::new(
            &r.request_headers_to_add,
            &r.request_headers_to_remove,
            &r.response_headers_to_add,
            &r.response_headers_to_remove,
        ),
    }
}

/// Envoy's (RE2's) `\1` group references, in the `regex` crate's `${1}`.
fn substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl Route {
    fn matches(&self, r: &Request<'_>) -> bool {
        // A CONNECT request has no path: only a connect matcher takes it.
        let connect = r.method == b"CONNECT";
        if connect != matches!(self.path, PathMatch::Connect) {
            return false;
        }
        let ok = match &self.path {
            PathMatch::Connect => true,
            PathMatch::Prefix(p) => starts_with(r.path, p, self.case_sensitive),
            PathMatch::Exact(p) => eq(r.path_only(), p, self.case_sensitive),
            PathMatch::Separated(p) => {
                let path = r.path_only();
                starts_with(path, p, self.case_sensitive)
                    && (path.len() == p.len() || path[p.len()] == b'/')
            }
            PathMatch::Regex(re) => re.is_match(&String::from_utf8_lossy(r.path_only())),
        };
        ok && self.header_matchers.iter().all(|h| {
            let v = r.header(&h.name);
            h.m.matches(v.as_deref(), h.ignore_case) != h.invert
        }) && self
            .query_matchers
            .iter()
            .all(|q| q.m.matches(r.query(&q.name), q.ignore_case))
    }

    /// The path to send upstream, if this route rewrites it.
    pub fn rewrite_path(&self, path: &[u8]) -> Option<Vec<u8>> {
        let Action::Route(a) = &self.action else {
            return None;
        };
        if let Some(new) = &a.prefix_rewrite {
            let cut = match &self.path {
                PathMatch::Prefix(p) | PathMatch::Separated(p) => p.len(),
                PathMatch::Exact(p) => p.len(),
                PathMatch::Regex(_) | PathMatch::Connect => return None,
            };
            let mut out = new.as_bytes().to_vec();
            out.extend_from_slice(&path[cut.min(path.len())..]);
            return Some(out);
        }
        if let Some((re, sub)) = &a.regex_rewrite {
            let q = path.iter().position(|b| *b == b'?').unwrap_or(path.len());
            let p = String::from_utf8_lossy(&path[..q]);
            let mut out = re.replace_all(&p, sub.as_str()).into_owned().into_bytes();
            out.extend_from_slice(&path[q..]);
            return Some(out);
        }
        None
    }

    /// The `location` of a redirect route for this request.
    pub fn redirect_location(&self, d: &RedirectAction, r: &Request<'_>) -> String {
        let scheme = if d.https_redirect {
            "https".to_owned()
        } else {
            d.scheme_redirect
                .clone()
                .unwrap_or_else(|| String::from_utf8_lossy(r.scheme).into_owned())
        };
        let authority = String::from_utf8_lossy(r.authority);
        let (host, port) = split_port(&authority);
        let mut host = d.host_redirect.clone().unwrap_or_else(|| host.to_owned());
        match d.port_redirect {
            Some(p) => host = format!("{}:{p}", split_port(&host).0),
            None => {
                // A scheme change drops the old scheme's default port, as
                // Envoy does; another port stays.
                if d.host_redirect.is_none()
                    && let Some(p) = port
                    && !((scheme == "https" && p == "80") || (scheme == "http" && p == "443"))
                {
                    host = format!("{host}:{p}");
                }
            }
        }
        let path_q = String::from_utf8_lossy(r.path);
        let mut path = if let Some(p) = &d.path_redirect {
            // Its own query replaces the request's; without one the
            // request's stays.
            match (p.contains('?'), path_q.find('?')) {
                (false, Some(q)) => format!("{p}{}", &path_q[q..]),
                _ => p.clone(),
            }
        } else if let Some(new) = &d.prefix_rewrite {
            let cut = match &self.path {
                PathMatch::Prefix(p) | PathMatch::Separated(p) | PathMatch::Exact(p) => p.len(),
                PathMatch::Regex(_) | PathMatch::Connect => 0,
            };
            format!("{new}{}", path_q.get(cut..).unwrap_or(""))
        } else {
            path_q.into_owned()
        };
        if d.strip_query
            && let Some(q) = path.find('?')
        {
            path.truncate(q);
        }
        format!("{scheme}://{host}{path}")
    }
}

/// `host` and its port, if it has one (`[v6]:port` too).
fn split_port(a: &str) -> (&str, Option<&str>) {
    match a.rfind(':') {
        Some(i) if !a[i..].contains(']') && a[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&a[..i], Some(&a[i + 1..]))
        }
        _ => (a, None),
    }
}

fn starts_with(v: &[u8], p: &str, case_sensitive: bool) -> bool {
    v.len() >= p.len() && eq(&v[..p.len()], p, case_sensitive)
}

fn eq(v: &[u8], p: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        v == p.as_bytes()
    } else {
        v.eq_ignore_ascii_case(p.as_bytes())
    }
}

impl Target {
    /// The cluster for a request: `rand` picks among weighted clusters;
    /// `None` if a cluster header is missing.
    pub fn cluster<'a>(
        &'a self,
        headers: &'a [Header],
        rand: u64,
    ) -> Option<std::borrow::Cow<'a, str>> {
        use std::borrow::Cow;
        match self {
            Target::Cluster(c) => Some(Cow::Borrowed(c)),
            Target::Weighted { clusters, total } => {
                let mut x = rand % total.max(&1);
                for (c, w) in clusters {
                    if x < u64::from(*w) {
                        return Some(Cow::Borrowed(c));
                    }
                    x -= u64::from(*w);
                }
                clusters.last().map(|(c, _)| Cow::Borrowed(c.as_str()))
            }
            Target::Header(h) => {
                let v = headers.iter().find(|x| x.is(h))?;
                std::str::from_utf8(&v.value)
                    .ok()
                    .map(|s| Cow::Owned(s.to_owned()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(yaml: &str) -> RouteTable {
        let cfg: RouteConfig = serde_saphyr::from_str(yaml).unwrap();
        cfg.check().unwrap();
        RouteTable::new(&cfg)
    }

    fn req<'a>(host: &'a str, path: &'a str, headers: &'a [Header]) -> Request<'a> {
        Request {
            method: b"GET",
            authority: host.as_bytes(),
            path: path.as_bytes(),
            scheme: b"http",
            headers,
        }
    }

    #[test]
    fn virtual_hosts_follow_envoys_precedence() {
        let t = table(
            "name: r
virtual_hosts:
  - {name: any, domains: ['*']}
  - {name: exact, domains: [api.example.com, 'api.example.com:8080']}
  - {name: suffix, domains: ['*.example.com']}
  - {name: longer-suffix, domains: ['*.api.example.com']}
  - {name: prefix, domains: ['api.*']}
",
        );
        let name = |h: &str| t.virtual_host(h.as_bytes()).map(|v| v.name.as_str());
        assert_eq!(name("API.example.com"), Some("exact"));
        assert_eq!(name("api.example.com:8080"), Some("exact"));
        assert_eq!(name("v1.api.example.com"), Some("longer-suffix"));
        assert_eq!(name("www.example.com"), Some("suffix"));
        // Suffix before prefix; and the port is part of the authority.
        assert_eq!(name("api.example.com:9090"), Some("prefix"));
        assert_eq!(name("api.other"), Some("prefix"));
        // A wildcard matches at least one character.
        assert_eq!(name(".example.com"), Some("any"));
        assert_eq!(name("other"), Some("any"));
    }

    #[test]
    fn routes_match_in_order_on_path_headers_and_query() {
        let t = table(
            r#"name: r
virtual_hosts:
  - name: v
    domains: ['*']
    routes:
      - match: {path_separated_prefix: /api, headers: [{name: x-v, exact: '2'}]}
        route: {cluster: v2, prefix_rewrite: /v2}
      - match: {path_separated_prefix: /api}
        route: {cluster: v1}
      - match: {prefix: /Case, case_sensitive: false}
        route: {cluster: case}
      - match: {path: /exact, query_parameters: [{name: q, exact: 'a b'}]}
        route: {cluster: query}
      - match: {safe_regex: '/re/[0-9]+', headers: [{name: ':method', exact: GET}, {name: x-no, present: true, invert_match: true}]}
        route: {cluster: re, regex_rewrite: {pattern: '/re/([0-9]+)', substitution: '/n/\1'}}
      - match: {prefix: /}
        direct_response: {status: 404}
"#,
        );
        let hdr = [Header::new("x-v", "2")];
        let pick = |path: &str, hs: &[Header]| {
            let r = req("h", path, hs);
            t.route(&r).map(|(_, rt)| match &rt.action {
                Action::Route(a) => match &a.target {
                    Target::Cluster(c) => c.clone(),
                    _ => unreachable!(),
                },
                _ => "direct".into(),
            })
        };
        assert_eq!(pick("/api/x", &hdr).as_deref(), Some("v2"));
        assert_eq!(pick("/api", &[]).as_deref(), Some("v1"));
        assert_eq!(pick("/api?x", &[]).as_deref(), Some("v1"));
        assert_eq!(pick("/apix", &[]).as_deref(), Some("direct"));
        assert_eq!(pick("/cASE/y", &[]).as_deref(), Some("case"));
        assert_eq!(pick("/exact?q=a b", &[]).as_deref(), Some("query"));
        assert_eq!(pick("/exact?q=ab", &[]).as_deref(), Some("direct"));
        assert_eq!(pick("/re/42", &[]).as_deref(), Some("re"));
        assert_eq!(pick("/re/42x", &[]).as_deref(), Some("direct"));
        assert_eq!(
            pick("/re/42", &[Header::new("x-no", "")]).as_deref(),
            Some("direct")
        );

        let r = req("h", "/api/x?y=1", &hdr);
        let (_, rt) = t.route(&r).unwrap();
        assert_eq!(rt.rewrite_path(r.path).unwrap(), b"/v2/x?y=1");
        let r = req("h", "/re/42?z", &[]);
        let (_, rt) = t.route(&r).unwrap();
        assert_eq!(rt.rewrite_path(r.path).unwrap(), b"/n/42?z");
    }

    #[test]
    fn weighted_clusters_split_by_weight() {
        let t = Target::Weighted {
            clusters: vec![("a".into(), 1), ("b".into(), 3)],
            total: 4,
        };
        let mut n = [0; 2];
        for i in 0..4000u64 {
            let c = t
                .cluster(&[], i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 7)
                .unwrap();
            n[usize::from(c == "b")] += 1;
        }
        assert!((900..1100).contains(&n[0]), "{n:?}");
    }

    #[test]
    fn redirects_keep_what_they_do_not_change() {
        let d: RedirectAction =
            serde_saphyr::from_str("{https_redirect: true, strip_query: true}").unwrap();
        let t = table(
            "name: r\nvirtual_hosts: [{name: v, domains: ['*'], routes: [{match: {prefix: /old}, redirect: {prefix_rewrite: /new}}]}]",
        );
        let r = req("a.com:80", "/old/x?q", &[]);
        let (_, rt) = t.route(&r).unwrap();
        assert_eq!(rt.redirect_location(&d, &r), "https://a.com/old/x");
        let Action::Redirect(own) = &rt.action else {
            panic!()
        };
        assert_eq!(rt.redirect_location(own, &r), "http://a.com:80/new/x?q");
    }
}
