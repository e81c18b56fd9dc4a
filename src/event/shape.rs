//! Shapes: the layout one producer gives all its events — the same keys in the same order with
//! the same punctuation and whitespace between the values — learned from an event the scanner
//! read in full, and then used to read the next events without the generic walk.
//!
//! A shape is a list of literal runs (`{"event_id":`, `,"timestamp":`, `},"payload":{`, ...)
//! and value slots. Reading an event through a shape compares each literal run with the text
//! (eight bytes at a time) and reads each value with the scanner's own value readers, which
//! validate it exactly as the generic walk does. Key matching, duplicate checks and most
//! structural bookkeeping disappear: equal literal runs mean the same keys as an event that was
//! accepted, so the same rules hold. Anything that differs from every known shape (another key,
//! other spacing, an object where the shape has a string, escapes or control bytes anywhere in
//! the line) falls back to the generic scanner, so the result is always the generic scanner's
//! (`tests_diff` checks both paths against serde). This is what V8's JSON.parse does with its
//! map transition trees, for the same reason: machine-written JSON repeats its layout.

use super::raw::PayloadFields;
use super::scan::{Cursor, Kind, Mark, PAYLOAD, Record, Scanned, Slot, TAGS, env_slot, payload_slot, tags_verdict};

/// Shapes kept per decoder, most used first.
const MAX_SHAPES: usize = 8;
/// Largest shape learned (steps), so one odd event cannot hold much memory.
const MAX_OPS: usize = 256;
/// Largest literal text of a learned shape, bytes.
const MAX_LITERAL_BYTES: usize = 4096;
/// Shapes learned before learning depends on the hit rate (see [`Shapes::may_learn`]).
const FREE_LEARNS: u32 = 16;

/// One step of a shape.
#[derive(Debug, Clone, Copy)]
enum Op {
    /// These bytes of the shape's literal text, exactly.
    Lit { start: u32, len: u32 },
    /// One value, read and filed under its slot.
    Val(Slot),
    /// An object boundary.
    Mark(Mark),
}

/// One learned layout.
#[derive(Debug, Default)]
struct Shape {
    /// The literal runs, concatenated.
    literals: Vec<u8>,
    ops: Vec<Op>,
}

/// Whether `text[pos..]` starts with `lit`, compared eight bytes at a time.
#[inline]
fn literal_at(text: &[u8], pos: usize, lit: &[u8]) -> bool {
    let Some(s) = text.get(pos..pos + lit.len()) else {
        return false;
    };
    let n = lit.len();
    if n < 8 {
        return s == lit;
    }
    let word = |b: &[u8], i: usize| b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
    let mut i = 0;
    while i + 8 < n {
        if word(s, i) != word(lit, i) {
            return false;
        }
        i += 8;
    }
    // The last eight bytes (overlapping the previous word when `n` is not a multiple of 8).
    word(s, n - 8) == word(lit, n - 8)
}

impl Shape {
    /// Reads the event under `c` through this shape into `out`; `None` when it does not fit.
    fn read<'a>(&self, c: &mut Cursor<'a, '_>, out: &mut Scanned<'a>) -> Option<()> {
        *out = Scanned::default();
        let Scanned { fields: f, pre } = out;
        let text = c.bytes();
        let (mut tags_start, mut payload_start) = (0, 0);
        let (mut all_strings, mut escapes) = (true, false);
        // Inside the event's outer object, as the generic walk is when it reads a member.
        c.depth = 1;
        for op in &self.ops {
            match *op {
                Op::Lit { start, len } => {
                    let lit = self.literals.get(start as usize..(start + len) as usize)?;
                    if !literal_at(text, c.pos, lit) {
                        return None;
                    }
                    c.pos += lit.len();
                    c.seek_quotes();
                }
                Op::Val(Slot::Env(bit)) => {
                    // `tags` and `payload` objects are read member by member (marks), never
                    // as one opaque value.
                    if (bit == TAGS || bit == PAYLOAD) && c.peek() == Some(b'{') {
                        return None;
                    }
                    *env_slot(f, bit)? = c.raw_value()?;
                }
                Op::Val(Slot::Payload(bit)) => {
                    let p = pre.payload.as_mut()?;
                    *payload_slot(p, bit)? = c.raw_value()?;
                }
                Op::Val(Slot::Tag) => match c.value()? {
                    Kind::Str(e) => escapes |= e,
                    _ => all_strings = false,
                },
                Op::Val(Slot::Skip) => {
                    c.value()?;
                }
                Op::Mark(Mark::TagsStart) => {
                    tags_start = c.pos;
                    (all_strings, escapes) = (true, false);
                    c.enter()?;
                }
                Op::Mark(Mark::TagsEnd) => {
                    c.depth -= 1;
                    pre.tags_ok = tags_verdict(all_strings, escapes);
                    f.tags = Some(c.slice(tags_start, c.pos)?);
                }
                Op::Mark(Mark::PayloadStart) => {
                    payload_start = c.pos;
                    pre.payload = Some(PayloadFields::default());
                    c.enter()?;
                }
                Op::Mark(Mark::PayloadEnd) => {
                    c.depth -= 1;
                    f.payload = Some(c.slice(payload_start, c.pos)?);
                }
            }
        }
        pre.verbatim = true;
        (c.pos == text.len()).then_some(())
    }
}

