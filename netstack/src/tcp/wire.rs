//! TCP segments to and from bytes: the TCP header (with options) and
//! payload, checksummed over the IPv4 pseudo-header. Formats come from
//! smoltcp's `wire`; the mapping to our [`Segment`] is here.

use std::net::Ipv4Addr;
use std::ops::Range;

use bytes::Bytes;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    IpAddress, IpProtocol, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, TcpTimestampRepr, checksum,
};

use super::{Segment, Seq};

/// Bytes of TCP options a header can hold.
const MAX_OPTIONS: usize = 40;

/// Why bytes were not a TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Too short, bad data offset, or a zero port.
    Malformed,
    BadChecksum,
    /// Flag combinations we do not accept (SYN with FIN or RST).
    BadFlags,
}

/// A parsed segment with its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub src_port: u16,
    pub dst_port: u16,
    pub segment: Segment,
}

/// Parse the TCP part of an IPv4 packet, payload copied out. With
/// `verify_checksum` false the caller vouches for it (device offload).
pub fn parse(
    tcp: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    verify_checksum: bool,
) -> Result<Parsed, WireError> {
    let (mut p, payload) = parse_header(tcp, src, dst, verify_checksum)?;
    p.segment.payload = Bytes::copy_from_slice(&tcp[payload]);
    Ok(p)
}

/// Parse like [`parse`] but leave the payload where it is: the segment's
/// `payload` is empty and the range says where the payload is in `tcp`, for
/// the caller to hand out without a copy.
pub fn parse_header(
    tcp: &[u8],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    verify_checksum: bool,
) -> Result<(Parsed, Range<usize>), WireError> {
    let packet = TcpPacket::new_checked(tcp).map_err(|_| WireError::Malformed)?;
    if packet.syn() && (packet.fin() || packet.rst()) {
        return Err(WireError::BadFlags);
    }
    let (src, dst) = (IpAddress::Ipv4(src), IpAddress::Ipv4(dst));
    if verify_checksum && !packet.verify_checksum(&src, &dst) {
        return Err(WireError::BadChecksum);
    }
    let mut caps = ChecksumCapabilities::default();
    caps.tcp = smoltcp::phy::Checksum::None;
    let repr = TcpRepr::parse(&packet, &src, &dst, &caps).map_err(|_| WireError::Malformed)?;
    let segment = Segment {
        seq: Seq(repr.seq_number.0 as u32),
        ack: repr.ack_number.map(|a| Seq(a.0 as u32)),
        syn: repr.control == TcpControl::Syn,
        fin: repr.control == TcpControl::Fin,
        rst: repr.control == TcpControl::Rst,
        window: repr.window_len,
        mss: repr.max_seg_size,
        window_scale: repr.window_scale,
        sack_permitted: repr.sack_permitted,
        timestamp: repr.timestamp.map(|t| (t.tsval, t.tsecr)),
        // SACK blocks mean nothing without an ACK, nor beside SACK-permitted
        // (a SYN's option); neither is emitted.
        sack: if repr.ack_number.is_some() && !repr.sack_permitted {
            repr.sack_ranges.map(|r| r.map(|(l, r)| (Seq(l), Seq(r))))
        } else {
            [None; 3]
        },
        payload: Bytes::new(),
    };
    // `repr.payload` borrows the tail of `tcp`.
    let start = tcp.len() - repr.payload.len();
    let parsed = Parsed {
        src_port: repr.src_port,
        dst_port: repr.dst_port,
        segment,
    };
    Ok((parsed, start..tcp.len()))
}

fn repr<'a>(seg: &'a Segment, src_port: u16, dst_port: u16) -> TcpRepr<'a> {
    let control = if seg.syn {
        TcpControl::Syn
    } else if seg.rst {
        TcpControl::Rst
    } else if seg.fin {
        TcpControl::Fin
    } else if seg.payload.is_empty() {
        TcpControl::None
    } else {
        TcpControl::Psh
    };
    // Options have 40 bytes: SACK blocks that do not fit are left out (the
    // first ones, most recent first, are the ones that matter, RFC 2018 §4).
    let fixed = 4 * usize::from(seg.mss.is_some())
        + 3 * usize::from(seg.window_scale.is_some())
        + 2 * usize::from(seg.sack_permitted)
        + 10 * usize::from(seg.timestamp.is_some());
    let room = MAX_OPTIONS.saturating_sub(fixed + 2) / 8;
    let mut sack = seg.sack.map(|r| r.map(|(l, r)| (l.0, r.0)));
    for (i, s) in sack.iter_mut().enumerate() {
        // SACK-permitted and SACK blocks never share a segment (SYNs carry
        // no blocks); smoltcp writes only the former.
        if i >= room || seg.sack_permitted {
            *s = None;
        }
    }
    TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seg.seq.0 as i32),
        ack_number: seg.ack.map(|a| TcpSeqNumber(a.0 as i32)),
        window_len: seg.window,
        window_scale: seg.window_scale,
        max_seg_size: seg.mss,
        sack_permitted: seg.sack_permitted,
        sack_ranges: sack,
        timestamp: seg.timestamp.map(|(v, e)| TcpTimestampRepr::new(v, e)),
        payload: &seg.payload,
    }
}

