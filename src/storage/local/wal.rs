//! Write-ahead log segments, one file per segment, synced on every append.
//!
//! ```text
//! segment := MAGIC record*
//! record  := len: u32 LE | crc32: u32 LE | payload (len bytes)
//! payload := one Arrow IPC stream message (the first record: the schema; then one batch each)
//!          | tag: 0xFFFFFFFF "HTAG" u64 LE (names the batch record that follows it)
//! ```
//! A tag is written in the same commit as its batch. It lets the store's owner decide at
//! replay whether a batch counts (a Kafka batch counts only if the sink's transaction claimed
//! it, see `crate::storage::ReplayFilter`); a tag whose batch was torn off is ignored.
//! Every record carries its own checksum, so replay tells a torn tail (a crash during a write
//! that was never acknowledged) from damage in the middle (bit rot, a bad sector), and keeps
//! every complete record after damage by resynchronising on the next record whose checksum
//! holds.
//!
//! An append that fails (ENOSPC, EIO, a short write, a failed fsync) leaves no trace: the
//! writer cuts the file back to the end of the last acknowledged record and seals the
//! segment; the store opens a fresh segment for the next append. So a complete record never
//! follows a partial one. After a failed fsync the kernel may have dropped the record's dirty
//! pages and marked them clean, so the segment is never written again (PostgreSQL's lesson);
//! the records acknowledged before it were each fsynced and stay durable.
//!
//! Segments written before this format (a plain Arrow IPC stream, starting with `0xFFFFFFFF`)
//! are still replayed.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::buffer::Buffer;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::reader::{StreamDecoder, StreamReader};
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::storage::StorageError;

const PREFIX: &str = "wal-";
const SUFFIX: &str = ".arrows";
/// First bytes of a segment in the framed format.
const MAGIC: &[u8; 8] = b"HUBWAL2\n";
/// Length and checksum before each payload.
const RECORD_HEADER: usize = 8;
/// Candidates tried when resynchronising after damage, so a large garbage region costs bounded
/// time (each candidate is a length check and, rarely, a checksum).
const MAX_RESYNC_CANDIDATES: usize = 64 << 20;

/// Payload of a tag record: the IPC continuation marker (so the framing test holds), a
/// metadata length no IPC message of a batch has, then the tag.
const TAG_MARKER: [u8; 8] = [0xFF, 0xFF, 0xFF, 0xFF, b'H', b'T', b'A', b'G'];
const TAG_PAYLOAD: usize = 16;

/// The tag of a tag record's payload.
fn tag_of(payload: &[u8]) -> Option<u64> {
    if payload.len() != TAG_PAYLOAD || !payload.starts_with(&TAG_MARKER) {
        return None;
    }
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&payload[8..]);
    Some(u64::from_le_bytes(tag))
}

/// Path of segment `seq` in `dir`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{seq:012}{SUFFIX}"))
}

/// Sequence numbers of the segments present in `dir`, ascending.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StorageError> {
    super::list_sequenced(dir, PREFIX, SUFFIX)
}

/// The file operations the WAL needs: a seam through which tests inject the faults a real
/// file system will not produce on demand (EIO on write or fsync, short writes).
pub trait SegmentFile: Send + Sync + std::fmt::Debug {
    /// Writes all of `buf` at the end of what was written so far.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later writes continue there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
}

/// Creates segment files.
pub trait SegmentFs: Send + Sync + std::fmt::Debug {
    /// Creates `path`, which must not exist yet.
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
}

/// The real file system.
#[derive(Debug, Default)]
pub struct RealFs;

impl SegmentFs for RealFs {
    fn create(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(RealFile(file)))
    }
}

#[derive(Debug)]
struct RealFile(File);

impl SegmentFile for RealFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        use std::io::Seek;
        self.0.set_len(len)?;
        self.0.seek(io::SeekFrom::Start(len)).map(|_| ())
    }
}

/// Appends `payload` to `out` as one record (header, then payload); on failure `out` is as it was.
fn frame(payload: &[u8], out: &mut Vec<u8>) -> Result<(), StorageError> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    out.extend_from_slice(payload);
    seal_frame(out, start).inspect_err(|_| out.truncate(start))
}

