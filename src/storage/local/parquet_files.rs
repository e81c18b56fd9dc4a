//! Immutable Parquet files holding flushed WAL segments, sorted by event time.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::{SortColumn, SortOptions, concat, interleave_record_batch, lexsort_to_indices};
use datafusion::arrow::datatypes::SchemaRef;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};

use crate::event::schema::col;
use crate::storage::StorageError;

const PREFIX: &str = "events-";
const SUFFIX: &str = ".parquet";
/// Rows per row group: small enough that time-range filters skip most of a file.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// The codec of a store's Parquet files (`storage.parquet_compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParquetCompression {
    /// zstd level 1: the smallest files.
    #[default]
    Zstd,
    /// LZ4 (the `LZ4_RAW` codec): faster to write, larger files.
    Lz4,
    /// Snappy.
    Snappy,
    /// Uncompressed.
    None,
}

impl ParquetCompression {
    fn codec(self) -> Compression {
        match self {
            Self::Zstd => Compression::ZSTD(ZstdLevel::default()),
            Self::Lz4 => Compression::LZ4_RAW,
            Self::Snappy => Compression::SNAPPY,
            Self::None => Compression::UNCOMPRESSED,
        }
    }
}

/// Columns whose values are all (or nearly all) distinct: a dictionary never pays for them,
/// and trying one costs a hash of every value until the writer gives up on it.
const DISTINCT_COLUMNS: [&str; 4] = [col::EVENT_ID, col::CORRELATION_ID, col::PARENT_EVENT_ID, col::PAYLOAD];

/// How a store writes its Parquet files.
#[derive(Debug, Clone, Default)]
pub struct FileFormat {
    compression: ParquetCompression,
    /// Columns written without dictionary encoding.
    plain: Vec<String>,
}

impl FileFormat {
    /// The format of a store of `schema`: `compression`, and no dictionary for the columns
    /// of distinct values it has.
    pub fn new(schema: &SchemaRef, compression: ParquetCompression) -> Self {
        let plain = DISTINCT_COLUMNS
            .iter()
            .filter(|c| schema.index_of(c).is_ok())
            .map(|c| (*c).to_string())
            .collect();
        Self { compression, plain }
    }

    fn properties(&self) -> WriterProperties {
        self.plain
            .iter()
            .fold(WriterProperties::builder(), |b, c| {
                b.set_column_dictionary_enabled(ColumnPath::from(c.as_str()), false)
            })
            .set_compression(self.compression.codec())
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build()
    }
}

/// Path of the file holding segment `seq`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:012}{SUFFIX}"))
}

/// Sequence numbers of the Parquet files present in `dir`, ascending.
pub fn list_files(dir: &Path) -> Result<Vec<u64>, StorageError> {
    super::list_sequenced(dir, PREFIX, SUFFIX)
}

/// Writes `batches` (sorted by `sort_column` when given) to `events-<seq>.parquet` atomically: a temporary
/// file is written and synced, its checksum written beside it, then both renamed into place. On
/// failure the temporary files are removed.
pub fn write_segment(
    dir: &Path,
    seq: u64,
    schema: &SchemaRef,
    sort_column: Option<&str>,
    format: &FileFormat,
    batches: &[RecordBatch],
) -> Result<PathBuf, StorageError> {
    let order = sort_order(schema, sort_column, batches)?;
    let sources: Vec<&RecordBatch> = batches.iter().collect();
    let chunks = order
        .chunks(ROW_GROUP_ROWS)
        .map(|chunk| interleave_record_batch(&sources, chunk).map_err(StorageError::format("sorting segment")));

    let final_path = file_path(dir, seq);
    let tmp_path = final_path.with_extension("parquet.tmp");
    let sum_path = checksum_path(&final_path);
    let sum_tmp = sum_path.with_extension("crc32.tmp");
    let written = write_file(&tmp_path, schema, format, chunks).and_then(|sum| {
        std::fs::write(&sum_tmp, sum.to_line())
            .and_then(|()| File::open(&sum_tmp)?.sync_all())
            .map_err(StorageError::io(format!("writing {}", sum_tmp.display())))?;
        // The checksum first: a checksum without its file is removed at startup (the WAL
        // still holds the segment), a file without its checksum is never left by this code.
        std::fs::rename(&sum_tmp, &sum_path).map_err(StorageError::io(format!("renaming {}", sum_tmp.display())))?;
        std::fs::rename(&tmp_path, &final_path)
            .map_err(StorageError::io(format!("renaming {}", tmp_path.display())))?;
        super::sync_dir(dir)
    });
    if let Err(e) = written {
        // Free the space and leave nothing that looks complete; the WAL segment is kept.
        for p in [&tmp_path, &sum_tmp] {
            let _ = std::fs::remove_file(p);
        }
        if !final_path.exists() {
            let _ = std::fs::remove_file(&sum_path);
        }
        return Err(e);
    }
    Ok(final_path)
}