/// Bytes `emit` writes for `seg`.
pub fn emit_len(seg: &Segment) -> usize {
    repr(seg, 1, 1).buffer_len()
}

/// Write `seg` (header, options, payload) into `buf[..emit_len(seg)]`, with
/// its checksum.
///
/// # Panics
/// If `buf` is shorter than [`emit_len`].
pub fn emit(
    seg: &Segment,
    src_port: u16,
    dst_port: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    buf: &mut [u8],
) {
    let header = header_len(seg);
    emit_header(seg, src_port, dst_port, src, dst, buf);
    buf[header..header + seg.payload.len()].copy_from_slice(&seg.payload);
}

/// Bytes [`emit_header`] writes for `seg`: header and options, no payload.
pub fn header_len(seg: &Segment) -> usize {
    emit_len(seg) - seg.payload.len()
}

/// Write `seg`'s header and options into `buf[..header_len(seg)]`, with the
/// checksum over the header and `seg.payload`, which the caller sends right
/// after it in another buffer (chained, not copied).
///
/// # Panics
/// If `buf` is shorter than [`header_len`].
pub fn emit_header(
    seg: &Segment,
    src_port: u16,
    dst_port: u16,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    buf: &mut [u8],
) {
    let mut r = repr(seg, src_port, dst_port);
    r.payload = &[];
    let len = r.buffer_len();
    let mut caps = ChecksumCapabilities::default();
    caps.tcp = smoltcp::phy::Checksum::None; // leaves it zero
    let mut packet = TcpPacket::new_unchecked(&mut buf[..len]);
    r.emit(
        &mut packet,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    let total = (len + seg.payload.len()) as u32;
    let sum = checksum::combine(&[
        checksum::pseudo_header_v4(&src, &dst, IpProtocol::Tcp, total),
        // The header is a whole number of 32-bit words: the payload's sum
        // starts on an even offset and adds on directly.
        checksum::data(packet.as_ref()),
        checksum::data(&seg.payload),
    ]);
    packet.set_checksum(!sum);
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn round_trip_with_options_and_payload() {
        let seg = Segment {
            seq: Seq(0xfff0_0000),
            ack: Some(Seq(7)),
            syn: true,
            window: 1234,
            mss: Some(1460),
            window_scale: Some(7),
            ..Default::default()
        };
        // A dirty buffer: emit must write every byte it owns.
        let mut buf = vec![0xa5; emit_len(&seg)];
        emit(&seg, 40000, 80, A, B, &mut buf);
        let p = parse(&buf, A, B, true).unwrap();
        assert_eq!((p.src_port, p.dst_port), (40000, 80));
        assert_eq!(p.segment, seg);

        let data = Segment {
            seq: Seq(1),
            ack: Some(Seq(2)),
            fin: true,
            window: 9,
            payload: Bytes::from_static(b"hello"),
            ..Default::default()
        };
        let mut buf = vec![0xa5; emit_len(&data)];
        emit(&data, 1, 2, A, B, &mut buf);
        assert_eq!(parse(&buf, A, B, true).unwrap().segment, data);
    }

    #[test]
    fn header_emitted_apart_checksums_the_payload_too() {
        for (n, fin) in [(1, false), (1399, true), (1460, false), (0, true)] {
            let seg = Segment {
                seq: Seq(77),
                ack: Some(Seq(5)),
                fin,
                window: 300,
                sack: [Some((Seq(10), Seq(20))), None, None],
                payload: (0..n).map(|i| (i * 7) as u8).collect::<Vec<u8>>().into(),
                ..Default::default()
            };
            let mut buf = vec![0xa5; header_len(&seg)];
            emit_header(&seg, 9, 10, A, B, &mut buf);
            let mut whole = buf.clone();
            whole.extend_from_slice(&seg.payload);
            let mut direct = vec![0; emit_len(&seg)];
            emit(&seg, 9, 10, A, B, &mut direct);
            assert_eq!(whole, direct, "payload of {n} bytes");
            assert_eq!(parse(&whole, A, B, true).unwrap().segment, seg);
        }
    }

    #[test]
    fn corrupt_or_truncated_segments_are_refused() {
        let seg = Segment {
            seq: Seq(1),
            ack: Some(Seq(2)),
            window: 9,
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        };
        let mut buf = vec![0; emit_len(&seg)];
        emit(&seg, 1, 2, A, B, &mut buf);
        let mut bad = buf.clone();
        bad[20] ^= 1;
        assert_eq!(parse(&bad, A, B, true), Err(WireError::BadChecksum));
        assert!(
            parse(&bad, A, B, false).is_ok(),
            "offloaded checksum is not re-checked"
        );
        let c = Ipv4Addr::new(10, 0, 0, 3);
        assert_eq!(
            parse(&buf, A, c, true),
            Err(WireError::BadChecksum),
            "pseudo-header covers addresses"
        );
        for len in 0..buf.len() - 1 {
            assert!(parse(&buf[..len], A, B, true).is_err());
        }
        let mut synfin = buf.clone();
        synfin[13] |= 0x03;
        assert_eq!(parse(&synfin, A, B, false), Err(WireError::BadFlags));
    }
}
