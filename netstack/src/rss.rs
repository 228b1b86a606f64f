//! Receive-side scaling as a NIC computes it, so that a core can tell which
//! queue (and so which core) a flow's packets arrive on.
//!
//! The Toeplitz hash over (source address, destination address, source port,
//! destination port) of a received IPv4/TCP packet, then the redirection
//! table (RETA) indexed by the hash's low bits. An active open picks an
//! ephemeral port whose return traffic hashes to its own core's queue, as
//! F-Stack and Seastar do; a device without RSS gets the same function in
//! software, so the two agree.

use std::net::Ipv4Addr;
use std::sync::Arc;

/// The key most NICs and DPDK drivers default to (Microsoft's RSS
/// verification key; also the one in DPDK's `rss_intel_key`).
pub const DEFAULT_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// The Toeplitz hash of `input` under `key`: for every set bit of the input,
/// XOR in the 32 key bits starting at that bit position. The key must be at
/// least 4 bytes longer than the input (40-byte keys cover 36 bytes, IPv6).
///
/// # Panics
/// If the key is too short for the input.
pub fn toeplitz(key: &[u8], input: &[u8]) -> u32 {
    assert!(key.len() >= input.len() + 4, "RSS key too short");
    let mut hash = 0u32;
    // The 64-bit window holds the key bits from the current input byte on.
    let mut window = u64::from(u32::from_be_bytes([key[0], key[1], key[2], key[3]])) << 32
        | u64::from(u32::from_be_bytes([key[4], key[5], key[6], key[7]]));
    for (i, &byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= (window >> (32 - bit)) as u32;
            }
        }
        // Slide by one byte, pulling in the next key byte (zeros past the end).
        window = window << 8 | u64::from(key.get(i + 8).copied().unwrap_or(0));
    }
    hash
}

/// The hash of an IPv4/TCP packet from `src` to `dst` (addresses and ports).
pub fn hash_v4_tcp(key: &[u8], src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> u32 {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.0.octets());
    input[4..8].copy_from_slice(&dst.0.octets());
    input[8..10].copy_from_slice(&src.1.to_be_bytes());
    input[10..12].copy_from_slice(&dst.1.to_be_bytes());
    toeplitz(key, &input)
}

/// How received packets are spread over queues, and which queue is ours.
///
/// The hash is computed from a table built once from the key (twelve
/// lookups per packet instead of 96 conditional XORs), so software steering
/// can afford it on every received segment.
#[derive(Debug, Clone)]
pub struct Steering {
    key: Vec<u8>,
    reta: Vec<u16>,
    queue: u16,
    /// `table[i][b]`: the hash contribution of byte value `b` at input
    /// position `i` (Toeplitz is linear in the input bits).
    table: Arc<[[u32; 256]; 12]>,
}

impl PartialEq for Steering {
    fn eq(&self, other: &Self) -> bool {
        (&self.key, &self.reta, self.queue) == (&other.key, &other.reta, other.queue)
    }
}

impl Eq for Steering {}

impl Steering {
    /// `key` as the device hashes with (at least 16 bytes), `reta` its
    /// redirection table (entry `hash % len` names the queue; a power of two
    /// long on every NIC we know, any non-zero length works here), and this
    /// core's `queue`.
    ///
    /// # Panics
    /// If the key is shorter than 16 bytes.
    pub fn new(key: Vec<u8>, reta: Vec<u16>, queue: u16) -> Steering {
        let mut table = Box::new([[0u32; 256]; 12]);
        for (i, row) in table.iter_mut().enumerate() {
            let mut input = [0u8; 12];
            for bit in 0..8 {
                input[i] = 0x80 >> bit;
                let h = toeplitz(&key, &input);
                for (b, slot) in row.iter_mut().enumerate() {
                    if b & (0x80 >> bit) != 0 {
                        *slot ^= h;
                    }
                }
            }
        }
        Steering {
            key,
            reta,
            queue,
            table: Arc::from(table),
        }
    }

    /// The default key and the round-robin table DPDK sets up for `queues`
    /// queues (entry i → queue i mod n), of `reta_size` entries.
    pub fn round_robin(queues: u16, reta_size: usize, queue: u16) -> Steering {
        Self::with_key(DEFAULT_KEY.to_vec(), queues, reta_size, queue)
    }

    /// Round robin over `queues` queues with another key.
    pub fn with_key(key: Vec<u8>, queues: u16, reta_size: usize, queue: u16) -> Steering {
        let reta = (0..reta_size)
            .map(|i| (i % usize::from(queues.max(1))) as u16)
            .collect();
        Steering::new(key, reta, queue)
    }

