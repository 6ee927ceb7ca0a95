//! List totals, cached briefly. Counting every match of a broad filter costs more than fetching
//! the page itself (tens of thousands of rows against 25), and a list's total does not need to be
//! exact to the millisecond. Writes through this gateway invalidate the cache at once; writes
//! through other gateways show up within [`TTL`].

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

pub const TTL: Duration = Duration::from_secs(5);
/// Distinct filters remembered at most; past that the cache starts over.
const CAPACITY: usize = 10_000;

#[derive(Default)]
pub struct LeadCounts {
    generation: AtomicU64,
    entries: Mutex<HashMap<String, (Instant, u64, i64)>>,
}

impl LeadCounts {
    /// Call after any change to leads (create, update, delete, owner change).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The current generation: read it before counting and hand it to [`LeadCounts::put`], so a
    /// write that lands while the count runs is not hidden behind a fresh-looking stale total.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// A fresh total for `key`, if there is one. When the total has only aged out (no write since),
    /// the first caller to notice gets `None` and recounts, while the entry is re-stamped so that
    /// concurrent callers keep using the old total meanwhile instead of all counting at once.
    pub fn get(&self, key: &str) -> Option<i64> {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (at, seen, total) = entries.get_mut(key)?;
        if *seen != generation {
            return None;
        }
        if at.elapsed() < TTL {
            return Some(*total);
        }
        *at = Instant::now();
        None
    }

    pub fn put(&self, key: String, generation: u64, total: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), generation, total));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_invalidates_what_was_counted_before_it() {
        let counts = LeadCounts::default();
        let generation = counts.generation();
        counts.put("status=new".into(), generation, 7);
        assert_eq!(counts.get("status=new"), Some(7));
        counts.invalidate();
        assert_eq!(counts.get("status=new"), None);

        let before = counts.generation();
        counts.invalidate(); // a write lands while the count runs
        counts.put("status=new".into(), before, 8);
        assert_eq!(
            counts.get("status=new"),
            None,
            "a count older than a write is not served"
        );
    }
}
