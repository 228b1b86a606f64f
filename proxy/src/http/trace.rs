//! Trace context for the HTTP connection manager, sans I/O: B3 (the
//! `x-b3-*` headers and the single `b3` header) and W3C `traceparent`
//! read from a request, a span started for it, the context passed
//! upstream in both forms, and a finished span queued for the exporter
//! when the request is sampled.
//!
//! As Envoy's Zipkin tracer: one span per request, named `ingress` on an
//! inbound listener and `egress` otherwise (kind SERVER or CLIENT), its
//! parent the caller's span; the upstream sees this span as its parent.
//! A sampling decision that comes with the request is kept; otherwise
//! `random_sampling` decides.

use bytes::Bytes;

use crate::http::codec::Header;

/// A request's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanContext {
    /// 128-bit trace id (the upper half 0 for a 64-bit B3 id).
    pub trace: u128,
    /// This request's span.
    pub span: u64,
    /// The caller's span, if the request came with one.
    pub parent: Option<u64>,
    pub sampled: bool,
}

/// What the request carried: a trace and parent span, and/or a sampling
/// decision.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Incoming {
    pub trace: Option<(u128, u64)>,
    pub sampled: Option<bool>,
}

fn hex_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

fn hex_u128(b: &[u8]) -> Option<u128> {
    if b.len() != 16 && b.len() != 32 {
        return None;
    }
    u128::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
}

fn sampled_flag(v: &[u8]) -> Option<bool> {
    match v {
        b"1" | b"true" | b"d" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// The value of header `n`, if `headers` has it.
fn value<'a>(headers: &'a [Header], n: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.is(n)).map(|h| h.value.as_ref())
}

/// Read the trace context of `headers`: B3 multi-header first, then the
/// single `b3` header, then `traceparent`. Malformed or all-zero ids are
/// ignored (a new trace starts), as Envoy does.
pub fn extract(headers: &[Header]) -> Incoming {
    let get = |n: &str| value(headers, n);
    let mut inc = Incoming::default();
    // B3, several headers.
    if let (Some(t), Some(s)) = (get("x-b3-traceid"), get("x-b3-spanid"))
        && let (Some(t), Some(s)) = (hex_u128(t), hex_u64(s))
        && t != 0
        && s != 0
    {
        inc.trace = Some((t, s));
    }
    if get("x-b3-flags") == Some(b"1") {
        inc.sampled = Some(true);
    } else if let Some(v) = get("x-b3-sampled") {
        inc.sampled = sampled_flag(v);
    }
    if inc.trace.is_some() || inc.sampled.is_some() {
        return inc;
    }
    // B3, one header: `{trace}-{span}[-{sampled}[-{parent}]]` or just the
    // sampling state.
    if let Some(v) = get("b3") {
        let parts: Vec<&[u8]> = v.split(|&c| c == b'-').collect();
        match parts.as_slice() {
            [one] => inc.sampled = sampled_flag(one),
            [t, s, rest @ ..] => {
                if let (Some(t), Some(s)) = (hex_u128(t), hex_u64(s))
                    && t != 0
                    && s != 0
                {
                    inc.trace = Some((t, s));
                    inc.sampled = rest.first().and_then(|f| sampled_flag(f));
                }
            }
            [] => {}
        }
        if inc.trace.is_some() || inc.sampled.is_some() {
            return inc;
        }
    }
    // W3C: `00-{32 hex trace}-{16 hex parent}-{2 hex flags}`; a later
    // version may add fields after these.
    if let Some(v) = get("traceparent") {
        let parts: Vec<&[u8]> = v.split(|&c| c == b'-').collect();
        if parts.len() >= 4
            && parts[0].len() == 2
            && parts[0] != b"ff"
            && parts[1].len() == 32
            && parts[2].len() == 16
            && parts[3].len() == 2
            && (parts[0] != b"00" || parts.len() == 4)
            && let (Some(t), Some(s), Some(f)) = (
                hex_u128(parts[1]),
                hex_u64(parts[2]),
                u8::from_str_radix(std::str::from_utf8(parts[3]).unwrap_or("zz"), 16).ok(),
            )
            && t != 0
            && s != 0
        {
            inc.trace = Some((t, s));
            inc.sampled = Some(f & 1 == 1);
        }
    }
    inc
}