/// Fills in the header of the record whose header starts at `start` of `buf` and whose
/// payload is the rest of `buf`.
fn seal_frame(buf: &mut [u8], start: usize) -> Result<(), StorageError> {
    let (head, payload) = buf[start..].split_at_mut(RECORD_HEADER);
    let len = u32::try_from(payload.len()).map_err(|_| StorageError::Invalid {
        context: "appending to WAL".into(),
        message: format!("a batch of {} bytes is too large for one WAL record", payload.len()),
    })?;
    head[..4].copy_from_slice(&len.to_le_bytes());
    head[4..].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    Ok(())
}

/// A commit buffer grown past this by a large group is released afterwards (a group of two
/// 10,000-event bodies is ~12 MB; releasing it after every commit cost a page fault per page
/// of the next one).
const RETAINED_RECORD_BYTES: usize = 32 << 20;

/// The active segment being appended to.
pub struct WalWriter {
    seq: u64,
    file: Box<dyn SegmentFile>,
    /// Encodes batches straight into its buffer, which holds the records staged for the next
    /// commit, framed (each batch is written once into memory, not encoded and then copied
    /// into a frame: that copy was ~4 % of the batch-ingest CPU).
    encoder: StreamWriter<Vec<u8>>,
    /// Bytes of the file that hold acknowledged records (and the header).
    committed: u64,
    sync: bool,
    /// Set after a failed write or fsync: the segment takes no more records.
    sealed: bool,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("seq", &self.seq)
            .field("committed", &self.committed)
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl WalWriter {
    /// Creates segment `seq` (which must not exist yet) and makes its header durable. On
    /// failure the half-created file is removed.
    pub fn create(
        fs: &dyn SegmentFs,
        dir: &Path,
        seq: u64,
        schema: &SchemaRef,
        sync: bool,
    ) -> Result<Self, StorageError> {
        let path = segment_path(dir, seq);
        Self::create_at(fs, &path, seq, schema, sync).and_then(|wal| {
            super::sync_dir(dir)?;
            Ok(wal)
        })
    }

    fn create_at(
        fs: &dyn SegmentFs,
        path: &Path,
        seq: u64,
        schema: &SchemaRef,
        sync: bool,
    ) -> Result<Self, StorageError> {
        let mut file = fs
            .create(path)
            .map_err(StorageError::io(format!("creating WAL segment {}", path.display())))?;
        let mut encoder =
            StreamWriter::try_new(Vec::new(), schema).map_err(StorageError::format("encoding the WAL schema"))?;
        let mut header = MAGIC.to_vec();
        frame(encoder.get_ref(), &mut header)?;
        encoder.get_mut().clear();
        let written = file.write_all(&header).and_then(|()| file.sync_data());
        if let Err(e) = written {
            drop(file);
            // Best effort: a header-only or partial file holds nothing acknowledged.
            let _ = std::fs::remove_file(path);
            return Err(StorageError::Io {
                context: format!("creating WAL segment {}", path.display()),
                source: e,
            });
        }
        Ok(Self {
            seq,
            file,
            encoder,
            committed: header.len() as u64,
            sync,
            sealed: false,
        })
    }

    /// Whether a failed write sealed the segment.
    pub fn is_sealed(&self) -> bool {
        self.sealed
    }

    /// Appends a batch and makes it durable. On failure nothing of the batch remains in the
    /// file (when the file system lets the writer cut it off) and the segment is sealed.
    pub fn append(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        self.stage(batch)?;
        self.commit()
    }

    /// [`Self::stage`] preceded by a tag record when `tag` is set; a batch that cannot be
    /// encoded takes its tag record with it.
    pub fn stage_tagged(&mut self, batch: &RecordBatch, tag: Option<u64>) -> Result<(), StorageError> {
        let Some(tag) = tag else { return self.stage(batch) };
        if self.sealed {
            return self.stage(batch);
        }
        let before = self.encoder.get_ref().len();
        self.stage_tag(tag)?;
        self.stage(batch)
            .inspect_err(|_| self.encoder.get_mut().truncate(before))
    }

    /// Encodes `batch` as one record of the next commit; nothing reaches the file yet. A batch
    /// that cannot be encoded leaves the records staged before it untouched.
    pub fn stage(&mut self, batch: &RecordBatch) -> Result<(), StorageError> {
        if self.sealed {
            return Err(StorageError::Invalid {
                context: "appending to WAL".into(),
                message: format!("segment {} is sealed after a failed write", self.seq),
            });
        }
        let staged = self.encoder.get_ref().len();
        // Room for the frame header, filled in once the payload is known.
        self.encoder.get_mut().extend_from_slice(&[0; RECORD_HEADER]);
        let encoded = self
            .encoder
            .write(batch)
            .map_err(StorageError::format("encoding a batch for the WAL"))
            .and_then(|()| seal_frame(self.encoder.get_mut(), staged));
        if encoded.is_err() {
            self.encoder.get_mut().truncate(staged);
        }
        encoded
    }

    /// Stages a tag record naming the batch staged next (in the same commit).
    fn stage_tag(&mut self, tag: u64) -> Result<(), StorageError> {
        let mut payload = [0u8; TAG_PAYLOAD];
        payload[..8].copy_from_slice(&TAG_MARKER);
        payload[8..].copy_from_slice(&tag.to_le_bytes());
        frame(&payload, self.encoder.get_mut())
    }

    /// The segment's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Writes every staged record with one write and makes them durable with one `fdatasync`
    /// (group commit). On failure none of them remains in the file (when the file system lets
    /// the writer cut them off) and the segment is sealed.
    pub fn commit(&mut self) -> Result<(), StorageError> {
        if self.encoder.get_ref().is_empty() {
            return Ok(());
        }
        let written = self
            .file
            .write_all(self.encoder.get_ref())
            .and_then(|()| if self.sync { self.file.sync_data() } else { Ok(()) });
        let staged = self.encoder.get_mut();
        let len = staged.len() as u64;
        staged.clear();
        if staged.capacity() > RETAINED_RECORD_BYTES {
            *staged = Vec::new();
        }
        match written {
            Ok(()) => {
                self.committed += len;
                Ok(())
            }
            Err(e) => {
                self.sealed = true;
                let undo = self.file.truncate(self.committed).and_then(|()| self.file.sync_data());
                if let Err(undo) = undo {
                    tracing::error!(seq = self.seq, error = %undo,
                        "could not cut a failed (unacknowledged) record off the WAL; after a crash it may be replayed");
                }
                Err(StorageError::Io {
                    context: format!("appending to WAL segment {}", self.seq),
                    source: e,
                })
            }
        }
    }
}

/// What replaying a segment found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Every complete batch, in order.
    pub batches: Vec<RecordBatch>,
    /// The tag written with each batch (same order as `batches`), if any.
    pub tags: Vec<Option<u64>>,
    /// Unreadable bytes at the end (a torn, never acknowledged write, or a damaged last record).
    pub torn_tail_bytes: u64,
    /// Whether the tail held a record that was complete but failed its checksum (damage, not a
    /// torn write).
    pub damaged_tail: bool,
    /// Damaged regions followed by readable records: (offset, bytes skipped).
    pub damaged: Vec<(u64, u64)>,
}