/// The segment's rows as (batch, row) pairs in `sort_column` order (as they are without one).
/// Only the sort column is concatenated: the file is then written a row group at a time, so a
/// flush holds one row group beyond the segment instead of two sorted copies of it.
fn sort_order(
    schema: &SchemaRef,
    sort_column: Option<&str>,
    batches: &[RecordBatch],
) -> Result<Vec<(usize, usize)>, StorageError> {
    let positions = batches
        .iter()
        .enumerate()
        .flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r)));
    let Some(index) = sort_column.and_then(|c| schema.index_of(c).ok()) else {
        return Ok(positions.collect());
    };
    let columns: Vec<&dyn Array> = batches.iter().map(|b| b.column(index).as_ref()).collect();
    let keys: ArrayRef = concat(&columns).map_err(StorageError::format("sorting segment"))?;
    let indices = lexsort_to_indices(
        &[SortColumn {
            values: keys,
            options: Some(SortOptions::default()),
        }],
        None,
    )
    .map_err(StorageError::format("sorting segment"))?;
    let flat: Vec<(usize, usize)> = positions.collect();
    Ok(indices.values().iter().map(|&i| flat[i as usize]).collect())
}

/// Writes `chunks` to `path` as Parquet (one row group per chunk at most), synced; returns the
/// file's checksum.
fn write_file(
    path: &Path,
    schema: &SchemaRef,
    format: &FileFormat,
    chunks: impl Iterator<Item = Result<RecordBatch, StorageError>>,
) -> Result<Checksum, StorageError> {
    let file = File::create(path).map_err(StorageError::io(format!("creating {}", path.display())))?;
    let props = format.properties();
    let hashing = HashingWriter {
        inner: file,
        hasher: crc32fast::Hasher::new(),
        bytes: 0,
        error: None,
    };
    let mut writer = ArrowWriter::try_new(hashing, schema.clone(), Some(props))
        .map_err(StorageError::format("opening Parquet writer"))?;
    let io_error = |w: &ArrowWriter<HashingWriter>| {
        w.inner()
            .error
            .as_ref()
            .map(|e| std::io::Error::new(e.kind(), e.to_string()))
    };
    for chunk in chunks {
        let chunk = chunk?;
        if let Err(e) = writer.write(&chunk) {
            return Err(io_error(&writer).map_or_else(
                || StorageError::format("writing Parquet")(e),
                |source| StorageError::Io {
                    context: format!("writing {}", path.display()),
                    source,
                },
            ));
        }
    }
    let hashing = match writer.into_inner() {
        Ok(h) => h,
        Err(e) => return Err(StorageError::format("finishing Parquet")(e)),
    };
    if let Some(source) = hashing.error {
        return Err(StorageError::Io {
            context: format!("writing {}", path.display()),
            source,
        });
    }
    hashing
        .inner
        .sync_all()
        .map_err(StorageError::io(format!("syncing {}", path.display())))?;
    Ok(Checksum {
        crc32: hashing.hasher.finalize(),
        bytes: hashing.bytes,
    })
}

