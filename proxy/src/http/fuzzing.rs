//! Bodies of the HTTP fuzz targets (`proxy/fuzz`), here so that
//! `cargo test` replays their saved corpora with the same code. Each takes
//! arbitrary bytes and checks what must hold for any input; a panic is a
//! finding.

use bytes::Bytes;

use super::codec::{self, Chunked, Limits};
use super::hcm::{merge_slashes, normalize_path};

const LIMITS: Limits = Limits {
    max_head_bytes: 8 * 1024,
    max_headers: 32,
};

/// A request head: parsed, framed, its target normalized.
pub fn request(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let Ok(Some((head, n))) = codec::parse_request(&buf, LIMITS) else {
        return;
    };
    assert!(n <= data.len() && n <= LIMITS.max_head_bytes);
    assert!(head.headers.len() <= LIMITS.max_headers);
    for h in &head.headers {
        assert!(!h.name.is_empty());
        assert!(
            !h.value
                .iter()
                .any(|b| *b == b'\r' || *b == b'\n' || *b == 0)
        );
    }
    // A prefix of a complete head is incomplete, never a different head.
    if n > 1 {
        let prefix = buf.slice(..n - 1);
        assert!(matches!(
            codec::parse_request(&prefix, LIMITS),
            Ok(None) | Err(_)
        ));
    }
    let _ = codec::request_body(&head);
    if let Some(p) = normalize_path(&head.target) {
        // Normalizing twice changes nothing.
        assert_eq!(normalize_path(&p).as_deref(), Some(&p[..]), "{p:?}");
        let m = merge_slashes(&p);
        assert!(
            !m.windows(2)
                .take_while(|w| w[0] != b'?')
                .any(|w| w == b"//")
        );
    }
}

/// A response head and its framing, for a GET and for a HEAD.
pub fn response(data: &[u8]) {
    let buf = Bytes::copy_from_slice(data);
    let Ok(Some((head, n))) = codec::parse_response(&buf, Limits::RESPONSE) else {
        return;
    };
    assert!(n <= data.len());
    assert!((100..=999).contains(&head.status));
    let _ = codec::response_body(b"GET", &head);
    assert_eq!(codec::response_body(b"HEAD", &head), Ok(codec::Body::Empty));
}

/// A chunked body: where it ends does not depend on how its bytes were
/// split into segments.
pub fn chunked(data: &[u8]) {
    let (split, body) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s), rest),
        None => return,
    };
    let whole = {
        let mut c = Chunked::default();
        c.feed(body).map(|n| (n, c.done()))
    };
    let split = split.min(body.len());
    let parts = {
        let mut c = Chunked::default();
        c.feed(&body[..split]).and_then(|a| {
            if a < split {
                // Ended inside the first part.
                return Ok((a, c.done()));
            }
            c.feed(&body[split..]).map(|b| (a + b, c.done()))
        })
    };
    let bytewise = {
        let mut c = Chunked::default();
        let mut total = Ok(0usize);
        for i in 0..body.len() {
            match c.feed(&body[i..=i]) {
                Ok(0) => break,
                Ok(n) => total = total.map(|t| t + n),
                Err(e) => {
                    total = Err(e);
                    break;
                }
            }
        }
        total.map(|n| (n, c.done()))
    };
    assert_eq!(whole, parts, "split at {split}");
    assert_eq!(whole, bytewise);
    if let Ok((n, done)) = whole {
        assert!(n <= body.len());
        assert!(done || n == body.len());
    }
}

#[cfg(test)]
mod tests {
    /// The corpora cargo-fuzz saved (proxy/fuzz/corpus), replayed through
    /// the same bodies: every input that found a new path stays a test.
    #[test]
    fn the_saved_fuzz_corpora_replay() {
        type Target = fn(&[u8]);
        let targets: [(&str, Target); 3] = [
            ("http_request", super::request),
            ("http_response", super::response),
            ("http_chunked", super::chunked),
        ];
        for (target, run) in targets {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("fuzz/corpus")
                .join(target);
            let n = netstack::testing::replay_fuzz_corpus(&dir, run);
            assert!(
                n >= 50,
                "{target}: only {n} saved inputs in {}",
                dir.display()
            );
        }
    }
}