impl Replay {
    /// Whether acknowledged data may have been lost (anything but a torn tail).
    pub fn is_damaged(&self) -> bool {
        self.damaged_tail || !self.damaged.is_empty()
    }
}

/// A record at `pos` whose length fits and whose checksum holds: (payload range, next pos).
fn record_at(bytes: &[u8], pos: usize) -> Option<(std::ops::Range<usize>, usize)> {
    let header = bytes.get(pos..pos + RECORD_HEADER)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let start = pos + RECORD_HEADER;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    // Every payload is an IPC message, which starts with the continuation marker: a cheap test
    // that spares the checksum for almost every wrong candidate while resynchronising.
    if !payload.starts_with(&[0xFF; 4]) {
        return None;
    }
    (crc32fast::hash(payload) == crc).then_some((start..start + len, start + len))
}

/// Decodes one batch record with a decoder that has read the schema.
fn decode_batch(decoder: &mut StreamDecoder, payload: Buffer) -> Option<RecordBatch> {
    let mut buf = payload;
    match decoder.decode(&mut buf) {
        Ok(Some(batch)) if buf.is_empty() => Some(batch),
        _ => None,
    }
}

fn schema_decoder(schema_payload: &Buffer) -> Option<StreamDecoder> {
    let mut decoder = StreamDecoder::new();
    let mut buf = schema_payload.clone();
    match decoder.decode(&mut buf) {
        // The schema message has no body, so the decoder applies it when the next bytes (the
        // first batch record) arrive.
        Ok(None) if buf.is_empty() => Some(decoder),
        _ => None,
    }
}