/// Passes writes on to a file, hashing them and keeping the first I/O error (the Parquet
/// writer wraps it in its own error type; the store wants its kind: no space, read-only, EIO).
struct HashingWriter {
    inner: File,
    hasher: crc32fast::Hasher,
    bytes: u64,
    error: Option<std::io::Error>,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.inner.write(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                let copy = e.raw_os_error().map_or(copy, std::io::Error::from_raw_os_error);
                self.error.get_or_insert(copy);
                Err(e)
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// CRC-32 and length of a whole Parquet file, kept beside it in `<file>.crc32`. parquet-rs
/// writes no page checksums (its writer leaves the page CRC unset), so the whole file is
/// checked instead: any flipped byte, data page or footer, is detected at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    crc32: u32,
    bytes: u64,
}

impl Checksum {
    fn to_line(self) -> String {
        format!("crc32={:08x} bytes={}\n", self.crc32, self.bytes)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut crc32 = None;
        let mut bytes = None;
        for part in text.split_whitespace() {
            if let Some(v) = part.strip_prefix("crc32=") {
                crc32 = u32::from_str_radix(v, 16).ok();
            } else if let Some(v) = part.strip_prefix("bytes=") {
                bytes = v.parse().ok();
            }
        }
        Some(Self {
            crc32: crc32?,
            bytes: bytes?,
        })
    }
}

/// Where the checksum of `file` is kept.
pub fn checksum_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_os_string();
    name.push(".crc32");
    PathBuf::from(name)
}

/// Checks a Parquet file: against its checksum when it has one, else (files written before
/// checksums) by decoding every page. Returns the problem, if any.
pub fn verify(path: &Path) -> Result<(), String> {
    match std::fs::read_to_string(checksum_path(path)) {
        Ok(text) => {
            let expected = Checksum::parse(&text).ok_or_else(|| format!("unreadable checksum file: {text:?}"))?;
            let mut file = File::open(path).map_err(|e| format!("opening: {e}"))?;
            let mut hasher = crc32fast::Hasher::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut bytes = 0u64;
            loop {
                let n = file.read(&mut buf).map_err(|e| format!("reading: {e}"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                bytes += n as u64;
            }
            let actual = Checksum {
                crc32: hasher.finalize(),
                bytes,
            };
            if actual == expected {
                Ok(())
            } else {
                Err(format!(
                    "checksum mismatch: expected {} bytes with crc32 {:08x}, found {} bytes with crc32 {:08x}",
                    expected.bytes, expected.crc32, actual.bytes, actual.crc32
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let file = File::open(path).map_err(|e| format!("opening: {e}"))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.build())
                .map_err(|e| format!("reading the footer: {e}"))?;
            for batch in reader {
                batch.map_err(|e| format!("decoding: {e}"))?;
            }
            Ok(())
        }
        Err(e) => Err(format!("reading the checksum file: {e}")),
    }
}

/// Rows of a Parquet file and the (min, max) of its Int64 (or timestamp) column `column`, from
/// the footer. The bounds are `None` when the column is missing or a non-empty row group has no
/// statistics for it (unknown bounds: never pruned, never expired).
pub fn footer_bounds(path: &Path, column: &str) -> parquet::errors::Result<(i64, Option<(i64, i64)>)> {
    use parquet::file::reader::FileReader;
    use parquet::file::statistics::Statistics;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(File::open(path)?)?;
    let meta = reader.metadata();
    let rows = meta.file_metadata().num_rows();
    let Some(index) = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == column)
    else {
        return Ok((rows, None));
    };
    let mut bounds: Option<(i64, i64)> = None;
    for rg in meta.row_groups() {
        if rg.num_rows() == 0 {
            continue;
        }
        let Some(Statistics::Int64(s)) = rg.column(index).statistics() else {
            return Ok((rows, None));
        };
        let (Some(&min), Some(&max)) = (s.min_opt(), s.max_opt()) else {
            return Ok((rows, None));
        };
        bounds = Some(bounds.map_or((min, max), |(lo, hi)| (lo.min(min), hi.max(max))));
    }
    Ok((rows, bounds))
}

/// Rows a Parquet file holds according to its footer, if the footer can be read.
pub fn footer_rows(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let reader = parquet::file::serialized_reader::SerializedFileReader::new(file).ok()?;
    use parquet::file::reader::FileReader;
    u64::try_from(reader.metadata().file_metadata().num_rows()).ok()
}
