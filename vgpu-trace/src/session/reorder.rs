//! Events from different CPUs reach the ring buffer slightly out of timestamp order. They
//! wait here briefly and leave in kernel-timestamp order.
use std::{cmp::Reverse, collections::BinaryHeap};

use crate::event::RawEvent;

struct Entry {
    ts_ns: u64,
    seq: u64,
    event: RawEvent,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.ts_ns, self.seq) == (other.ts_ns, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.ts_ns, self.seq).cmp(&(other.ts_ns, other.seq))
    }
}

#[derive(Default)]
pub struct Reorder {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Reorder {
    pub fn push(&mut self, event: RawEvent) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            ts_ns: event.ts_ns,
            seq: self.seq,
            event,
        }));
    }

    /// Events stamped at or before `watermark`, oldest first (equal stamps in arrival order).
    pub fn release(&mut self, watermark: u64) -> Vec<RawEvent> {
        let mut out = Vec::new();
        while self
            .heap
            .peek()
            .is_some_and(|Reverse(e)| e.ts_ns <= watermark)
        {
            out.push(self.heap.pop().expect("peeked").0.event);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RawBody;

    fn ev(ts_ns: u64, tid: u32) -> RawEvent {
        RawEvent {
            ts_ns,
            tgid: 1,
            tid,
            body: RawBody::Fork { child_tgid: 2 },
        }
    }

    #[test]
    fn releases_in_timestamp_then_arrival_order() {
        let mut r = Reorder::default();
        for (ts, tid) in [(30, 1), (10, 2), (20, 3), (10, 4), (50, 5)] {
            r.push(ev(ts, tid));
        }
        let tids: Vec<_> = r.release(30).iter().map(|e| e.tid).collect();
        assert_eq!(tids, vec![2, 4, 3, 1]);
        assert_eq!(r.release(u64::MAX).len(), 1);
    }
}
