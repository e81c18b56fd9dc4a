//! Shapes: the layout one producer gives all its events — the same keys in the same order, the
//! same punctuation and whitespace between the values — learned from an event the generic
//! scanner read in full, then used to read the next events without the generic walk.
//!
//! A shape is a list of steps: a literal run (`{"event_id":`, `,"timestamp":`,
//! `},"payload":{"operation":`, ...) followed by a value slot or an object boundary. Reading an
//! event through a shape compares each literal run with the text a word at a time and reads
//! each value: strings up to their closing quote 16 bytes per step (refusing backslashes and
//! control bytes), numbers against the JSON grammar (the scanner's own `number_end`),
//! `true`/`false`/`null` literally, nested objects and arrays with the generic cursor. Key
//! matching, duplicate checks and the per-line quote index disappear: equal literal runs mean
//! the same keys as an accepted event, so the same rules hold. An event that differs from every
//! known shape (another key, other spacing, an object where the shape has a string, an escape)
//! goes to the generic scanner, so the outcome is always the generic scanner's (`tests_diff`
//! checks both paths against serde). V8's `JSON.parse` predicts keys from earlier objects'
//! hidden-class transitions for the same reason: machine-written JSON repeats its layout.

use std::cell::RefCell;

use wide::u8x16;

use super::raw::PayloadFields;
use super::scan::{
    Cursor, Kind, Mark, PAYLOAD, Record, Scanned, Slot, TAGS, env_slot, number_end, payload_slot, tags_verdict,
};

/// Shapes kept per decoder, most used first.
const MAX_SHAPES: usize = 8;
/// Largest shape learned (steps), so one odd event cannot hold much memory.
const MAX_STEPS: usize = 256;
/// Largest literal text of a learned shape, bytes.
const MAX_LITERAL_BYTES: usize = 4096;
/// Shapes learned before learning depends on the hit rate (see [`Shapes::may_learn`]).
const FREE_LEARNS: u32 = 16;

/// What follows a step's literal run (one flat list, so reading a step is one dispatch).
#[derive(Debug, Clone, Copy)]
enum Action {
    /// An envelope field (see [`env_slot`]).
    Env(u8),
    /// `tags` or `payload` given as something else than an object (an object there is
    /// another shape: it is read member by member).
    EnvNotObject(u8),
    /// One of the payload's LLM fields (see [`payload_slot`]).
    Payload(u8),
    /// A value of `tags`.
    Tag,
    /// The value of a key nobody reads.
    Skip,
    /// An object boundary.
    Mark(Mark),
    /// The end of the event.
    End,
}

impl Action {
    fn of(slot: Slot) -> Self {
        match slot {
            Slot::Env(bit @ (TAGS | PAYLOAD)) => Self::EnvNotObject(bit),
            Slot::Env(bit) => Self::Env(bit),
            Slot::Payload(bit) => Self::Payload(bit),
            Slot::Tag => Self::Tag,
            Slot::Skip => Self::Skip,
        }
    }
}

/// One step of a shape: a literal run (possibly empty), then an action.
#[derive(Debug)]
struct Step {
    literal: Box<[u8]>,
    action: Action,
}

/// One learned layout.
#[derive(Debug, Default)]
struct Shape {
    steps: Vec<Step>,
    /// Total bytes of the literal runs.
    literal_bytes: usize,
    /// Learned or read through by the current decoder (shapes nobody used go first).
    used: bool,
}

/// Whether `text[pos..]` starts with `lit`, compared a word at a time.
#[inline]
fn literal_at(text: &[u8], pos: usize, lit: &[u8]) -> bool {
    let n = lit.len();
    let Some(s) = text.get(pos..pos + n) else {
        return false;
    };
    let w8 = |b: &[u8], i: usize| b.get(i..i + 8).and_then(|w| <[u8; 8]>::try_from(w).ok());
    let w4 = |b: &[u8], i: usize| b.get(i..i + 4).and_then(|w| <[u8; 4]>::try_from(w).ok());
    match n {
        0..=3 => s == lit,
        // Two overlapping words cover 4 to 8 bytes.
        4..=7 => w4(s, 0) == w4(lit, 0) && w4(s, n - 4) == w4(lit, n - 4),
        _ => {
            let mut i = 0;
            while i + 8 < n {
                if w8(s, i) != w8(lit, i) {
                    return false;
                }
                i += 8;
            }
            w8(s, n - 8) == w8(lit, n - 8)
        }
    }
}

