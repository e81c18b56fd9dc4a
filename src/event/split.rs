//! The original JSON of each event of a request body, for ingests that forward events as sent
//! (the Kafka producer). Splits exactly as the decoder counts events, so indices line up with
//! [`Rejection::index`].

use crate::event::Rejection;

/// Each event of a batch body in order: the elements of a JSON array, or the non-blank lines
/// of NDJSON. A JSON array that does not parse yields nothing (the decoder rejects it whole).
pub fn split_batch_body(body: &[u8]) -> Vec<&[u8]> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Vec::new(),
        Some(b'[') => serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(body)
            .map(|items| items.into_iter().map(|i| i.get().as_bytes()).collect())
            .unwrap_or_default(),
        Some(_) => body
            .split(|b| *b == b'\n')
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .collect(),
    }
}

/// The events of `body` that were not rejected, in order (matching the decoded batch's rows).
pub fn accepted_raw<'a>(body: &'a [u8], rejected: &[Rejection]) -> Vec<&'a [u8]> {
    let mut rejected_idx = rejected.iter().map(|r| r.index).peekable();
    split_batch_body(body)
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            while rejected_idx.peek().is_some_and(|r| r < i) {
                rejected_idx.next();
            }
            rejected_idx.peek() != Some(i)
        })
        .map(|(_, raw)| raw)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::decode_batch_body;

    #[test]
    fn accepted_events_line_up_with_decoded_rows() {
        let good = |id: &str| {
            format!(
                r#"{{"event_id":"{id}","timestamp":"2026-01-01T00:00:00Z","source_module":"llm-observatory","event_type":"request","payload":{{}}}}"#
            )
        };
        let ndjson = format!(
            "{}\n\nnot json\n{}\n{{\"event_id\":1}}\n",
            good("00000000-0000-4000-8000-00000000000a"),
            good("00000000-0000-4000-8000-00000000000b")
        );
        let decoded = decode_batch_body(ndjson.as_bytes(), 0).expect("decodes");
        let raw = accepted_raw(ndjson.as_bytes(), &decoded.rejected);
        assert_eq!(decoded.rejected.len(), 2, "{:?}", decoded.rejected);
        assert_eq!(raw.len(), decoded.batch.num_rows());
        assert_eq!(
            raw,
            vec![
                good("00000000-0000-4000-8000-00000000000a").as_bytes(),
                good("00000000-0000-4000-8000-00000000000b").as_bytes()
            ]
        );

        let array = format!(
            "[{}, 5, {}]",
            good("00000000-0000-4000-8000-00000000000c"),
            good("00000000-0000-4000-8000-00000000000d")
        );
        let decoded = decode_batch_body(array.as_bytes(), 0).expect("decodes");
        let raw = accepted_raw(array.as_bytes(), &decoded.rejected);
        assert_eq!(
            raw,
            vec![
                good("00000000-0000-4000-8000-00000000000c").as_bytes(),
                good("00000000-0000-4000-8000-00000000000d").as_bytes()
            ]
        );
    }
}
