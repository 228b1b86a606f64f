//! HTTP/1.1 message syntax and framing (RFC 9112), sans-IO.
//!
//! Heads are parsed with `httparse` from the bytes received so far; the
//! parsed head holds its method, target and headers as slices of that
//! buffer (`Bytes`), not copies. Bodies are never parsed into a buffer:
//! [`Chunked`] only finds where a chunked body ends, so the proxy forwards
//! the received segments themselves.
//!
//! The framing rules refuse what lets two parsers disagree on where a
//! message ends (request smuggling): `transfer-encoding` with
//! `content-length`, several or invalid `content-length`s, a transfer coding
//! other than `chunked`, `transfer-encoding` on HTTP/1.0, a bad chunk size
//! or chunk line ending, and (by `httparse`) obs-fold, bare CR, NUL and
//! invalid header names.

use bytes::{BufMut, Bytes, BytesMut};

/// One header field as received (its name's case kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Bytes,
    pub value: Bytes,
}

impl Header {
    pub fn new(name: &'static str, value: impl Into<Bytes>) -> Header {
        Header {
            name: Bytes::from_static(name.as_bytes()),
            value: value.into(),
        }
    }

    /// Whether its name is `n` (ASCII lowercase), whatever its case.
    #[inline]
    pub fn is(&self, n: &str) -> bool {
        self.name.eq_ignore_ascii_case(n.as_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Bytes,
    /// As received: origin form (`/p?q`), absolute form, `*`, or a CONNECT
    /// authority.
    pub target: Bytes,
    pub version: Version,
    pub headers: Vec<Header>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub version: Version,
    pub status: u16,
    pub reason: Bytes,
    pub headers: Vec<Header>,
}

/// Why a message is refused. A request refused is answered with
/// [`Error::status`] and its connection closed; it is never forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("message head larger than allowed")]
    HeadTooLarge,
    #[error("more headers than allowed")]
    TooManyHeaders,
    #[error("malformed message head")]
    BadHead,
    #[error("unsupported HTTP version")]
    Version,
    #[error("transfer-encoding together with content-length")]
    TransferEncodingWithLength,
    #[error("transfer-encoding in an HTTP/1.0 message")]
    TransferEncodingOn10,
    #[error("invalid or repeated content-length")]
    BadContentLength,
    #[error("transfer coding other than chunked")]
    UnknownTransferCoding,
    #[error("malformed or repeated transfer-encoding")]
    BadTransferEncoding,
    #[error("missing, repeated or invalid host")]
    BadHost,
    #[error("malformed chunked body")]
    BadChunk,
}

impl Error {
    /// The status a request refused for this reason is answered with.
    pub fn status(self) -> u16 {
        match self {
            Error::HeadTooLarge | Error::TooManyHeaders => 431,
            Error::Version => 505,
            Error::UnknownTransferCoding => 501,
            _ => 400,
        }
    }

    /// Envoy's response code details for it (its access logs' reason).
    pub fn details(self) -> &'static str {
        match self {
            Error::HeadTooLarge => "http1.headers_too_large",
            Error::TooManyHeaders => "http1.too_many_headers",
            Error::BadHead => "http1.codec_error",
            Error::Version => "http1.codec_error",
            Error::TransferEncodingWithLength => "http1.content_length_and_chunked_not_allowed",
            Error::TransferEncodingOn10
            | Error::UnknownTransferCoding
            | Error::BadTransferEncoding => "http1.invalid_transfer_encoding",
            Error::BadContentLength => "http1.content_length_not_allowed",
            Error::BadHost => "http1.missing_host_header",
            Error::BadChunk => "http1.codec_error",
        }
    }
}

/// How large a head may be.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

impl Limits {
    /// What a response head from an upstream may be.
    pub const RESPONSE: Limits = Limits {
        max_head_bytes: 96 * 1024,
        max_headers: 200,
    };
}

/// Headers array `httparse` fills: on the stack for the usual limits.
const INLINE_HEADERS: usize = 128;

fn version(v: Option<u8>) -> Result<Version, Error> {
    match v {
        Some(0) => Ok(Version::Http10),
        Some(1) => Ok(Version::Http11),
        _ => Err(Error::Version),
    }
}

fn map_err(e: httparse::Error) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        httparse::Error::Version => Error::Version,
        _ => Error::BadHead,
    }
}