/// The end of the string whose opening quote is at `pos`, 16 bytes per step; `None` when a
/// backslash or control byte comes first (escapes and invalid strings are the generic
/// scanner's business).
#[inline]
fn string_end(b: &[u8], pos: usize) -> Option<usize> {
    let mut p = pos + 1;
    while let Some(block) = b.get(p..p + 16) {
        let bytes: [u8; 16] = block.try_into().ok()?;
        let v = u8x16::new(bytes);
        let stop =
            v.simd_eq(u8x16::splat(b'"')) | v.simd_eq(u8x16::splat(b'\\')) | v.min(u8x16::splat(0x1f)).simd_eq(v);
        let mask = stop.to_bitmask();
        if mask != 0 {
            let at = p + mask.trailing_zeros() as usize;
            return (b.get(at) == Some(&b'"')).then_some(at + 1);
        }
        p += 16;
    }
    for (i, &c) in b.get(p..)?.iter().enumerate() {
        if c == b'"' {
            return Some(p + i + 1);
        }
        if c == b'\\' || c < 0x20 {
            return None;
        }
    }
    None
}

/// Reads the value at `pos`, `depth` levels deep: its end and kind. Strings and numbers are
/// read here; the rest by [`other_value_end`].
#[inline(always)]
fn value_end(nested: &mut Nested<'_, '_>, pos: usize, depth: u32) -> Option<(usize, Kind)> {
    let b = nested.text.as_bytes();
    match *b.get(pos)? {
        b'"' => string_end(b, pos).map(|end| (end, Kind::Str(false))),
        b'-' | b'0'..=b'9' => number_end(b, pos).map(|end| (end, Kind::Other)),
        _ => other_value_end(nested, pos, depth),
    }
}

/// [`value_end`] for `true`, `false` and `null`, and for an object or array (see [`Nested`]).
#[inline(never)]
fn other_value_end(nested: &mut Nested<'_, '_>, pos: usize, depth: u32) -> Option<(usize, Kind)> {
    let b = nested.text.as_bytes();
    let literal = |word: &[u8], kind| literal_at(b, pos, word).then_some((pos + word.len(), kind));
    match *b.get(pos)? {
        b'n' => literal(b"null", Kind::Null),
        b't' => literal(b"true", Kind::Other),
        b'f' => literal(b"false", Kind::Other),
        b'{' | b'[' => nested.value(pos, depth),
        _ => None,
    }
}

/// The generic scanner's cursor over one event, for its nested objects and arrays: built (the
/// text indexed) at the first one, then reused for the others of the same reading.
struct Nested<'a, 's> {
    text: &'a str,
    /// The cursor's bitmap buffer, until the cursor is built.
    scratch: Option<&'s mut Vec<u64>>,
    cursor: Option<Cursor<'a, 's>>,
}

impl<'a, 's> Nested<'a, 's> {
    fn new(text: &'a str, scratch: &'s mut Vec<u64>) -> Self {
        Self {
            text,
            scratch: Some(scratch),
            cursor: None,
        }
    }

    /// The object or array at `pos`, `depth` levels deep, read by the cursor.
    fn value(&mut self, pos: usize, depth: u32) -> Option<(usize, Kind)> {
        if self.cursor.is_none() {
            // Without a scratch buffer the text was indexed already and found not plain.
            let c = Cursor::new(self.text, self.scratch.take()?);
            // Escapes inside would make the generic scanner's answer differ (`verbatim`).
            if !c.is_plain() {
                return None;
            }
            self.cursor = Some(c);
        }
        let c = self.cursor.as_mut()?;
        c.place(pos, depth);
        let kind = c.value()?;
        Some((c.pos, kind))
    }
}