/// The context of this request's span: the incoming trace continued (or
/// a new 64-bit one, from `rand`), a new span id, and the sampling
/// decision (the incoming one, else `random_sampling` percent).
pub fn start(inc: Incoming, random_sampling: f64, mut rand: impl FnMut() -> u64) -> SpanContext {
    let nonzero = |f: &mut dyn FnMut() -> u64| loop {
        let x = f();
        if x != 0 {
            break x;
        }
    };
    let (trace, parent) = match inc.trace {
        Some((t, p)) => (t, Some(p)),
        None => (u128::from(nonzero(&mut rand)), None),
    };
    let span = nonzero(&mut rand);
    let sampled = inc.sampled.unwrap_or_else(|| {
        // A uniform draw in [0, 100).
        (rand() >> 11) as f64 / (1u64 << 53) as f64 * 100.0 < random_sampling
    });
    SpanContext {
        trace,
        span,
        parent,
        sampled,
    }
}

/// The trace id as B3 writes it: 16 hex digits for a 64-bit id, else 32.
pub fn trace_hex(t: u128) -> String {
    if t >> 64 == 0 {
        format!("{:016x}", t as u64)
    } else {
        format!("{t:032x}")
    }
}

/// Replace the request's trace headers with this span's context, in B3
/// and W3C forms (`tracestate` passes as it came). The values are written
/// into one buffer: one allocation per request.
pub fn inject(ctx: &SpanContext, hs: &mut Vec<Header>) {
    use std::fmt::Write as _;
    hs.retain(|h| {
        !(h.is("x-b3-traceid")
            || h.is("x-b3-spanid")
            || h.is("x-b3-parentspanid")
            || h.is("x-b3-sampled")
            || h.is("x-b3-flags")
            || h.is("b3")
            || h.is("traceparent"))
    });
    let flag = if ctx.sampled { "1" } else { "0" };
    let mut b = bytes::BytesMut::with_capacity(128);
    let _ = if ctx.trace >> 64 == 0 {
        write!(b, "{:016x}", ctx.trace as u64)
    } else {
        write!(b, "{:032x}", ctx.trace)
    };
    let trace = b.split().freeze();
    let _ = write!(b, "{:016x}", ctx.span);
    let span = b.split().freeze();
    let parent = ctx.parent.map(|p| {
        let _ = write!(b, "{p:016x}");
        b.split().freeze()
    });
    let _ = write!(b, "00-{:032x}-{:016x}-0{flag}", ctx.trace, ctx.span);
    let tp = b.split().freeze();
    hs.push(Header::new("x-b3-traceid", trace));
    hs.push(Header::new("x-b3-spanid", span));
    if let Some(p) = parent {
        hs.push(Header::new("x-b3-parentspanid", p));
    }
    hs.push(Header::new(
        "x-b3-sampled",
        Bytes::from_static(flag.as_bytes()),
    ));
    hs.push(Header::new("traceparent", tp));
}

/// A finished, sampled request as the exporter turns it into a Zipkin
/// span. Its text is copied out of the request (a span outlives the
/// packet buffers it came in).
#[derive(Debug, Clone)]
pub struct Span {
    pub ctx: SpanContext,
    /// SERVER (`ingress`, an inbound listener) or CLIENT (`egress`).
    pub server: bool,
    /// The worker's clock (µs from its own origin) at the request's start.
    pub start_us: u64,
    pub duration_us: u64,
    pub method: String,
    /// `http://<authority><path>`.
    pub url: String,
    pub status: u16,
    pub upstream_cluster: String,
    pub request_id: String,
    pub user_agent: String,
    pub peer: std::net::Ipv4Addr,
    pub response_flags: &'static str,
}