    /// This core's queue.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// Queues the table spreads over (the highest named, plus one).
    pub fn queues(&self) -> u16 {
        self.reta.iter().max().map_or(1, |&q| q + 1)
    }

    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The hash of a packet from `src` to `dst`, equal to
    /// [`hash_v4_tcp`] under this key.
    #[inline]
    pub fn hash(&self, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> u32 {
        let mut input = [0u8; 12];
        input[0..4].copy_from_slice(&src.0.octets());
        input[4..8].copy_from_slice(&dst.0.octets());
        input[8..10].copy_from_slice(&src.1.to_be_bytes());
        input[10..12].copy_from_slice(&dst.1.to_be_bytes());
        input
            .iter()
            .zip(self.table.iter())
            .fold(0, |h, (&b, row)| h ^ row[usize::from(b)])
    }

    /// The queue a packet from `remote` to `local` arrives on.
    #[inline]
    pub fn queue_of(&self, remote: (Ipv4Addr, u16), local: (Ipv4Addr, u16)) -> u16 {
        if self.reta.is_empty() {
            return 0;
        }
        self.reta[self.hash(remote, local) as usize % self.reta.len()]
    }

    /// Whether such a packet lands on this core's queue.
    #[inline]
    pub fn is_ours(&self, remote: (Ipv4Addr, u16), local: (Ipv4Addr, u16)) -> bool {
        self.queue_of(remote, local) == self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Endpoint = (Ipv4Addr, u16);

    /// Microsoft's "Verifying the RSS Hash Calculation" table: destination,
    /// source, IPv4-only hash, IPv4-with-TCP hash.
    const VECTORS: [(Endpoint, Endpoint, u32, u32); 5] = [
        (
            (Ipv4Addr::new(161, 142, 100, 80), 1766),
            (Ipv4Addr::new(66, 9, 149, 187), 2794),
            0x323e8fc2,
            0x51ccc178,
        ),
        (
            (Ipv4Addr::new(65, 69, 140, 83), 4739),
            (Ipv4Addr::new(199, 92, 111, 2), 14230),
            0xd718262a,
            0xc626b0ea,
        ),
        (
            (Ipv4Addr::new(12, 22, 207, 184), 38024),
            (Ipv4Addr::new(24, 19, 198, 95), 12898),
            0xd2d0a5de,
            0x5c2b394a,
        ),
        (
            (Ipv4Addr::new(209, 142, 163, 6), 2217),
            (Ipv4Addr::new(38, 27, 205, 30), 48228),
            0x82989176,
            0xafc7327f,
        ),
        (
            (Ipv4Addr::new(202, 188, 127, 2), 1303),
            (Ipv4Addr::new(153, 39, 163, 191), 44251),
            0x5d1809c5,
            0x10e828a2,
        ),
    ];

    #[test]
    fn toeplitz_matches_the_published_verification_table() {
        for (dst, src, ip_only, with_tcp) in VECTORS {
            let mut addrs = [0u8; 8];
            addrs[..4].copy_from_slice(&src.0.octets());
            addrs[4..].copy_from_slice(&dst.0.octets());
            assert_eq!(
                toeplitz(&DEFAULT_KEY, &addrs),
                ip_only,
                "{src:?} -> {dst:?}"
            );
            assert_eq!(
                hash_v4_tcp(&DEFAULT_KEY, src, dst),
                with_tcp,
                "{src:?} -> {dst:?}"
            );
        }
    }

    #[test]
    fn queues_follow_the_redirection_table() {
        let s = Steering::round_robin(4, 128, 2);
        let (dst, src, _, h) = VECTORS[0];
        assert_eq!(s.queue_of(src, dst), (h % 128 % 4) as u16);
        let mut seen = [0u32; 4];
        for port in 1024..5120u16 {
            seen[usize::from(s.queue_of(src, (dst.0, port)))] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 700),
            "ports spread over queues: {seen:?}"
        );
    }

    #[test]
    fn the_table_hash_equals_the_bitwise_one() {
        let key: Vec<u8> = (0..40u8)
            .map(|i| i.wrapping_mul(97).wrapping_add(13))
            .collect();
        let s = Steering::with_key(key.clone(), 2, 128, 0);
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let src = (Ipv4Addr::from(x as u32), (x >> 32) as u16);
            let dst = (Ipv4Addr::from((x >> 16) as u32), (x >> 48) as u16);
            assert_eq!(s.hash(src, dst), hash_v4_tcp(&key, src, dst));
        }
        let d = Steering::round_robin(4, 128, 0);
        for (dst, src, _, with_tcp) in VECTORS {
            assert_eq!(d.hash(src, dst), with_tcp);
        }
        assert_eq!(d.queues(), 4);
    }
}
