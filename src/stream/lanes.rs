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
//!
//! The lanes outlive a restart: the engine saves them (`lanes.json` beside the queries, at most
//! once a second while they move, and at shutdown) and restores them before the first tick
//! after the replay. A restored lane holds the watermark at its saved progress until the source
//! delivers its first batch after the restart (or [`RESTORED_WAIT_US`] has passed), then for the
//! query's idle timeout like any lane: a partition that was behind before the restart is still
//! behind after it, and its next events are not late because the replay of the faster
//! partitions moved event time on. A lost or stale file only holds event time earlier.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    /// When the lane last delivered or was first announced (the engine's clock, µs); for a
    /// lane restored after a restart, until the source's first batch, the end of its wait.
    last_input_us: i64,
    /// Restored after a restart, and the source has not delivered since.
    restored: bool,
}

/// Lanes forgotten after this long without input (a partition revoked long ago).
const FORGET_AFTER_US: i64 = 3_600_000_000;

/// How long restored lanes wait for the source's first batch after a restart (a Kafka consumer
/// joining its group) before their idle timeout starts anyway.
pub const RESTORED_WAIT_US: i64 = 60_000_000;

/// A lane as saved across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedLane {
    /// The lane's name.
    pub lane: String,
    /// Its progress (µs), `None` if it had delivered nothing.
    pub max_event_us: Option<i64>,
}

/// The file the lanes are saved in, in the engine's directory.
const FILE: &str = "lanes.json";

/// The lanes saved in `dir`; none when there is no file, or it cannot be read (logged: event
/// time then follows the replay, as before lanes were saved).
pub fn load(dir: &std::path::Path) -> Vec<SavedLane> {
    let path = dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "reading the saved input lanes failed; starting without them");
            return Vec::new();
        }
    };
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "the saved input lanes do not parse; starting without them");
        Vec::new()
    })
}

/// Saves `lanes` in `dir` (replaced whole: a crash leaves the old file or the new one; a lost
/// update only makes the restored lanes hold event time earlier).
pub fn save(dir: &std::path::Path, lanes: &Lanes) -> std::io::Result<()> {
    let path = dir.join(FILE);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&lanes.saved()).map_err(std::io::Error::other)?)?;
    std::fs::rename(&tmp, &path)
}

/// The lanes seen by the engine.
#[derive(Debug, Default)]
pub struct Lanes {
    lanes: HashMap<Arc<str>, Lane>,
    /// Bumped whenever a lane's progress or the set of lanes changes (what is saved).
    version: u64,
}

impl Lanes {
    /// Lanes saved before a restart, restored at `now_us`: each holds at its saved progress
    /// until the source's first batch (at most [`RESTORED_WAIT_US`]), then like any lane.
    pub fn restore(saved: Vec<SavedLane>, now_us: i64) -> Self {
        let lanes = saved
            .into_iter()
            .map(|s| {
                let lane = Lane {
                    max_event_us: s.max_event_us,
                    last_input_us: now_us.saturating_add(RESTORED_WAIT_US),
                    restored: true,
                };
                (Arc::from(s.lane), lane)
            })
            .collect();
        Self { lanes, version: 0 }
    }

    /// What to save: every lane and its progress.
    pub fn saved(&self) -> Vec<SavedLane> {
        let mut saved: Vec<SavedLane> = self
            .lanes
            .iter()
            .map(|(name, lane)| SavedLane {
                lane: name.to_string(),
                max_event_us: lane.max_event_us,
            })
            .collect();
        saved.sort_by(|a, b| a.lane.cmp(&b.lane));
        saved
    }

    /// Changes so far (compare to decide whether to save).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Takes a batch's marks, observed at `now_us` (before the batch runs through the queries).
    pub fn observe(&mut self, marks: &[LaneMark], now_us: i64) {
        if !marks.is_empty() {
            // The source is up: restored lanes now wait their idle timeout like the others.
            for lane in self.lanes.values_mut().filter(|l| l.restored) {
                lane.restored = false;
                lane.last_input_us = now_us;
            }
        }
        let before = self.lanes.len();
        for mark in marks {
            let lane = self.lanes.entry(Arc::clone(&mark.lane)).or_insert(Lane {
                max_event_us: None,
                last_input_us: now_us,
                restored: false,
            });
            // An announcement (`None`) never refreshes a known lane: an empty partition
            // announced with every batch must still go idle.
            if let Some(t) = mark.max_event_us {
                if lane.max_event_us.is_none_or(|m| t > m) {
                    lane.max_event_us = Some(t);
                    self.version += 1;
                }
                lane.last_input_us = now_us;
            }
        }
        self.lanes
            .retain(|_, lane| now_us.saturating_sub(lane.last_input_us) < FORGET_AFTER_US);
        if self.lanes.len() != before {
            self.version += 1;
        }
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
    fn restored_lanes_hold_until_the_source_is_back_then_go_idle_like_any() {
        let mut before = Lanes::default();
        before.observe(&[mark("t/0", Some(600 * S)), mark("t/1", Some(30 * S))], 0);
        let saved = before.saved();
        assert_eq!(
            saved,
            vec![
                SavedLane {
                    lane: "t/0".into(),
                    max_event_us: Some(600 * S)
                },
                SavedLane {
                    lane: "t/1".into(),
                    max_event_us: Some(30 * S)
                },
            ]
        );
        let restart = 100 * S;
        let mut lanes = Lanes::restore(saved.clone(), restart);
        // The source takes longer than the idle timeout to come back: still held.
        assert_eq!(lanes.bound(restart + 20 * S, 10 * S), Some((30 * S, "t/1".into())));
        // Without a source for RESTORED_WAIT_US, the lanes go idle after their timeout.
        let gone = Lanes::restore(saved, restart);
        assert_eq!(gone.bound(restart + RESTORED_WAIT_US + 10 * S, 10 * S), None);
        // The source delivers partition 0 only (partition 1 moved to another instance): 1 is
        // idle 10 s after that batch, not 10 s after the restart.
        let back = restart + 25 * S;
        let v = lanes.version();
        lanes.observe(&[mark("t/0", Some(601 * S))], back);
        assert!(lanes.version() > v, "progress is something to save");
        assert_eq!(lanes.bound(back + 9 * S, 10 * S), Some((30 * S, "t/1".into())));
        assert_eq!(lanes.bound(back + 11 * S, 10 * S), None, "t/0 idle too by then");
        lanes.observe(&[mark("t/0", Some(602 * S))], back + 11 * S);
        assert_eq!(lanes.bound(back + 11 * S, 10 * S), Some((602 * S, "t/0".into())));
        let v = lanes.version();
        lanes.observe(&[mark("t/0", Some(500 * S)), mark("t/0", None)], back + 12 * S);
        assert_eq!(lanes.version(), v, "no progress, nothing new to save");
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