/// Reads every complete batch of a segment, skipping damaged regions (reported in the result).
pub fn replay(path: &Path) -> Result<Replay, StorageError> {
    let bytes = std::fs::read(path).map_err(StorageError::io(format!("reading {}", path.display())))?;
    if !bytes.starts_with(MAGIC) {
        return replay_legacy(path);
    }
    let all = Buffer::from(bytes);
    let bytes = all.as_slice();
    let mut out = Replay::default();
    let Some((schema_range, mut pos)) = record_at(bytes, MAGIC.len()) else {
        // The header never became durable: the segment was created but held nothing.
        out.torn_tail_bytes = (bytes.len() - MAGIC.len()) as u64;
        return Ok(out);
    };
    let schema_payload = all.slice_with_length(schema_range.start, schema_range.len());
    let Some(mut decoder) = schema_decoder(&schema_payload) else {
        return Err(StorageError::Invalid {
            context: format!("replaying {}", path.display()),
            message: "the WAL schema record does not decode".into(),
        });
    };
    let mut tag = None;
    while pos < bytes.len() {
        if let Some((range, next)) = record_at(bytes, pos)
            && let Some(t) = tag_of(&bytes[range.clone()])
        {
            tag = Some(t);
            pos = next;
            continue;
        }
        if let Some((range, next)) = record_at(bytes, pos)
            && let Some(batch) = decode_batch(&mut decoder, all.slice_with_length(range.start, range.len()))
        {
            out.batches.push(batch);
            out.tags.push(tag.take());
            pos = next;
            continue;
        }
        tag = None;
        // Damage or a torn tail: look for the next record that holds.
        let resumed = (pos + 1..bytes.len()).take(MAX_RESYNC_CANDIDATES).find_map(|q| {
            let (range, next) = record_at(bytes, q)?;
            let mut fresh = schema_decoder(&schema_payload)?;
            let batch = decode_batch(&mut fresh, all.slice_with_length(range.start, range.len()))?;
            Some((q, next, batch, fresh))
        });
        match resumed {
            Some((q, next, batch, fresh)) => {
                out.damaged.push((pos as u64, (q - pos) as u64));
                out.batches.push(batch);
                // The tag before a damaged region is not trusted for the batch after it.
                out.tags.push(None);
                decoder = fresh;
                pos = next;
            }
            None => {
                out.torn_tail_bytes = (bytes.len() - pos) as u64;
                // A header announcing a record that fits in the file but fails its checksum is
                // damage to a complete record; one running past the end is a torn write.
                out.damaged_tail = bytes.get(pos..pos + RECORD_HEADER).is_some_and(|h| {
                    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
                    len > 0 && pos + RECORD_HEADER + len <= bytes.len()
                });
                break;
            }
        }
    }
    Ok(out)
}

/// Replays a segment of the first format (a plain Arrow IPC stream without checksums).
fn replay_legacy(path: &Path) -> Result<Replay, StorageError> {
    let file = File::open(path).map_err(StorageError::io(format!("opening {}", path.display())))?;
    let mut out = Replay::default();
    let reader = match StreamReader::try_new(BufReader::new(file), None) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "WAL segment has no readable header; skipping");
            return Ok(out);
        }
    };
    for batch in reader {
        match batch {
            Ok(b) => {
                out.batches.push(b);
                out.tags.push(None);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, recovered = out.batches.len(),
                    "legacy WAL segment has a torn tail; keeping the complete batches before it");
                out.torn_tail_bytes = 1;
                break;
            }
        }
    }
    Ok(out)
}

/// Rewrites segment `seq` to hold exactly `batches` (after damage was found in it): written to
/// a temporary file, synced, then renamed over the original.
pub fn rewrite(dir: &Path, seq: u64, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<(), StorageError> {
    let path = segment_path(dir, seq);
    let tmp = path.with_extension("arrows.rewrite.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut wal = WalWriter::create_at(&RealFs, &tmp, seq, schema, false)?;
    for b in batches {
        wal.append(b)?;
    }
    wal.file
        .sync_data()
        .map_err(StorageError::io(format!("syncing {}", tmp.display())))?;
    drop(wal);
    std::fs::rename(&tmp, &path).map_err(StorageError::io(format!("renaming {}", tmp.display())))?;
    super::sync_dir(dir)
}