/// Learns a shape while the generic scanner reads an event (see [`Record`]).
#[derive(Debug)]
pub(super) struct Learner<'t> {
    text: &'t [u8],
    /// End of the last value or mark: where the next literal run starts.
    last: usize,
    shape: Shape,
}

impl<'t> Learner<'t> {
    fn new(text: &'t [u8]) -> Self {
        Self {
            text,
            last: 0,
            shape: Shape::default(),
        }
    }

    fn literal_to(&mut self, at: usize) {
        if at > self.last
            && let Some(run) = self.text.get(self.last..at)
        {
            let start = self.shape.literals.len() as u32;
            self.shape.literals.extend_from_slice(run);
            self.shape.ops.push(Op::Lit {
                start,
                len: run.len() as u32,
            });
        }
        self.last = at;
    }

    /// The shape, once the whole event was read; `None` when it is too large to keep.
    fn finish(mut self) -> Option<Shape> {
        self.literal_to(self.text.len());
        (self.shape.ops.len() <= MAX_OPS && self.shape.literals.len() <= MAX_LITERAL_BYTES).then_some(self.shape)
    }
}

impl Record for Learner<'_> {
    fn value(&mut self, slot: Slot, start: usize, end: usize) {
        self.literal_to(start);
        self.shape.ops.push(Op::Val(slot));
        self.last = end;
    }

    fn mark(&mut self, mark: Mark, at: usize) {
        self.literal_to(at);
        self.shape.ops.push(Op::Mark(mark));
    }
}

/// The shapes one decoder knows, most used first.
#[derive(Debug, Default)]
pub(crate) struct Shapes {
    list: Vec<Shape>,
    /// Events read through a shape.
    hits: u64,
    /// Shapes learned.
    learned: u32,
}

impl Shapes {
    /// Reads the event under `c` through the first known shape that fits it.
    #[inline]
    pub(super) fn read<'a>(&mut self, c: &mut Cursor<'a, '_>, out: &mut Scanned<'a>) -> Option<()> {
        if !c.is_plain() {
            return None;
        }
        for i in 0..self.list.len() {
            c.reset();
            if self.list.get(i)?.read(c, out).is_some() {
                self.hits += 1;
                // Move up one place per hit: the order converges on how often each is used.
                if i > 0 {
                    self.list.swap(i, i - 1);
                }
                return Some(());
            }
        }
        None
    }

    /// Whether the next event that fits no shape should be learned: always for the first
    /// few, then only while shapes are paying off (a producer whose every event has its own
    /// layout is not worth the recording).
    pub(super) fn may_learn(&self, c: &Cursor<'_, '_>) -> bool {
        c.is_plain() && (self.learned < FREE_LEARNS || self.hits >= 8 * u64::from(self.learned))
    }

    /// A recorder for the generic scan of `text`, to learn its shape from.
    pub(super) fn learner(text: &str) -> Learner<'_> {
        Learner::new(text.as_bytes())
    }

    /// Keeps the shape `learner` recorded (the event was accepted by the generic scanner),
    /// in place of the least used one when the list is full.
    pub(super) fn learn(&mut self, learner: Learner<'_>) {
        let Some(shape) = learner.finish() else {
            return;
        };
        self.learned = self.learned.saturating_add(1);
        if self.list.len() >= MAX_SHAPES {
            self.list.pop();
        }
        self.list.push(shape);
    }

    /// Events read through a shape so far.
    #[cfg(test)]
    pub(super) fn hits(&self) -> u64 {
        self.hits
    }
}