/// The parts of a sampled request its span needs, taken when it starts.
#[derive(Debug, Clone)]
pub struct SpanInfo {
    pub method: String,
    pub url: String,
    pub request_id: String,
    pub user_agent: String,
}

impl SpanInfo {
    pub fn of(method: &[u8], authority: &[u8], path: &[u8], headers: &[Header]) -> SpanInfo {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let get = |n: &str| value(headers, n).map_or_else(|| "-".to_string(), text);
        SpanInfo {
            method: text(method),
            url: format!("http://{}{}", text(authority), text(path)),
            request_id: get("x-request-id"),
            user_agent: get("user-agent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&'static str, &str)]) -> Vec<Header> {
        pairs
            .iter()
            .map(|(k, v)| Header::new(k, v.to_string()))
            .collect()
    }

    #[test]
    fn b3_single_b3_and_w3c_are_read_in_that_order() {
        let w3c = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let inc = extract(&hs(&[("traceparent", w3c)]));
        assert_eq!(
            inc.trace,
            Some((0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331))
        );
        assert_eq!(inc.sampled, Some(true));
        let inc = extract(&hs(&[
            ("traceparent", w3c),
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(inc.trace, Some((0x463ac35c9f6413ad, 0xa2fb4a1d1a96d312)));
        assert_eq!(inc.sampled, Some(false));
        let inc = extract(&hs(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
        )]));
        assert_eq!(
            inc.trace,
            Some((0x80f198ee56343ba864fe8b2a57d3eff7, 0xe457b5a2e4d86bd1))
        );
        assert_eq!(inc.sampled, Some(true));
        assert_eq!(extract(&hs(&[("b3", "0")])).sampled, Some(false));
        // Malformed and all-zero contexts start a new trace.
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-xyz",
            "",
        ] {
            assert_eq!(
                extract(&hs(&[("traceparent", bad)])),
                Incoming::default(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_span_continues_the_trace_and_is_the_upstreams_parent() {
        let mut n = 0u64;
        let rand = || {
            n += 1;
            n
        };
        let inc = Incoming {
            trace: Some((7, 9)),
            sampled: None,
        };
        let ctx = start(inc, 100.0, rand);
        assert_eq!((ctx.trace, ctx.parent, ctx.sampled), (7, Some(9), true));
        let mut h = hs(&[
            ("traceparent", "x"),
            ("x-b3-spanid", "1"),
            ("tracestate", "a=b"),
        ]);
        inject(&ctx, &mut h);
        let get = |n: &str| {
            h.iter()
                .find(|x| x.is(n))
                .map(|x| String::from_utf8_lossy(&x.value).into_owned())
        };
        assert_eq!(get("x-b3-traceid").unwrap(), "0000000000000007");
        assert_eq!(get("x-b3-spanid").unwrap(), format!("{:016x}", ctx.span));
        assert_eq!(get("x-b3-parentspanid").unwrap(), "0000000000000009");
        assert_eq!(
            get("traceparent").unwrap(),
            format!("00-00000000000000000000000000000007-{:016x}-01", ctx.span)
        );
        assert_eq!(get("tracestate").unwrap(), "a=b");
        assert_eq!(h.iter().filter(|x| x.is("x-b3-spanid")).count(), 1);
    }

    #[test]
    fn sampling_keeps_the_callers_decision_else_draws() {
        let mut x = 1u64;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let never = Incoming {
            trace: None,
            sampled: Some(false),
        };
        assert!(!start(never, 100.0, &mut rand).sampled);
        let n = (0..10_000)
            .filter(|_| start(Incoming::default(), 1.0, &mut rand).sampled)
            .count();
        assert!((50..200).contains(&n), "1% of 10000 sampled: {n}");
        assert!((0..1000).all(|_| !start(Incoming::default(), 0.0, &mut rand).sampled));
    }
}
