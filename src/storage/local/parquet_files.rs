//! Immutable Parquet files holding flushed WAL segments, sorted by event time.

use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{SortColumn, SortOptions, concat_batches, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::storage::StorageError;

const PREFIX: &str = "events-";
const SUFFIX: &str = ".parquet";
/// Rows per row group: small enough that time-range filters skip most of a file.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Path of the file holding segment `seq`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:012}{SUFFIX}"))
}

/// Sequence numbers of the Parquet files present in `dir`, ascending.
pub fn list_files(dir: &Path) -> Result<Vec<u64>, StorageError> {
    super::list_sequenced(dir, PREFIX, SUFFIX)
}

/// Writes `batches` (sorted by `sort_column` when given) to `events-<seq>.parquet` atomically: a temporary
/// file is written and synced, then renamed into place.
pub fn write_segment(
    dir: &Path,
    seq: u64,
    schema: &SchemaRef,
    sort_column: Option<&str>,
    batches: &[RecordBatch],
) -> Result<PathBuf, StorageError> {
    let all = concat_batches(schema, batches).map_err(StorageError::format("concatenating segment"))?;
    let sorted = match sort_column.and_then(|c| schema.index_of(c).ok()) {
        Some(index) => {
            let indices = lexsort_to_indices(
                &[SortColumn {
                    values: all.column(index).clone(),
                    options: Some(SortOptions::default()),
                }],
                None,
            )
            .map_err(StorageError::format("sorting segment"))?;
            take_record_batch(&all, &indices).map_err(StorageError::format("sorting segment"))?
        }
        None => all,
    };

    let final_path = file_path(dir, seq);
    let tmp_path = final_path.with_extension("parquet.tmp");
    let file = File::create(&tmp_path).map_err(StorageError::io(format!("creating {}", tmp_path.display())))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(StorageError::format("opening Parquet writer"))?;
    writer.write(&sorted).map_err(StorageError::format("writing Parquet"))?;
    let file = writer.into_inner().map_err(StorageError::format("finishing Parquet"))?;
    file.sync_all().map_err(StorageError::io("syncing Parquet file"))?;
    drop(file);
    std::fs::rename(&tmp_path, &final_path).map_err(StorageError::io(format!("renaming {}", tmp_path.display())))?;
    super::sync_dir(dir)?;
    Ok(final_path)
}
