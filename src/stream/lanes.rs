//! Event-time progress per input lane: a source whose events arrive in several independently
//! ordered streams (Kafka partitions) tags each batch with how far every one of its lanes got,
//! and the queries over raw events advance their watermark with the slowest lane that is still
//! delivering, not with the largest event time over all of them (as Flink's per-partition
//! watermarks and Arroyo's per-subtask watermarks do).
//!
//! Without this, one instance reading a lagging partition (a backlog after a restart, a slow
//! producer) next to an up-to-date one would close windows with the fast partition's event time
//! and count the lagging partition's events as late. A lane that delivered nothing for the
//! query's `idle_timeout_ms` stops holding the watermark back (an empty or stopped partition
//! must not stall every window); a lane assigned but not read yet holds it from the moment it is
//! announced, for at most that long. Batches without lanes (HTTP) do not bound the watermark.

use std::collections::HashMap;
use std::sync::Arc;

/// How far one lane got in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneMark {
    /// The lane, e.g. `llm-events/3` (topic and partition).
    pub lane: Arc<str>,
    /// The largest event time of the lane's events in the batch (µs); `None` announces a lane
    /// assigned to this instance that delivered nothing in it.
    pub max_event_us: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
struct Lane {
    /// Largest event time seen on the lane (µs); `None` until it delivers.
    max_event_us: Option<i64>,
    /// When the lane last delivered or was first announced (the engine's clock, µs).
    last_input_us: i64,
}

/// Lanes forgotten after this long without input (a partition revoked long ago).
const FORGET_AFTER_US: i64 = 3_600_000_000;

/// The lanes seen by the engine.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<Arc<str>, Lane>,
}

impl Lanes {
    /// Takes a batch's marks, observed at `now_us` (before the batch runs through the queries).
    pub fn observe(&mut self, marks: &[LaneMark], now_us: i64) {
        for mark in marks {
            let lane = self.lanes.entry(Arc::clone(&mark.lane)).or_insert(Lane {
                max_event_us: None,
                last_input_us: now_us,
            });
            // An announcement (`None`) never refreshes a known lane: an empty partition
            // announced with every batch must still go idle.
            if let Some(t) = mark.max_event_us {
                lane.max_event_us = Some(lane.max_event_us.map_or(t, |m| m.max(t)));
                lane.last_input_us = now_us;
            }
        }
        self.lanes
            .retain(|_, lane| now_us.saturating_sub(lane.last_input_us) < FORGET_AFTER_US);
    }

    /// The event time no query over raw events may advance past, and the lane setting it: the
    /// smallest progress of the lanes that had input within `idle_us` (a lane announced but not
    /// read yet: `i64::MIN`). `None` when no lane is active.
    pub fn bound(&self, now_us: i64, idle_us: i64) -> Option<(i64, Arc<str>)> {
        self.lanes
            .iter()
            .filter(|(_, lane)| now_us.saturating_sub(lane.last_input_us) < idle_us)
            .map(|(name, lane)| (lane.max_event_us.unwrap_or(i64::MIN), Arc::clone(name)))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn mark(lane: &str, t: Option<i64>) -> LaneMark {
        LaneMark {
            lane: lane.into(),
            max_event_us: t,
        }
    }

    #[test]
    fn the_slowest_active_lane_bounds_event_time() {
        let mut lanes = Lanes::default();
        assert_eq!(lanes.bound(0, 10 * S), None, "no lanes: no bound");
        lanes.observe(&[mark("t/0", Some(600 * S)), mark("t/1", None)], 0);
        assert_eq!(
            lanes.bound(0, 10 * S),
            Some((i64::MIN, "t/1".into())),
            "announced, not read yet"
        );
        lanes.observe(&[mark("t/1", Some(30 * S))], S);
        assert_eq!(lanes.bound(S, 10 * S), Some((30 * S, "t/1".into())));
        // Only later marks move a lane forward.
        lanes.observe(&[mark("t/1", Some(20 * S))], 2 * S);
        assert_eq!(lanes.bound(2 * S, 10 * S), Some((30 * S, "t/1".into())));
        lanes.observe(&[mark("t/1", Some(900 * S))], 3 * S);
        assert_eq!(
            lanes.bound(3 * S, 10 * S),
            Some((600 * S, "t/0".into())),
            "t/0 is now the slowest"
        );
    }

    #[test]
    fn an_idle_lane_stops_holding_and_an_announcement_does_not_wake_it() {
        let mut lanes = Lanes::default();
        lanes.observe(&[mark("t/0", Some(600 * S)), mark("t/1", None)], 0);
        // t/0 keeps delivering, t/1 is announced with every batch but never delivers.
        for s in 1..=12 {
            lanes.observe(&[mark("t/0", Some((600 + s) * S)), mark("t/1", None)], s * S);
        }
        assert_eq!(
            lanes.bound(12 * S, 10 * S),
            Some((612 * S, "t/0".into())),
            "t/1 idle for 12 s"
        );
        assert_eq!(
            lanes.bound(12 * S, 20 * S),
            Some((i64::MIN, "t/1".into())),
            "a longer idle timeout still waits"
        );
        // Once every lane is idle there is no bound (the query's own idle advance takes over).
        assert_eq!(lanes.bound(30 * S, 10 * S), None);
    }

    #[test]
    fn lanes_silent_for_an_hour_are_forgotten() {
        let mut lanes = Lanes::default();
        lanes.observe(&[mark("t/0", Some(S))], 0);
        lanes.observe(&[mark("t/1", Some(S))], FORGET_AFTER_US + 1);
        assert_eq!(lanes.lanes.len(), 1);
        assert!(lanes.lanes.contains_key("t/1"));
    }
}
