//! Pause/resume with catch-up, and session checkpoints.

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use super::{Running, StreamEngine};
use crate::event::EVENTS_TABLE;
use crate::event::time::now_micros;
use crate::stream::CqError;
use crate::stream::output::{self, SessionCheckpoint};
use crate::stream::query::CqStatus;

impl StreamEngine {
    /// Pauses (input is skipped; see [`Running::paused_at`]) or resumes a query. On resume
    /// the query catches up: events that arrived meanwhile are read back from the store (in
    /// arrival order) and processed as live input, so nothing is lost or counted twice.
    pub(super) async fn set_paused(&mut self, i: usize, paused: bool) -> Result<CqStatus, CqError> {
        let was = self.queries[i].rt.def.paused;
        self.queries[i].rt.def.paused = paused;
        self.save()?;
        if paused && !was {
            self.queries[i].paused_at = Some(now_micros());
        } else if !paused && was {
            let q = &mut self.queries[i];
            let since = q.paused_at.take();
            let mut inputs = std::mem::take(&mut q.paused_input);
            if q.rt.source == EVENTS_TABLE
                && let Some(since) = since
            {
                inputs.extend(output::events_since(&self.deps.events, since, None).await?);
            }
            let rows: usize = inputs.iter().map(RecordBatch::num_rows).sum();
            tracing::info!(query = %self.queries[i].rt.def.name, rows, "resumed; catching up");
            let out = self.run_query(i, &inputs, false).await;
            let name = self.queries[i].rt.def.name.clone();
            self.dispatch(&name, out).await;
        }
        Ok(self.queries[i].rt.status())
    }

    /// Session queries: records where a restart must replay from, when it moved.
    pub(super) fn write_checkpoint(&mut self, i: usize) {
        let q = &mut self.queries[i];
        let Some((watermark_us, open_since_us)) = q.rt.session_checkpoint() else {
            return;
        };
        let checkpoint = SessionCheckpoint {
            watermark_us,
            open_since_us,
        };
        if q.checkpoint == Some(checkpoint) {
            return;
        }
        match output::write_checkpoint(&q.dir(&self.deps.dir), &checkpoint) {
            Ok(()) => q.checkpoint = Some(checkpoint),
            Err(e) => tracing::warn!(query = %q.rt.def.name, error = %e, "writing the session checkpoint failed"),
        }
    }
}

impl Running {
    /// Input arriving while paused. Events accepted before the pause (ingest time earlier than
    /// `paused_at`) are kept, since reading the store back on resume starts at `paused_at`;
    /// later events are read back then. Rows of an upstream query are all kept.
    pub(super) fn keep_while_paused(&mut self, inputs: Vec<RecordBatch>, paused_at: i64) {
        if self.rt.source != EVENTS_TABLE {
            self.paused_input.extend(inputs);
            return;
        }
        for batch in inputs {
            let Some(times) = batch.column_by_name("ingest_time") else {
                continue;
            };
            let Some(times) = times.as_primitive_opt::<TimestampMicrosecondType>() else {
                continue;
            };
            let mask: BooleanArray = times.iter().map(|t| Some(t.is_some_and(|t| t < paused_at))).collect();
            match filter_record_batch(&batch, &mask) {
                Ok(early) if early.num_rows() > 0 => self.paused_input.push(early),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "keeping in-flight input of a paused query failed"),
            }
        }
    }
}
