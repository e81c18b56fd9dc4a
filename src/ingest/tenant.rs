//! Events posted with a tenant-bound credential belong to that tenant: an event without
//! `payload.tenant` gets it, one naming another tenant is rejected with the reason.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;

use crate::event::schema::col as c;
use crate::event::{DecodedBatch, RejectKind, Rejection};

/// Confines `decoded` to `tenant`. With `require_explicit` (events forwarded as their original
/// JSON, which cannot be stamped), an event without `payload.tenant` is rejected too.
pub fn confine(mut decoded: DecodedBatch, tenant: &str, require_explicit: bool) -> Result<DecodedBatch, ArrowError> {
    let batch = &decoded.batch;
    let column = batch.schema().index_of(c::TENANT)?;
    let values = batch.column(column).as_string::<i32>();
    // Request index of each accepted row: the indices no rejection took, in order.
    let mut rejected_at = decoded.rejected.iter().map(|r| r.index).peekable();
    let mut next_index = 0usize;
    let mut keep = Vec::with_capacity(batch.num_rows());
    let mut refused = Vec::new();
    for row in 0..batch.num_rows() {
        while rejected_at.peek() == Some(&next_index) {
            rejected_at.next();
            next_index += 1;
        }
        let index = next_index;
        next_index += 1;
        let reason = match (values.is_null(row), require_explicit) {
            (false, _) if values.value(row) == tenant => None,
            (false, _) => Some(format!(
                "`payload.tenant` is `{}` but this credential writes tenant `{tenant}` only",
                values.value(row)
            )),
            (true, true) => Some(format!(
                "`payload.tenant` is required (`{tenant}`): events are forwarded to Kafka as sent"
            )),
            (true, false) => None,
        };
        keep.push(reason.is_none());
        if let Some(reason) = reason {
            refused.push(Rejection {
                index,
                error_type: RejectKind::TenantMismatch,
                reason,
                source_module: None,
                event_type: None,
            });
        }
    }
    let mut batch = if refused.is_empty() {
        decoded.batch.clone()
    } else {
        filter_record_batch(&decoded.batch, &BooleanArray::from(keep))?
    };
    let stamped: ArrayRef = Arc::new(StringArray::from(vec![tenant; batch.num_rows()]));
    let mut columns = batch.columns().to_vec();
    columns[column] = stamped;
    batch = RecordBatch::try_new(batch.schema(), columns)?;
    decoded.batch = batch;
    if !refused.is_empty() {
        decoded.rejected.extend(refused);
        decoded.rejected.sort_by_key(|r| r.index);
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_batch_body;

    fn event(i: usize, tenant: Option<&str>) -> String {
        let tenant = tenant.map(|t| format!(r#","tenant":"{t}""#)).unwrap_or_default();
        format!(
            r#"{{"event_id":"00000000-0000-4000-8000-{i:012}","timestamp":"2026-11-20T00:00:00Z","source_module":"llm-observatory","event_type":"telemetry","schema_version":"1.0.0","severity":"info","payload":{{"model":"m"{tenant}}}}}"#
        )
    }

    #[test]
    fn other_tenants_are_rejected_at_their_index_and_the_rest_stamped() {
        let body = [
            event(0, Some("acme")),
            "not json".to_string(),
            event(2, None),
            event(3, Some("globex")),
            event(4, None),
        ]
        .join("\n");
        let decoded = decode_batch_body(body.as_bytes(), 0).expect("decoded");
        assert_eq!(decoded.batch.num_rows(), 4);
        let out = confine(decoded, "acme", false).expect("confined");
        assert_eq!(out.batch.num_rows(), 3);
        let tenants = out.batch.column_by_name(c::TENANT).expect("tenant");
        let tenants = tenants.as_string::<i32>();
        assert!((0..3).all(|i| tenants.value(i) == "acme"));
        let at: Vec<(usize, RejectKind)> = out.rejected.iter().map(|r| (r.index, r.error_type)).collect();
        assert_eq!(
            at,
            vec![(1, RejectKind::MalformedJson), (3, RejectKind::TenantMismatch)]
        );
        assert!(out.rejected[1].reason.contains("globex"), "{}", out.rejected[1].reason);

        let decoded = decode_batch_body(body.as_bytes(), 0).expect("decoded");
        let strict = confine(decoded, "acme", true).expect("confined");
        let at: Vec<usize> = strict.rejected.iter().map(|r| r.index).collect();
        assert_eq!(
            at,
            vec![1, 2, 3, 4],
            "without payload.tenant, refused when forwarded raw"
        );
    }
}
