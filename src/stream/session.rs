//! State of session windows. The plan's partial aggregate yields one accumulator-state row per
//! (gap-sized bucket, key) with the bucket's first and last event time (the hidden
//! `min`/`max` aggregates). Here those rows are merged into sessions per key: a row joins every
//! session it comes within `gap` of, so an event between two sessions merges them, and merging
//! sessions is merging their state rows (`PartialReduce`). A session `[first, last]` closes when
//! the watermark reaches `last + gap`; its rows then go through the `Final` aggregate with
//! `window_start = first` and `window_end = last + gap`. State is bounded by open sessions.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use super::CqError;
use super::fixed::{COMPACT_AT, Produced};
use super::keys::{Key, KeyCodec};
use super::plan::CqPlan;

/// One open session of one key.
#[derive(Debug, Default)]
pub struct Session {
    first: i64,
    last: i64,
    batches: Vec<RecordBatch>,
    /// `window_start`s under which this session (or sessions merged into it) has a row in the
    /// output (updating mode): rows to retract when the start moves.
    emitted: Vec<i64>,
}

/// Where the columns the session logic reads sit in state rows.
#[derive(Debug, Clone)]
pub struct SessionColumns {
    /// `window_start` group column.
    pub window_start: usize,
    /// `window_end` group column.
    pub window_end: usize,
    /// State column of `min(event time)`.
    pub first: usize,
    /// State column of `max(event time)`.
    pub last: usize,
    /// Group columns that form the key.
    pub keys: Vec<usize>,
}

/// Sessions being finalized: their state rows (window columns set to the session's bounds) and
/// their identities for settling updating output.
#[derive(Debug, Default)]
pub struct Finalizing {
    /// State rows to finalize.
    pub states: Vec<RecordBatch>,
    /// (key, first, starts emitted before) of each session.
    pub sessions: Vec<(Key, i64, Vec<i64>)>,
}

/// Open sessions of every key.
#[derive(Debug)]
pub struct SessionWindows {
    gap: i64,
    cols: SessionColumns,
    sessions: HashMap<Key, BTreeMap<i64, Session>>,
    /// (close time = last + gap, key, first) of every open session.
    deadlines: BTreeSet<(i64, Key, i64)>,
    /// (key, first) of sessions changed since the last emit (updating mode only).
    dirty: HashSet<(Key, i64)>,
    track: bool,
    /// Sessions closing at or before this were already emitted before a restart.
    pub suppress_until: Option<i64>,
}

fn times(batch: &RecordBatch, idx: usize) -> Result<TimestampMicrosecondArray, CqError> {
    batch
        .column(idx)
        .as_primitive_opt::<TimestampMicrosecondType>()
        .cloned()
        .ok_or_else(|| CqError::bug("session bounds are not timestamps"))
}

fn constant(value: i64, rows: usize) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from_value(value, rows).with_timezone("UTC"))
}

impl SessionWindows {
    /// No open sessions.
    pub fn new(gap: i64, cols: SessionColumns, track: bool) -> Self {
        Self {
            gap,
            cols,
            sessions: HashMap::new(),
            deadlines: BTreeSet::new(),
            dirty: HashSet::new(),
            track,
            suppress_until: None,
        }
    }

    /// Open sessions.
    pub fn open_count(&self) -> usize {
        self.deadlines.len()
    }

    /// Earliest first event time of any open session.
    pub fn open_since(&self) -> Option<i64> {
        self.sessions.values().filter_map(|m| m.keys().next().copied()).min()
    }

    /// Key columns of state rows.
    pub fn key_columns(&self) -> &[usize] {
        &self.cols.keys
    }

    /// Merges state rows (one per bucket and key) into the sessions of their keys.
    pub fn add(&mut self, state: &RecordBatch, codec: &KeyCodec) -> Result<(), CqError> {
        let keys = codec.encode(state, &self.cols.keys)?;
        let firsts = times(state, self.cols.first)?;
        let lasts = times(state, self.cols.last)?;
        for (i, key) in keys.into_iter().enumerate() {
            if firsts.is_null(i) || lasts.is_null(i) {
                return Err(CqError::bug("session bucket without event times"));
            }
            self.merge(key, firsts.value(i), lasts.value(i), state.slice(i, 1));
        }
        Ok(())
    }

    fn merge(&mut self, key: Key, first: i64, last: i64, row: RecordBatch) {
        let gap = self.gap;
        let map = self.sessions.entry(Arc::clone(&key)).or_default();
        // Sessions are disjoint and more than a gap apart, so the ones within a gap of
        // [first, last] are consecutive: those starting before last + gap, going back while
        // they end after first - gap.
        let touching: Vec<i64> = map
            .range(..last.saturating_add(gap))
            .rev()
            .take_while(|(_, s)| s.last > first.saturating_sub(gap))
            .map(|(f, _)| *f)
            .collect();
        let mut merged = Session {
            first,
            last,
            batches: Vec::new(),
            emitted: Vec::new(),
        };
        for f in touching {
            if let Some(s) = map.remove(&f) {
                self.deadlines.remove(&(s.last + gap, Arc::clone(&key), s.first));
                self.dirty.remove(&(Arc::clone(&key), s.first));
                merged.first = merged.first.min(s.first);
                merged.last = merged.last.max(s.last);
                merged.batches.extend(s.batches);
                merged.emitted.extend(s.emitted);
            }
        }
        merged.batches.push(row);
        self.deadlines
            .insert((merged.last + gap, Arc::clone(&key), merged.first));
        if self.track {
            self.dirty.insert((key, merged.first));
        }
        map.insert(merged.first, merged);
    }

