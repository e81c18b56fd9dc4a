//! The state of each (rule, group): `pending → firing → resolved`, advanced window by window in
//! event time. Pure: time comes in as the window's end, so replays and tests are exact.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A group breaching in one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    /// The group's identity: `col=value` pairs joined by `,` (sorted by column).
    pub key: String,
    /// The group's columns and values.
    pub labels: BTreeMap<String, String>,
    /// The measured value.
    pub value: Option<f64>,
    /// What the condition found (anomaly score and kind, budget share).
    pub detail: String,
}

/// Where a group is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Breaching, not yet for `for`.
    Pending,
    /// Breaching for at least `for`; a `firing` notification went out.
    Firing,
}

/// A group's current state.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupState {
    /// Pending or firing.
    pub phase: Phase,
    /// Event time the group started breaching (µs).
    pub since_us: i64,
    /// Last breach seen.
    pub last: Breach,
}

/// A change to report: a group started firing or stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// `firing` or `resolved`.
    pub state: &'static str,
    /// Event time of the window that caused it (its end, µs).
    pub at_us: i64,
    /// When the group started breaching.
    pub since_us: i64,
    /// The breach (for `resolved`, the last one seen).
    pub breach: Breach,
}

/// The states of one rule's groups.
#[derive(Debug, Clone, Default)]
pub struct RuleState {
    groups: HashMap<String, GroupState>,
}

impl RuleState {
    /// Restores a group found firing in the transition log.
    pub fn restore_firing(&mut self, since_us: i64, breach: Breach) {
        self.groups.insert(
            breach.key.clone(),
            GroupState {
                phase: Phase::Firing,
                since_us,
                last: breach,
            },
        );
    }

    /// Drops a group (found resolved in the transition log).
    pub fn forget(&mut self, key: &str) {
        self.groups.remove(key);
    }

    /// The groups that are pending or firing.
    pub fn groups(&self) -> impl Iterator<Item = &GroupState> {
        self.groups.values()
    }

    /// Advances with one window ending at `at_us` in which `breaches` breached; a group must
    /// breach for `for_us` of event time before it fires. Returns the transitions, firing ones
    /// first, each group's at most once.
    pub fn observe(&mut self, at_us: i64, for_us: i64, breaches: Vec<Breach>) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for breach in breaches {
            if !seen.insert(breach.key.clone()) {
                continue;
            }
            match self.groups.get_mut(&breach.key) {
                None => {
                    // Breaching since the start of this window's evaluation.
                    let mut state = GroupState {
                        phase: Phase::Pending,
                        since_us: at_us,
                        last: breach.clone(),
                    };
                    if for_us == 0 {
                        state.phase = Phase::Firing;
                        changes.push(Change {
                            state: "firing",
                            at_us,
                            since_us: at_us,
                            breach: breach.clone(),
                        });
                    }
                    self.groups.insert(breach.key.clone(), state);
                }
                Some(state) => {
                    state.last = breach.clone();
                    if state.phase == Phase::Pending && at_us - state.since_us >= for_us {
                        state.phase = Phase::Firing;
                        changes.push(Change {
                            state: "firing",
                            at_us,
                            since_us: state.since_us,
                            breach,
                        });
                    }
                }
            }
        }
        let stopped: Vec<String> = self.groups.keys().filter(|k| !seen.contains(*k)).cloned().collect();
        for key in stopped {
            if let Some(state) = self.groups.remove(&key)
                && state.phase == Phase::Firing
            {
                changes.push(Change {
                    state: "resolved",
                    at_us,
                    since_us: state.since_us,
                    breach: state.last,
                });
            }
        }
        changes
    }
}

/// `col=value` pairs as a group key.
pub fn group_key(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breach(model: &str) -> Breach {
        let labels = BTreeMap::from([("model".to_string(), model.to_string())]);
        Breach {
            key: group_key(&labels),
            labels,
            value: Some(1.0),
            detail: String::new(),
        }
    }

    const MIN: i64 = 60_000_000;

    #[test]
    fn a_group_fires_once_and_resolves_once() {
        let mut s = RuleState::default();
        let c = s.observe(MIN, 0, vec![breach("a")]);
        assert_eq!(c.iter().map(|c| c.state).collect::<Vec<_>>(), ["firing"]);
        // Still breaching: nothing new.
        assert!(s.observe(2 * MIN, 0, vec![breach("a")]).is_empty());
        let c = s.observe(3 * MIN, 0, vec![breach("b")]);
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].state, c[0].breach.key.as_str()), ("firing", "model=b"));
        assert_eq!(
            (c[1].state, c[1].breach.key.as_str(), c[1].since_us),
            ("resolved", "model=a", MIN)
        );
        assert!(s.observe(4 * MIN, 0, vec![breach("b")]).is_empty());
    }

    #[test]
    fn a_group_fires_only_after_breaching_for_the_duration() {
        let mut s = RuleState::default();
        assert!(s.observe(MIN, 2 * MIN, vec![breach("a")]).is_empty());
        assert!(s.observe(2 * MIN, 2 * MIN, vec![breach("a")]).is_empty());
        let c = s.observe(3 * MIN, 2 * MIN, vec![breach("a")]);
        assert_eq!((c[0].state, c[0].since_us, c[0].at_us), ("firing", MIN, 3 * MIN));
        // A pending group that stops breaching leaves without a notification.
        assert!(s.observe(4 * MIN, 2 * MIN, vec![breach("a"), breach("b")]).is_empty());
        let c = s.observe(5 * MIN, 2 * MIN, vec![]);
        assert_eq!(c.iter().map(|c| c.state).collect::<Vec<_>>(), ["resolved"]);
        assert_eq!(c[0].breach.key, "model=a");
    }

    #[test]
    fn a_restored_firing_group_does_not_fire_again() {
        let mut s = RuleState::default();
        s.restore_firing(MIN, breach("a"));
        assert!(s.observe(2 * MIN, 0, vec![breach("a")]).is_empty());
        assert_eq!(s.observe(3 * MIN, 0, vec![]).len(), 1);
    }
}
