//! State of tumbling and hopping windows: accumulator state rows filed per window start, merged
//! with `PartialReduce` while the window is open. With updating emission each window also
//! remembers which keys changed since the last emit and which keys it has emitted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::kernels::partition::partition;
use datafusion::arrow::compute::{filter_record_batch, sort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use super::CqError;
use super::keys::{Key, KeyCodec};
use super::plan::CqPlan;
use super::window::WindowSpec;

/// Compact a window's state once it holds this many state batches.
pub const COMPACT_AT: usize = 16;

/// One open window.
#[derive(Debug, Default)]
pub struct Window {
    batches: Vec<RecordBatch>,
    /// Keys with new state since the last emit (updating mode only).
    dirty: HashSet<Key>,
    /// Keys whose current row is in the output (updating mode only).
    emitted: HashSet<Key>,
}

/// Open tumbling or hopping windows by start.
#[derive(Debug)]
pub struct FixedWindows {
    spec: WindowSpec,
    open: BTreeMap<i64, Window>,
    /// Track dirty and emitted keys (updating emission).
    track: bool,
}

/// Keys of emitted output rows by window start.
pub type Produced = HashMap<i64, HashSet<Key>>;

/// A window being finalized: its start, the keys considered (`None` when every key is: the
/// window closes) and the keys it had emitted before.
pub type FinalizedWindow = (i64, Option<HashSet<Key>>, HashSet<Key>);

/// Windows handed to the final aggregate, and what the emitter needs to settle them.
#[derive(Debug, Default)]
pub struct Finalizing {
    /// State rows to finalize.
    pub states: Vec<RecordBatch>,
    /// The windows.
    pub windows: Vec<FinalizedWindow>,
}

impl FixedWindows {
    /// No open windows.
    pub fn new(spec: WindowSpec, track: bool) -> Self {
        Self {
            spec,
            open: BTreeMap::new(),
            track,
        }
    }

    /// Open windows.
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Files state rows under their windows. Rows of windows that are closed (by `watermark`)
    /// or were emitted before a restart (`emitted_through`) are dropped: they come from hopping
    /// windows of a partly late event.
    pub fn add(
        &mut self,
        state: &RecordBatch,
        plan: &CqPlan,
        codec: &KeyCodec,
        key_idx: &[usize],
        watermark: Option<i64>,
        emitted_through: Option<i64>,
    ) -> Result<(), CqError> {
        if state.num_rows() == 0 {
            return Ok(());
        }
        let col = state.column(plan.window_start_idx);
        let order = sort_to_indices(col, None, None).map_err(CqError::internal)?;
        let sorted = take_record_batch(state, &order).map_err(CqError::internal)?;
        let starts: ArrayRef = Arc::clone(sorted.column(plan.window_start_idx));
        let ranges = partition(&[Arc::clone(&starts)]).map_err(CqError::internal)?.ranges();
        let starts = starts.as_primitive::<TimestampMicrosecondType>();
        for range in ranges {
            let start = starts.value(range.start);
            let closed = watermark.is_some_and(|w| self.spec.end_of(start) <= w);
            let emitted = emitted_through.is_some_and(|e| start <= e);
            if closed || emitted {
                continue;
            }
            let slice = sorted.slice(range.start, range.end - range.start);
            let window = self.open.entry(start).or_default();
            if self.track {
                window.dirty.extend(codec.encode(&slice, key_idx)?);
            }
            window.batches.push(slice);
        }
        Ok(())
    }

    /// Merges the states of windows holding many batches into one row per key.
    pub async fn compact(&mut self, plan: &CqPlan) -> Result<(), CqError> {
        for window in self.open.values_mut().filter(|w| w.batches.len() >= COMPACT_AT) {
            let states = std::mem::take(&mut window.batches);
            window.batches = plan.reduce(states).await?;
        }
        Ok(())
    }

    /// The states of every open window so far, left in place.
    pub fn open_states(&self) -> Vec<RecordBatch> {
        self.open.values().flat_map(|w| w.batches.iter().cloned()).collect()
    }

    /// Removes every window whose end is at or before the watermark.
    pub fn take_due(&mut self, watermark: i64) -> Finalizing {
        let due: Vec<i64> = self
            .open
            .keys()
            .copied()
            .take_while(|s| self.spec.end_of(*s) <= watermark)
            .collect();
        let mut out = Finalizing::default();
        for start in due {
            if let Some(window) = self.open.remove(&start) {
                out.states.extend(window.batches);
                out.windows.push((start, None, window.emitted));
            }
        }
        out
    }

    /// The states of every key that changed since the last call (updating mode).
    pub fn take_dirty(&mut self, codec: &KeyCodec, key_idx: &[usize]) -> Result<Finalizing, CqError> {
        let mut out = Finalizing::default();
        for (start, window) in self.open.iter_mut().filter(|(_, w)| !w.dirty.is_empty()) {
            let dirty = std::mem::take(&mut window.dirty);
            for batch in &window.batches {
                let keys = codec.encode(batch, key_idx)?;
                let mask: BooleanArray = keys.iter().map(|k| Some(dirty.contains(k))).collect();
                let rows = filter_record_batch(batch, &mask).map_err(CqError::internal)?;
                if rows.num_rows() > 0 {
                    out.states.push(rows);
                }
            }
            out.windows
                .push((*start, Some(dirty), std::mem::take(&mut window.emitted)));
        }
        Ok(out)
    }

    /// After emitting: `produced` holds the keys of every output row by window start. Returns
    /// the (window start, key) rows to retract (emitted before, absent now: filtered out by
    /// `HAVING`) and stores what is now emitted for windows that stay open.
    pub fn settle(&mut self, finalized: Vec<FinalizedWindow>, produced: &Produced) -> Vec<(i64, Key)> {
        let mut retract = Vec::new();
        let none = HashSet::new();
        for (start, considered, mut emitted) in finalized {
            let now = produced.get(&start).unwrap_or(&none);
            emitted.retain(|k| {
                let stale = !now.contains(k) && considered.as_ref().is_none_or(|c| c.contains(k));
                if stale {
                    retract.push((start, Arc::clone(k)));
                }
                !stale
            });
            emitted.extend(now.iter().cloned());
            if let Some(window) = self.open.get_mut(&start) {
                window.emitted = emitted;
            }
        }
        retract
    }

    /// After a restart: rows of open windows already in the output (latest, not final).
    pub fn adopt(&mut self, emitted: &[(i64, Key)]) {
        for (start, key) in emitted {
            if let Some(window) = self.open.get_mut(start) {
                window.emitted.insert(Arc::clone(key));
            }
        }
    }
}