fn headers_of(buf: &Bytes, hs: &[httparse::Header<'_>]) -> Vec<Header> {
    hs.iter()
        .map(|h| Header {
            name: buf.slice_ref(h.name.as_bytes()),
            value: if h.value.is_empty() {
                Bytes::new()
            } else {
                buf.slice_ref(h.value)
            },
        })
        .collect()
}

/// A request head at the start of `buf`, and its length; `None` while it is
/// incomplete (and within the limits).
pub fn parse_request(buf: &Bytes, lim: Limits) -> Result<Option<(RequestHead, usize)>, Error> {
    let mut inline = [httparse::EMPTY_HEADER; INLINE_HEADERS];
    let mut heap;
    let hs: &mut [httparse::Header<'_>] = if lim.max_headers <= INLINE_HEADERS {
        &mut inline[..lim.max_headers]
    } else {
        heap = vec![httparse::EMPTY_HEADER; lim.max_headers];
        &mut heap
    };
    let mut req = httparse::Request::new(hs);
    match req.parse(buf).map_err(map_err)? {
        httparse::Status::Partial => {
            if buf.len() > lim.max_head_bytes {
                Err(Error::HeadTooLarge)
            } else {
                Ok(None)
            }
        }
        httparse::Status::Complete(n) => {
            if n > lim.max_head_bytes {
                return Err(Error::HeadTooLarge);
            }
            let (Some(method), Some(path)) = (req.method, req.path) else {
                return Err(Error::BadHead);
            };
            Ok(Some((
                RequestHead {
                    method: buf.slice_ref(method.as_bytes()),
                    target: buf.slice_ref(path.as_bytes()),
                    version: version(req.version)?,
                    headers: headers_of(buf, req.headers),
                },
                n,
            )))
        }
    }
}

/// A response head at the start of `buf`, and its length.
pub fn parse_response(buf: &Bytes, lim: Limits) -> Result<Option<(ResponseHead, usize)>, Error> {
    let mut hs = vec![httparse::EMPTY_HEADER; lim.max_headers];
    let mut resp = httparse::Response::new(&mut hs);
    match resp.parse(buf).map_err(map_err)? {
        httparse::Status::Partial => {
            if buf.len() > lim.max_head_bytes {
                Err(Error::HeadTooLarge)
            } else {
                Ok(None)
            }
        }
        httparse::Status::Complete(n) => {
            if n > lim.max_head_bytes {
                return Err(Error::HeadTooLarge);
            }
            // httparse takes any three digits: `010` is not a status.
            let Some(status) = resp.code.filter(|c| (100..=999).contains(c)) else {
                return Err(Error::BadHead);
            };
            let reason = resp.reason.unwrap_or("");
            Ok(Some((
                ResponseHead {
                    version: version(resp.version)?,
                    status,
                    reason: if reason.is_empty() {
                        Bytes::new()
                    } else {
                        buf.slice_ref(reason.as_bytes())
                    },
                    headers: headers_of(buf, resp.headers),
                },
                n,
            )))
        }
    }
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    Empty,
    /// `content-length` bytes.
    Length(u64),
    /// Chunked transfer coding, up to its last chunk and trailers.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// The body framing of a request (RFC 9112 §6.3, strict).
pub fn request_body(h: &RequestHead) -> Result<Body, Error> {
    let b = framing(&h.headers)?;
    if h.version == Version::Http10 && b == Some(Body::Chunked) {
        return Err(Error::TransferEncodingOn10);
    }
    Ok(b.unwrap_or(Body::Empty))
}

/// The body framing of a response to a request with `method`.
pub fn response_body(method: &[u8], h: &ResponseHead) -> Result<Body, Error> {
    // A 2xx to CONNECT starts a tunnel: no body (RFC 9112 6.3).
    let tunnel = method == b"CONNECT" && (200..300).contains(&h.status);
    if tunnel || method == b"HEAD" || h.status < 200 || h.status == 204 || h.status == 304 {
        return Ok(Body::Empty);
    }
    Ok(framing(&h.headers)?.unwrap_or(Body::UntilClose))
}

/// `transfer-encoding` and `content-length` as one verdict: `None` if
/// neither is there.
fn framing(hs: &[Header]) -> Result<Option<Body>, Error> {
    let mut te: Option<&Header> = None;
    let mut cl: Option<&Header> = None;
    for h in hs {
        if h.is("transfer-encoding") {
            if te.is_some() {
                // Codings split over several fields: never what a client
                // that means well sends, and a classic obfuscation.
                return Err(Error::BadTransferEncoding);
            }
            te = Some(h);
        } else if h.is("content-length") {
            if cl.is_some() {
                return Err(Error::BadContentLength);
            }
            cl = Some(h);
        }
    }
    match (te, cl) {
        (Some(_), Some(_)) => Err(Error::TransferEncodingWithLength),
        (Some(t), None) => {
            let v = trim(&t.value);
            if v.eq_ignore_ascii_case(b"chunked") {
                Ok(Some(Body::Chunked))
            } else if v.is_empty()
                || !v.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
                || v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked")
            {
                // Lists, look-alikes (`xchunked`, `chunked, identity`):
                // the shapes smuggling relies on.
                Err(Error::BadTransferEncoding)
            } else {
                // One coding we do not implement (gzip, ...).
                Err(Error::UnknownTransferCoding)
            }
        }
        (None, Some(c)) => {
            let v = trim(&c.value);
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadContentLength);
            }
            let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            Ok(Some(if n == 0 { Body::Empty } else { Body::Length(n) }))
        }
        (None, None) => Ok(None),
    }
}