impl Shape {
    /// Reads `text` through this shape into `out`; `None` when it does not fit.
    ///
    /// Every byte of the text is accounted for: literal runs are compared with those of an
    /// event without backslashes or control bytes, strings are checked to hold neither,
    /// numbers against the grammar, nested values by the generic scanner. So a text that fits
    /// holds no backslash, as the generic scanner's `verbatim` requires.
    fn read<'a>(&self, text: &'a str, scratch: &mut Vec<u64>, out: &mut Scanned<'a>) -> Option<()> {
        *out = Scanned::default();
        let Scanned { fields: f, pre } = out;
        let b = text.as_bytes();
        let (mut pos, mut depth) = (0usize, 1u32);
        let (mut tags_start, mut payload_start) = (0, 0);
        let mut all_strings = true;
        let mut nested = Nested::new(text, scratch);
        for step in &self.steps {
            if !literal_at(b, pos, &step.literal) {
                return None;
            }
            pos += step.literal.len();
            // A value's raw text (`None` for `null`, as the generic scanner gives it).
            let raw = move |(end, kind): (usize, Kind)| (kind != Kind::Null).then(|| text.get(pos..end)).flatten();
            match step.action {
                Action::Env(bit) => {
                    let value = value_end(&mut nested, pos, depth)?;
                    *env_slot(f, bit)? = raw(value);
                    pos = value.0;
                }
                Action::EnvNotObject(bit) => {
                    if b.get(pos) == Some(&b'{') {
                        return None;
                    }
                    let value = value_end(&mut nested, pos, depth)?;
                    *env_slot(f, bit)? = raw(value);
                    pos = value.0;
                }
                Action::Payload(bit) => {
                    let value = value_end(&mut nested, pos, depth)?;
                    *payload_slot(pre.payload.as_mut()?, bit)? = raw(value);
                    pos = value.0;
                }
                Action::Tag => {
                    let (end, kind) = value_end(&mut nested, pos, depth)?;
                    all_strings &= matches!(kind, Kind::Str(_));
                    pos = end;
                }
                Action::Skip => pos = value_end(&mut nested, pos, depth)?.0,
                Action::Mark(Mark::TagsStart) => {
                    tags_start = pos;
                    all_strings = true;
                    depth += 1;
                }
                Action::Mark(Mark::TagsEnd) => {
                    depth -= 1;
                    pre.tags_ok = tags_verdict(all_strings, false);
                    f.tags = Some(text.get(tags_start..pos)?);
                }
                Action::Mark(Mark::PayloadStart) => {
                    payload_start = pos;
                    pre.payload = Some(PayloadFields::default());
                    depth += 1;
                }
                Action::Mark(Mark::PayloadEnd) => {
                    depth -= 1;
                    f.payload = Some(text.get(payload_start..pos)?);
                }
                Action::End => {
                    pre.verbatim = true;
                    return (pos == b.len()).then_some(());
                }
            }
        }
        None
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

    /// Adds the step: the literal run up to `at`, then `action`.
    fn step(&mut self, at: usize, action: Action) {
        let run = self.text.get(self.last..at).unwrap_or_default();
        self.shape.literal_bytes += run.len();
        self.shape.steps.push(Step {
            literal: run.into(),
            action,
        });
        self.last = at;
    }

    /// The shape, once the whole event was read; `None` when it is too large to keep.
    fn finish(mut self) -> Option<Shape> {
        self.step(self.text.len(), Action::End);
        (self.shape.steps.len() <= MAX_STEPS && self.shape.literal_bytes <= MAX_LITERAL_BYTES).then_some(self.shape)
    }
}

impl Record for Learner<'_> {
    fn value(&mut self, slot: Slot, start: usize, end: usize) {
        self.step(start, Action::of(slot));
        self.last = end;
    }

    fn mark(&mut self, mark: Mark, at: usize) {
        self.step(at, Action::Mark(mark));
    }
}

thread_local! {
    /// Shapes left by the last decoder dropped on this thread (see [`Shapes::from_thread`]).
    static CACHED: RefCell<Vec<Shape>> = const { RefCell::new(Vec::new()) };
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
    /// The shapes the last decoder on this thread left (none if it kept them), with fresh
    /// counters: the learning budget is per decoder, so one producer's ever-new layouts do
    /// not stop the learning for the next request.
    pub(super) fn from_thread() -> Self {
        let list = CACHED
            .try_with(|c| {
                c.try_borrow_mut()
                    .map(|mut v| std::mem::take(&mut *v))
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        Self {
            list,
            hits: 0,
            learned: 0,
        }
    }

    /// Leaves the shapes this decoder used for the next decoder on this thread (the others
    /// belong to a producer that did not show up this time; it relearns them when it does).
    pub(super) fn leave_on_thread(&mut self) {
        let mut list = std::mem::take(&mut self.list);
        list.retain(|s| s.used);
        let _ = CACHED.try_with(|c| {
            if let Ok(mut cached) = c.try_borrow_mut() {
                *cached = list;
            }
        });
    }

    /// Reads `text` through the first known shape that fits it.
    #[inline]
    pub(super) fn read<'a>(&mut self, text: &'a str, scratch: &mut Vec<u64>, out: &mut Scanned<'a>) -> Option<()> {
        for i in 0..self.list.len() {
            let shape = self.list.get_mut(i)?;
            if shape.read(text, scratch, out).is_some() {
                shape.used = true;
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
    /// in place of one this decoder has not used, or else of the least used one, when the
    /// list is full.
    pub(super) fn learn(&mut self, learner: Learner<'_>) {
        let Some(mut shape) = learner.finish() else {
            return;
        };
        self.learned = self.learned.saturating_add(1);
        if self.list.len() >= MAX_SHAPES {
            match self.list.iter().rposition(|s| !s.used) {
                Some(stale) => drop(self.list.remove(stale)),
                None => drop(self.list.pop()),
            }
        }
        shape.used = true;
        self.list.push(shape);
    }

    /// Events read through a shape so far.
    #[cfg(test)]
    pub(super) fn hits(&self) -> u64 {
        self.hits
    }

    /// Shapes learned so far.
    #[cfg(test)]
    pub(super) fn learned(&self) -> u32 {
        self.learned
    }
}