    /// A session's state rows with `window_start` / `window_end` set to its bounds, so the
    /// merge and final aggregates treat them as one group.
    fn prepared(&self, s: &Session) -> Result<Vec<RecordBatch>, CqError> {
        s.batches
            .iter()
            .map(|b| {
                let mut columns = b.columns().to_vec();
                columns[self.cols.window_start] = constant(s.first, b.num_rows());
                columns[self.cols.window_end] = constant(s.last + self.gap, b.num_rows());
                RecordBatch::try_new(b.schema(), columns).map_err(CqError::internal)
            })
            .collect()
    }

    /// Merges the states of sessions holding many rows, all such sessions in one aggregation.
    pub async fn compact(&mut self, plan: &CqPlan, codec: &KeyCodec) -> Result<(), CqError> {
        let mut states = Vec::new();
        let mut due = 0;
        for s in self.sessions.values().flat_map(|m| m.values()) {
            if s.batches.len() >= COMPACT_AT {
                states.extend(self.prepared(s)?);
                due += 1;
            }
        }
        if due == 0 {
            return Ok(());
        }
        let reduced = plan.reduce(states).await?;
        let mut replaced: HashSet<(Key, i64)> = HashSet::new();
        for batch in reduced {
            let keys = codec.encode(&batch, &self.cols.keys)?;
            let starts = times(&batch, self.cols.window_start)?;
            for (i, key) in keys.into_iter().enumerate() {
                let first = starts.value(i);
                let Some(s) = self.sessions.get_mut(&key).and_then(|m| m.get_mut(&first)) else {
                    return Err(CqError::bug("compacted state of an unknown session"));
                };
                if replaced.insert((key, first)) {
                    s.batches.clear();
                }
                s.batches.push(batch.slice(i, 1));
            }
        }
        Ok(())
    }

    /// Removes every session the watermark has closed (last + gap <= watermark).
    pub fn take_due(&mut self, watermark: i64) -> Result<Finalizing, CqError> {
        let mut out = Finalizing::default();
        while let Some((end, key, first)) = self.deadlines.first().cloned() {
            if end > watermark {
                break;
            }
            self.deadlines.pop_first();
            self.dirty.remove(&(Arc::clone(&key), first));
            let Some(map) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(s) = map.remove(&first) else { continue };
            if map.is_empty() {
                self.sessions.remove(&key);
            }
            if self.suppress_until.is_some_and(|u| end <= u) {
                continue; // emitted before a restart
            }
            out.states.extend(self.prepared(&s)?);
            out.sessions.push((key, first, s.emitted));
        }
        Ok(out)
    }

    /// The states of every session that changed since the last call (updating mode).
    pub fn take_dirty(&mut self) -> Result<Finalizing, CqError> {
        let mut out = Finalizing::default();
        for (key, first) in std::mem::take(&mut self.dirty) {
            if let Some(s) = self.sessions.get_mut(&key).and_then(|m| m.get_mut(&first)) {
                let emitted = std::mem::take(&mut s.emitted);
                let s = &self.sessions[&key][&first];
                out.states.extend(self.prepared(s)?);
                out.sessions.push((key, first, emitted));
            }
        }
        Ok(out)
    }

    /// After emitting: returns the (start, key) rows to retract (earlier starts of merged or
    /// extended sessions, and sessions filtered out by `HAVING`) and stores what is emitted
    /// now for sessions that stay open.
    pub fn settle(&mut self, finalized: Vec<(Key, i64, Vec<i64>)>, produced: &Produced) -> Vec<(i64, Key)> {
        let mut retract = Vec::new();
        for (key, first, emitted) in finalized {
            let now = produced.get(&first).is_some_and(|keys| keys.contains(&key));
            retract.extend(
                emitted
                    .into_iter()
                    .filter(|s| !(now && *s == first))
                    .map(|s| (s, Arc::clone(&key))),
            );
            if let Some(s) = self.sessions.get_mut(&key).and_then(|m| m.get_mut(&first)) {
                s.emitted = if now { vec![first] } else { Vec::new() };
            }
        }
        retract
    }

    /// After a restart: rows of open sessions already in the output (latest, not final).
    pub fn adopt(&mut self, emitted: &[(i64, Key)]) {
        for (start, key) in emitted {
            if let Some(s) = self.sessions.get_mut(key).and_then(|m| m.get_mut(start)) {
                s.emitted.push(*start);
            }
        }
    }
}