/// `v` without leading and trailing spaces and tabs.
pub fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(s, |e| e + 1);
    &v[s..e]
}

/// Whether the comma-separated header `name` lists `token` (any case).
pub fn has_token(hs: &[Header], name: &str, token: &str) -> bool {
    hs.iter().filter(|h| h.is(name)).any(|h| {
        h.value
            .split(|b| *b == b',')
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The end of a chunked body, found as its bytes go by.
#[derive(Debug, Clone, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Of the chunk being read: its size, then what is left of it.
    size: u64,
    digits: u8,
    /// Bytes of chunk extensions and trailers so far (bounded).
    meta: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

/// Chunk extensions and trailers together, per body.
const MAX_CHUNK_META: usize = 64 * 1024;

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Take the next bytes of the body from `buf`; returns how many belong
    /// to it (all of `buf`, or up to the body's end).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, Error> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            if self.state == Done {
                break;
            }
            if self.state == Data {
                let n = (buf.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match (self.state, b) {
                (Size, b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F') => {
                    if self.digits == 16 {
                        return Err(Error::BadChunk);
                    }
                    self.digits += 1;
                    let d = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size << 4 | u64::from(d);
                    Size
                }
                (Size, b';') if self.digits > 0 => Ext,
                (Size, b'\r') if self.digits > 0 => SizeLf,
                (Ext, b'\r') => SizeLf,
                (Ext, b) if b == b'\t' || b >= b' ' && b != 0x7f => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(Error::BadChunk);
                    }
                    Ext
                }
                (SizeLf, b'\n') => {
                    self.digits = 0;
                    if self.size == 0 { TrailerStart } else { Data }
                }
                (DataCr, b'\r') => DataLf,
                (DataLf, b'\n') => Size,
                (TrailerStart, b'\r') => EndLf,
                (TrailerStart | Trailer, b) if b == b'\t' || b >= b' ' && b != 0x7f => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err(Error::BadChunk);
                    }
                    Trailer
                }
                (Trailer, b'\r') => TrailerLf,
                (TrailerLf, b'\n') => TrailerStart,
                (EndLf, b'\n') => Done,
                _ => return Err(Error::BadChunk),
            };
        }
        Ok(i)
    }
}

/// Where a message's body stands as its bytes go by.
#[derive(Debug, Clone)]
pub enum BodyReader {
    /// `n` bytes left.
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl BodyReader {
    pub fn new(b: Body) -> BodyReader {
        match b {
            Body::Empty => BodyReader::Done,
            Body::Length(n) => BodyReader::Length(n),
            Body::Chunked => BodyReader::Chunked(Chunked::default()),
            Body::UntilClose => BodyReader::UntilClose,
        }
    }

    pub fn done(&self) -> bool {
        match self {
            BodyReader::Done => true,
            BodyReader::Chunked(c) => c.done(),
            _ => false,
        }
    }

    /// How many of `buf`'s bytes belong to the body.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, Error> {
        match self {
            BodyReader::Length(left) => {
                let n = (buf.len() as u64).min(*left);
                *left -= n;
                if *left == 0 {
                    *self = BodyReader::Done;
                }
                Ok(n as usize)
            }
            BodyReader::Chunked(c) => c.feed(buf),
            BodyReader::UntilClose => Ok(buf.len()),
            BodyReader::Done => Ok(0),
        }
    }
}

/// Write a request head.
pub fn write_request(
    out: &mut BytesMut,
    method: &[u8],
    target: &[u8],
    version: Version,
    headers: &[Header],
) {
    out.reserve(64 + method.len() + target.len() + headers_len(headers));
    out.put_slice(method);
    out.put_u8(b' ');
    out.put_slice(target);
    out.put_slice(match version {
        Version::Http10 => b" HTTP/1.0\r\n",
        Version::Http11 => b" HTTP/1.1\r\n",
    });
    write_headers(out, headers);
}

/// Write a response head.
pub fn write_response(out: &mut BytesMut, status: u16, reason: &[u8], headers: &[Header]) {
    out.reserve(32 + reason.len() + headers_len(headers));
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    if reason.is_empty() {
        out.put_slice(reason_phrase(status).as_bytes());
    } else {
        out.put_slice(reason);
    }
    out.put_slice(b"\r\n");
    write_headers(out, headers);
}

