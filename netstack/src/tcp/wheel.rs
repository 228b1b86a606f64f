//! A hashed timing wheel: O(1) insert, expiry proportional to the slots
//! passed and the entries found, whatever the number of idle timers.

use crate::Instant;

/// Timers of `T`, at `tick_us` resolution over `slots` slots. Deadlines
/// further out than one turn stay in their slot until their turn comes.
#[derive(Debug)]
pub struct Wheel<T> {
    slots: Vec<Vec<(u64, T)>>,
    tick_us: u64,
    /// Next tick not yet expired.
    cursor: u64,
    len: usize,
}

impl<T: Copy> Wheel<T> {
    pub fn new(slots: usize, tick_us: u64, now: Instant) -> Wheel<T> {
        let slots = slots.next_power_of_two();
        Wheel {
            slots: (0..slots).map(|_| Vec::new()).collect(),
            tick_us,
            cursor: now.as_micros() / tick_us,
            len: 0,
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn slot(&self, tick: u64) -> usize {
        (tick as usize) & (self.slots.len() - 1)
    }

    /// Fire `item` at `at` (rounded up to the tick; past deadlines fire on the
    /// next `expire`).
    pub fn insert(&mut self, at: Instant, item: T) {
        let tick = at.as_micros().div_ceil(self.tick_us).max(self.cursor);
        let s = self.slot(tick);
        self.slots[s].push((tick, item));
        self.len += 1;
    }

    /// Move to `now`, handing every due item to `fire`.
    pub fn expire(&mut self, now: Instant, mut fire: impl FnMut(T)) {
        let end = now.as_micros() / self.tick_us;
        // Never walk more than one turn: past that every slot was visited.
        let start = self
            .cursor
            .max(end.saturating_sub(self.slots.len() as u64 - 1));
        for tick in start..=end {
            let s = self.slot(tick);
            let bucket = &mut self.slots[s];
            let mut i = 0;
            while i < bucket.len() {
                if bucket[i].0 <= end {
                    let (_, item) = bucket.swap_remove(i);
                    self.len -= 1;
                    fire(item);
                } else {
                    i += 1;
                }
            }
        }
        self.cursor = end + 1;
    }

    /// The earliest tick that holds a timer, as an instant (a scan of at most
    /// one turn of slots; the worker ticks instead of asking).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.len == 0 {
            return None;
        }
        let n = self.slots.len() as u64;
        let mut best: Option<u64> = None;
        for tick in self.cursor..self.cursor + n {
            for (t, _) in &self.slots[self.slot(tick)] {
                best = Some(best.map_or(*t, |b| b.min(*t)));
            }
            if let Some(b) = best
                && b <= tick
            {
                break;
            }
        }
        best.map(|t| Instant::from_micros(t * self.tick_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_and_beyond_one_turn() {
        let mut w = Wheel::new(8, 1000, Instant::ZERO);
        w.insert(Instant::from_millis(3), 3);
        w.insert(Instant::from_millis(20), 20); // 2.5 turns out
        w.insert(Instant::from_millis(1), 1);
        assert_eq!(w.next_deadline(), Some(Instant::from_millis(1)));
        let mut got = Vec::new();
        w.expire(Instant::from_millis(5), |x| got.push(x));
        assert_eq!(got, vec![1, 3]);
        assert_eq!(w.next_deadline(), Some(Instant::from_millis(20)));
        w.expire(Instant::from_millis(12), |x| got.push(x));
        assert_eq!(
            got,
            vec![1, 3],
            "slot 20%8 was passed at tick 12 but 20 is not due"
        );
        w.expire(Instant::from_millis(100), |x| got.push(x));
        assert_eq!(got, vec![1, 3, 20]);
        assert!(w.is_empty());
        w.insert(Instant::from_millis(50), 9); // in the past: next expire
        w.expire(Instant::from_millis(101), |x| got.push(x));
        assert_eq!(got.last(), Some(&9));
    }
}
