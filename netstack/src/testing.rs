//! Test support for other crates (feature `testing`): an in-memory link
//! that drops, duplicates, reorders and delays what crosses it by seed, on
//! virtual time, and seeded payload. The TCP simulations use it, and so do
//! the proxy's tests, which join several engines with it.

use std::collections::BTreeMap;

use crate::Instant;

/// xorshift64*: small, seeded, good enough for impairment decisions.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value. (Not an `Iterator`: it never ends, and the sims call
    /// it by this name.)
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 10_000.0 < pct
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Impair {
    pub drop_pct: f64,
    pub dup_pct: f64,
    /// Chance of an extra random delay (up to `reorder_us`), reordering it.
    pub reorder_pct: f64,
    pub reorder_us: u64,
    pub delay_us: u64,
    /// Drop exactly these data segments (by count of data-carrying segments
    /// sent from side 0), whatever the percentages say.
    pub drop_nth_data: Vec<u64>,
}

/// The in-memory link between side 0 and side 1, carrying `T`.
#[derive(Debug)]
pub struct Link<T> {
    rng: Rng,
    pub imp: Impair,
    /// (deliver at µs, id) -> (to side, item)
    queue: BTreeMap<(u64, u64), (usize, T)>,
    id: u64,
    data_from_0: u64,
}

impl<T: Clone> Link<T> {
    pub fn new(seed: u64, imp: Impair) -> Link<T> {
        Link {
            rng: Rng(seed | 1),
            imp,
            queue: BTreeMap::new(),
            id: 0,
            data_from_0: 0,
        }
    }

    /// Send `item` from side `from`; `data` says whether it carries payload.
    pub fn send_item(&mut self, now: Instant, from: usize, item: T, data: bool) {
        if from == 0 && data {
            self.data_from_0 += 1;
            if self.imp.drop_nth_data.contains(&self.data_from_0) {
                return;
            }
        }
        if self.rng.chance(self.imp.drop_pct) {
            return;
        }
        let copies = if self.rng.chance(self.imp.dup_pct) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = now.as_micros() + self.imp.delay_us;
            if self.rng.chance(self.imp.reorder_pct) {
                at += self.rng.below(self.imp.reorder_us);
            }
            self.id += 1;
            self.queue.insert((at, self.id), (1 - from, item.clone()));
        }
    }

    pub fn next_at(&self) -> Option<Instant> {
        self.queue
            .keys()
            .next()
            .map(|(t, _)| Instant::from_micros(*t))
    }

    pub fn due(&mut self, now: Instant) -> Vec<(usize, T)> {
        let mut out = Vec::new();
        while let Some(e) = self.queue.first_entry() {
            if e.key().0 > now.as_micros() {
                break;
            }
            out.push(e.remove());
        }
        out
    }
}

/// Pseudo-random payload, deterministic per seed.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    (0..len).map(|_| r.next() as u8).collect()
}

/// Run every input of a saved cargo-fuzz corpus (`dir`, one file per
/// input) through `run`, the fuzz target's body; a panic names the input.
/// Returns how many there were.
pub fn replay_fuzz_corpus(dir: &std::path::Path, run: fn(&[u8])) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("{} fails", path.display());
        }
        n += 1;
    }
    n
}
