//! Events from different CPUs reach the ring buffer slightly out of timestamp order. They
//! wait here briefly and leave in kernel-timestamp order (equal stamps in arrival order).
//! They arrive nearly sorted, so a sorted deque that takes most of them at its back moves
//! less than a heap would.
use std::collections::VecDeque;

use crate::event::RawEvent;

#[derive(Default)]
pub struct Reorder {
    queue: VecDeque<RawEvent>,
}

impl Reorder {
    pub fn push(&mut self, event: RawEvent) {
        let ts = event.ts_ns;
        if self.queue.back().is_none_or(|last| last.ts_ns <= ts) {
            self.queue.push_back(event);
            return;
        }
        // After every event stamped at or before it: arrival order among equals.
        let at = self.queue.partition_point(|e| e.ts_ns <= ts);
        self.queue.insert(at, event);
    }

    /// Events stamped at or before `watermark`, oldest first.
    pub fn release(&mut self, watermark: u64) -> impl Iterator<Item = RawEvent> + '_ {
        let n = self.queue.partition_point(|e| e.ts_ns <= watermark);
        self.queue.drain(..n)
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
        let tids: Vec<_> = r.release(30).map(|e| e.tid).collect();
        assert_eq!(tids, vec![2, 4, 3, 1]);
        assert_eq!(r.release(u64::MAX).count(), 1);
    }
}