fn headers_len(hs: &[Header]) -> usize {
    hs.iter()
        .map(|h| h.name.len() + h.value.len() + 4)
        .sum::<usize>()
        + 2
}

fn write_headers(out: &mut BytesMut, headers: &[Header]) {
    for h in headers {
        out.put_slice(&h.name);
        out.put_slice(b": ");
        out.put_slice(&h.value);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
}

/// The usual reason phrase of `status`.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: Limits = Limits {
        max_head_bytes: 60 * 1024,
        max_headers: 100,
    };

    fn req(s: &str) -> Result<Option<(RequestHead, usize)>, Error> {
        parse_request(&Bytes::copy_from_slice(s.as_bytes()), LIM)
    }

    fn framing_of(s: &str) -> Result<Body, Error> {
        let (h, _) = req(s)?.expect("complete head");
        request_body(&h)
    }

    #[test]
    fn a_head_is_parsed_in_place_and_partial_heads_wait() {
        let buf = Bytes::from_static(b"GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nrest");
        let (h, n) = parse_request(&buf, LIM).unwrap().unwrap();
        assert_eq!(&buf[n..], b"rest");
        assert_eq!(&h.method[..], b"GET");
        assert_eq!(&h.target[..], b"/a?b");
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers.len(), 2);
        assert!(h.headers[1].is("x-a"));
        // The same memory, not a copy.
        assert_eq!(h.target.as_ptr(), buf[4..].as_ptr());
        assert_eq!(req("GET / HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
    }

    #[test]
    fn limits_give_431() {
        let many: String = (0..101).map(|i| format!("h{i}: v\r\n")).collect();
        let e = req(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err();
        assert_eq!((e, e.status()), (Error::TooManyHeaders, 431));
        let big = format!("GET / HTTP/1.1\r\nx: {}\r\n", "a".repeat(61 * 1024));
        assert_eq!(req(&big).unwrap_err(), Error::HeadTooLarge);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let cases = [
            // CL.TE and TE.CL
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
            // TE.TE obfuscations
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            // content-length games
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ];
        for c in cases {
            assert!(framing_of(c).is_err(), "accepted: {c:?}");
        }
        for c in [
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", // obs-fold
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",    // bare CR
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",    // NUL
            "GET / HTTP/1.1\r\nHost: x\r\nX Y: a\r\n\r\n",     // bad name
            "GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n",      // space before colon
            "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",        // empty name
        ] {
            assert!(req(c).is_err(), "accepted: {c:?}");
        }
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n"),
            Ok(Body::Chunked)
        );
        assert_eq!(
            framing_of("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"),
            Ok(Body::Length(12))
        );
    }

    #[test]
    fn chunked_bodies_end_where_their_last_chunk_and_trailers_do() {
        let body = b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nNEXT";
        for split in 0..=body.len() - 4 {
            let mut c = Chunked::default();
            let a = c.feed(&body[..split]).unwrap();
            assert_eq!(a, split);
            let b = c.feed(&body[split..]).unwrap();
            assert!(c.done());
            assert_eq!(&body[a + b..], b"NEXT");
        }
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after size
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than its size
            b"-5\r\nhello\r\n",            // sign
            b" 5\r\nhello\r\n",            // leading space
            b"5 \r\nhello\r\n",            // trailing space
            b"11111111111111111\r\n",      // 17 hex digits
            b"5;a\0\r\nhello\r\n",         // NUL in an extension
            b"0\r\nT: v\n\r\n",            // bare LF in a trailer
            b"\r\n",                       // no size
        ] {
            assert!(Chunked::default().feed(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn responses_without_bodies_are_known_by_status_and_method() {
        let r = |s: &str| {
            parse_response(&Bytes::copy_from_slice(s.as_bytes()), Limits::RESPONSE)
                .unwrap()
                .unwrap()
                .0
        };
        let with_len = r("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(response_body(b"HEAD", &with_len), Ok(Body::Empty));
        assert_eq!(response_body(b"GET", &with_len), Ok(Body::Length(5)));
        for s in [
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 304 x\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            assert_eq!(response_body(b"GET", &r(s)), Ok(Body::Empty));
        }
        assert_eq!(
            response_body(b"GET", &r("HTTP/1.0 200 OK\r\n\r\n")),
            Ok(Body::UntilClose)
        );
        // Not HTTP; and a status of three digits that is not 100-999
        // (found by fuzzing: httparse takes `010`).
        for bad in [
            &b"HTTX/1.1 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 010 Continue\r\n\r\n",
        ] {
            assert!(parse_response(&Bytes::from_static(bad), Limits::RESPONSE).is_err());
        }
    }
}
