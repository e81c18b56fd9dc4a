//! The single-pass event scanner: walks one JSON event once, validating its syntax as it goes,
//! and returns the raw text of the envelope fields and of the payload's LLM fields (the same
//! slices serde's `RawValue` would give), without building anything.
//!
//! It only answers when it is sure serde would read the event the same way; for anything
//! unusual — escapes in keys, duplicate known keys, control characters, very deep nesting,
//! invalid JSON, a non-object event — it returns `None` and the caller takes the serde path,
//! so accepted events, rejections and their messages stay identical (see `tests_diff`).

use wide::u8x16;

use super::raw::{EventFields, PayloadFields};
use super::validate::Prescanned;

/// What the scanner found in one event.
#[derive(Debug, Default)]
pub(crate) struct Scanned<'a> {
    /// The envelope's fields.
    pub fields: EventFields<'a>,
    /// The payload's fields and the tags check, when known.
    pub pre: Prescanned<'a>,
}

/// Nesting the scanner follows before handing the event to serde (whose limit is 128).
const MAX_DEPTH: u32 = 100;

/// The JSON kind of a scanned value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A string; `true` when it holds escapes.
    Str(bool),
    Null,
    Other,
}

/// Position of the first `"` or `\\` at or after `p`, 16 bytes per step (SSE2 compare and
/// move-mask through `wide`).
#[inline]
fn quote_or_backslash(b: &[u8], mut p: usize) -> Option<usize> {
    let quote = u8x16::splat(b'"');
    let backslash = u8x16::splat(b'\\');
    while let Some(block) = b.get(p..p + 16) {
        let bytes: [u8; 16] = block.try_into().ok()?;
        let v = u8x16::new(bytes);
        let mask = (v.simd_eq(quote) | v.simd_eq(backslash)).to_bitmask();
        if mask != 0 {
            return Some(p + mask.trailing_zeros() as usize);
        }
        p += 16;
    }
    let tail = b.get(p..)?;
    tail.iter().position(|c| *c == b'"' || *c == b'\\').map(|i| p + i)
}

/// The end of the run of ASCII digits starting at `p`, eight bytes per step where it can.
#[inline(always)]
fn digits_end(b: &[u8], mut p: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    while let Some(word) = b.get(p..p + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) {
        let w = u64::from_le_bytes(word);
        // A byte is a digit when its high nibble is 3 and adding 6 keeps it there. A carry
        // out of a byte >= 0xFA only disturbs bytes after it, past the first non-digit.
        let high = w & (0xF0 * ONES);
        let plus6 = w.wrapping_add(0x06 * ONES) & (0xF0 * ONES);
        let other = (high ^ (0x30 * ONES)) | (plus6 ^ (0x30 * ONES));
        if other != 0 {
            return p + (other.trailing_zeros() / 8) as usize;
        }
        p += 8;
    }
    while b.get(p).is_some_and(u8::is_ascii_digit) {
        p += 1;
    }
    p
}

/// The end of the JSON number starting at `p`, checked against the JSON grammar.
#[inline]
pub(super) fn number_end(b: &[u8], mut p: usize) -> Option<usize> {
    if b.get(p) == Some(&b'-') {
        p += 1;
    }
    match b.get(p)? {
        b'0' => p += 1,
        b'1'..=b'9' => p = digits_end(b, p + 1),
        _ => return None,
    }
    if b.get(p) == Some(&b'.') {
        p += 1;
        if !b.get(p).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        p = digits_end(b, p + 1);
    }
    if matches!(b.get(p), Some(b'e' | b'E')) {
        p += 1;
        if matches!(b.get(p), Some(b'+' | b'-')) {
            p += 1;
        }
        if !b.get(p).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        p = digits_end(b, p + 1);
    }
    Some(p)
}

/// One 16-byte block: its quote mask, and its backslash and control bytes (as vectors, OR-ed
/// over the line and turned into masks once at its end).
#[inline(always)]
fn classify(block: &[u8]) -> (u64, u8x16, u8x16) {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(block);
    let v = u8x16::new(bytes);
    let quote = v.simd_eq(u8x16::splat(b'"')).to_bitmask();
    let backslash = v.simd_eq(u8x16::splat(b'\\'));
    let ctrl = v.min(u8x16::splat(0x1f)).simd_eq(v);
    (u64::from(quote), backslash, ctrl)
}

/// One pass over the line, 16 bytes per step: the positions of its quotes as a bitmap (into
/// `quotes`, one bit per byte), and whether it holds any backslash or control byte. Each
/// 64-bit word is assembled in a register and stored once.
fn index_line(b: &[u8], quotes: &mut Vec<u64>) -> (bool, bool) {
    quotes.clear();
    let mut special = u8x16::splat(0);
    let mut ctrl = u8x16::splat(0);
    let mut words = b.chunks_exact(64);
    for word in words.by_ref() {
        let mut q = 0u64;
        for (k, block) in word.chunks_exact(16).enumerate() {
            let (quote, backslash, control) = classify(block);
            q |= quote << (16 * k);
            special |= backslash;
            ctrl |= control;
        }
        quotes.push(q);
    }
    let rest = words.remainder();
    let mut q = 0u64;
    let mut blocks = rest.chunks_exact(16);
    for (k, block) in blocks.by_ref().enumerate() {
        let (quote, backslash, control) = classify(block);
        q |= quote << (16 * k);
        special |= backslash;
        ctrl |= control;
    }
    let (mut any_special, mut any_ctrl) = (special.to_bitmask() != 0, ctrl.to_bitmask() != 0);
    let base = rest.len() - blocks.remainder().len();
    for (j, c) in blocks.remainder().iter().enumerate() {
        match *c {
            b'"' => q |= 1 << (base + j),
            b'\\' => any_special = true,
            c if c < 0x20 => any_ctrl = true,
            _ => {}
        }
    }
    quotes.push(q);
    (any_special, any_ctrl)
}

/// A position in one event's text, with the quote bitmap of the whole text.
pub(super) struct Cursor<'a, 's> {
    text: &'a str,
    b: &'a [u8],
    /// The byte the cursor is on.
    pub(super) pos: usize,
    /// The text holds bytes below 0x20: strings must be checked for raw control characters.
    ctrl: bool,
    /// The text holds no backslash: every string ends at the next quote of `quotes`.
    plain: bool,
    quotes: &'s [u64],
    /// Index in `quotes` of the word `qbits` comes from.
    qword: usize,
    /// Quotes of that word not consumed yet (plain text: strings take the quotes in order).
    qbits: u64,
    /// Objects and arrays the cursor is inside.
    depth: u32,
}

impl<'a, 's> Cursor<'a, 's> {
    /// A cursor at the start of `text`; `scratch` holds its quote bitmap (reused between
    /// events).
    pub(super) fn new(text: &'a str, scratch: &'s mut Vec<u64>) -> Self {
        let b = text.as_bytes();
        let (backslash, ctrl) = index_line(b, scratch);
        Self {
            text,
            b,
            pos: 0,
            ctrl,
            plain: !backslash,
            qword: 0,
            qbits: scratch.first().copied().unwrap_or(0),
            quotes: scratch,
            depth: 0,
        }
    }

    /// Puts the cursor on byte `pos`, `depth` levels deep.
    pub(super) fn place(&mut self, pos: usize, depth: u32) {
        self.pos = pos;
        self.depth = depth;
        self.seek_quotes();
    }

    /// Whether the text holds neither a backslash nor a control byte: every string in it ends
    /// at its next quote, and the quote bitmap alone delimits them.
    pub(super) fn is_plain(&self) -> bool {
        self.plain && !self.ctrl
    }

    /// Skips the quotes before the cursor (after [`Self::place`] moved it over text it did
    /// not read).
    #[inline]
    fn seek_quotes(&mut self) {
        self.qword = self.pos / 64;
        self.qbits = self.quotes.get(self.qword).copied().unwrap_or(0) & (u64::MAX << (self.pos % 64));
    }

    /// The next quote not consumed yet, from the bitmap. In text without backslashes every
    /// quote opens or closes a string and the scanner reads every string in order, so the
    /// quotes come off the bitmap one after the other.
    #[inline]
    fn pop_quote(&mut self) -> Option<usize> {
        while self.qbits == 0 {
            self.qword += 1;
            self.qbits = *self.quotes.get(self.qword)?;
        }
        let at = self.qword * 64 + self.qbits.trailing_zeros() as usize;
        self.qbits &= self.qbits - 1;
        Some(at)
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(c) = self.peek() {
            if c > b' ' || !matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                return;
            }
            self.pos += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Some(())
        } else {
            None
        }
    }

    fn slice(&self, start: usize, end: usize) -> Option<&'a str> {
        self.text.get(start..end)
    }

    /// A string at the cursor (on its opening quote); returns whether it holds escapes.
    #[inline(always)]
    fn string(&mut self) -> Option<bool> {
        // The common case, kept small enough to inline: no backslash or control byte in the
        // text, so the string is the bytes up to its closing quote.
        if self.plain && !self.ctrl {
            if self.peek() != Some(b'"') || self.pop_quote()? != self.pos {
                return None;
            }
            self.pos = self.pop_quote()? + 1;
            return Some(false);
        }
        self.string_slow()
    }

    /// [`Self::string`] for text with backslashes or control bytes.
    #[inline(never)]
    fn string_slow(&mut self) -> Option<bool> {
        self.eat(b'"')?;
        let start = self.pos;
        if self.plain {
            // Out of step (never expected): let serde read the event.
            if self.pop_quote()? + 1 != start {
                return None;
            }
            let end = self.pop_quote()?;
            if self.ctrl && self.b.get(start..end)?.iter().any(|c| *c < 0x20) {
                return None;
            }
            self.pos = end + 1;
            return Some(false);
        }
        let mut escaped = false;
        let mut p = self.pos;
        loop {
            p = quote_or_backslash(self.b, p)?;
            if self.b.get(p) == Some(&b'"') {
                break;
            }
            escaped = true;
            p += 1;
            match self.b.get(p)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => p += 1,
                b'u' => {
                    let hex = self.b.get(p + 1..p + 5)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    p += 5;
                }
                _ => return None,
            }
        }
        if self.ctrl && self.b.get(start..p)?.iter().any(|c| *c < 0x20) {
            return None;
        }
        self.pos = p + 1;
        Some(escaped)
    }

    /// A number at the cursor, checked against the JSON grammar.
    fn number(&mut self) -> Option<()> {
        self.pos = number_end(self.b, self.pos)?;
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.pos..self.pos + word.len())? == word {
            self.pos += word.len();
            Some(())
        } else {
            None
        }
    }

    /// Any value at the cursor, validated and skipped.
    pub(super) fn value(&mut self) -> Option<Kind> {
        match self.peek()? {
            b'"' => self.string().map(Kind::Str),
            b'{' => {
                self.enter()?;
                self.members(|c, _| c.value().map(drop))?;
                self.depth -= 1;
                Some(Kind::Other)
            }
            b'[' => {
                self.enter()?;
                self.elements()?;
                self.depth -= 1;
                Some(Kind::Other)
            }
            b't' => self.literal(b"true").map(|()| Kind::Other),
            b'f' => self.literal(b"false").map(|()| Kind::Other),
            b'n' => self.literal(b"null").map(|()| Kind::Null),
            b'-' | b'0'..=b'9' => self.number().map(|()| Kind::Other),
            _ => None,
        }
    }

    /// One level deeper (on an object's or array's opening byte); `None` past the limit.
    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// The members of an object (cursor on `{`): calls `member` with the cursor on each value
    /// and the key's text (`None` when the key holds escapes).
    fn members(&mut self, mut member: impl FnMut(&mut Self, Option<&'a [u8]>) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key_start = self.pos + 1;
            let escaped = self.string()?;
            let key = (!escaped).then(|| self.b.get(key_start..self.pos - 1)).flatten();
            self.ws();
            self.eat(b':')?;
            self.ws();
            member(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// The elements of an array (cursor on `[`).
    fn elements(&mut self) -> Option<()> {
        self.eat(b'[')?;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value()?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A value's raw text (`None` inside for `null`, as serde's `Option<&RawValue>`).
    #[inline]
    fn raw_value(&mut self) -> Option<Option<&'a str>> {
        let start = self.pos;
        let kind = self.value()?;
        if kind == Kind::Null {
            Some(None)
        } else {
            self.slice(start, self.pos).map(Some)
        }
    }
}

/// Where a value of an event goes, as told to a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// An envelope field (see [`env_slot`]).
    Env(u8),
    /// One of the payload's LLM fields (see [`payload_slot`]).
    Payload(u8),
    /// A value of `tags` (must be a string).
    Tag,
    /// The value of a key nobody reads: validated and skipped.
    Skip,
}

/// Where the `tags` and `payload` objects begin and end, as told to a [`Record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mark {
    /// On the `{` of `tags`.
    TagsStart,
    /// After the `}` of `tags`.
    TagsEnd,
    /// On the `{` of `payload`.
    PayloadStart,
    /// After the `}` of `payload`.
    PayloadEnd,
}

/// What the scanner tells about the layout of an event as it reads it (used to learn its
/// shape, see [`super::shape`]): each value with its byte range, and the object boundaries.
pub(super) trait Record {
    /// A value in `start..end` went to `slot`.
    fn value(&mut self, slot: Slot, start: usize, end: usize);
    /// The boundary `mark` is at byte `at`.
    fn mark(&mut self, mark: Mark, at: usize);
}

/// Records nothing (the plain scan).
pub(super) struct NoRecord;

impl Record for NoRecord {
    #[inline(always)]
    fn value(&mut self, _: Slot, _: usize, _: usize) {}
    #[inline(always)]
    fn mark(&mut self, _: Mark, _: usize) {}
}

/// Envelope field number of `tags`.
pub(super) const TAGS: u8 = 9;
/// Envelope field number of `payload`.
pub(super) const PAYLOAD: u8 = 10;

/// The envelope field number of a key.
#[inline]
fn env_bit(key: &[u8]) -> Option<u8> {
    Some(match key {
        b"event_id" => 0,
        b"timestamp" => 1,
        b"source_module" => 2,
        b"event_type" => 3,
        b"schema_version" => 4,
        b"severity" => 5,
        b"environment" => 6,
        b"correlation_id" => 7,
        b"parent_event_id" => 8,
        b"tags" => TAGS,
        b"payload" => PAYLOAD,
        _ => return None,
    })
}

/// The envelope field with number `bit`.
#[inline]
pub(super) fn env_slot<'a, 'f>(f: &'f mut EventFields<'a>, bit: u8) -> Option<&'f mut Option<&'a str>> {
    Some(match bit {
        0 => &mut f.event_id,
        1 => &mut f.timestamp,
        2 => &mut f.source_module,
        3 => &mut f.event_type,
        4 => &mut f.schema_version,
        5 => &mut f.severity,
        6 => &mut f.environment,
        7 => &mut f.correlation_id,
        8 => &mut f.parent_event_id,
        TAGS => &mut f.tags,
        PAYLOAD => &mut f.payload,
        _ => return None,
    })
}

/// The payload field number of a key.
#[inline]
fn payload_bit(key: &[u8]) -> Option<u8> {
    Some(match key {
        b"operation" => 0,
        b"gen_ai.operation.name" => 1,
        b"provider" => 2,
        b"gen_ai.provider.name" => 3,
        b"gen_ai.system" => 4,
        b"model" => 5,
        b"gen_ai.response.model" => 6,
        b"gen_ai.request.model" => 7,
        b"latency_ms" => 8,
        b"ttft_ms" => 9,
        b"input_tokens" => 10,
        b"gen_ai.usage.input_tokens" => 11,
        b"gen_ai.usage.prompt_tokens" => 12,
        b"output_tokens" => 13,
        b"gen_ai.usage.output_tokens" => 14,
        b"gen_ai.usage.completion_tokens" => 15,
        b"total_tokens" => 16,
        b"cost_usd" => 17,
        b"status" => 18,
        b"error_type" => 19,
        b"error.type" => 20,
        b"user_id" => 21,
        b"tenant" => 22,
        _ => return None,
    })
}

/// The payload field with number `bit`.
#[inline]
pub(super) fn payload_slot<'a, 'f>(p: &'f mut PayloadFields<'a>, bit: u8) -> Option<&'f mut Option<&'a str>> {
    Some(match bit {
        0 => &mut p.operation,
        1 => &mut p.otel_operation,
        2 => &mut p.provider,
        3 => &mut p.otel_provider,
        4 => &mut p.otel_system,
        5 => &mut p.model,
        6 => &mut p.otel_response_model,
        7 => &mut p.otel_request_model,
        8 => &mut p.latency_ms,
        9 => &mut p.ttft_ms,
        10 => &mut p.input_tokens,
        11 => &mut p.otel_input_tokens,
        12 => &mut p.otel_prompt_tokens,
        13 => &mut p.output_tokens,
        14 => &mut p.otel_output_tokens,
        15 => &mut p.otel_completion_tokens,
        16 => &mut p.total_tokens,
        17 => &mut p.cost_usd,
        18 => &mut p.status,
        19 => &mut p.error_type,
        20 => &mut p.otel_error_type,
        21 => &mut p.user_id,
        22 => &mut p.tenant,
        _ => return None,
    })
}

/// Records a field, refusing a second occurrence (serde reports duplicates of known fields).
fn set<'a>(seen: &mut u32, bit: u8, slot: &mut Option<&'a str>, value: Option<&'a str>) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    *slot = value;
    Some(())
}

/// The payload object at the cursor: its LLM fields, written into `p` (in place: the field
/// views are large and moving them showed up in profiles).
fn payload<'a>(c: &mut Cursor<'a, '_>, p: &mut PayloadFields<'a>, rec: &mut impl Record) -> Option<()> {
    let mut seen = 0u32;
    c.enter()?;
    c.members(|c, key| {
        let key = key?;
        let start = c.pos;
        let Some(bit) = payload_bit(key) else {
            c.value()?;
            rec.value(Slot::Skip, start, c.pos);
            return Some(());
        };
        let value = c.raw_value()?;
        rec.value(Slot::Payload(bit), start, c.pos);
        set(&mut seen, bit, payload_slot(p, bit)?, value)
    })?;
    c.depth -= 1;
    Some(())
}

/// Whether a `tags` object is usable as is: `Some(true)` if every value is a string without
/// escapes, `Some(false)` if some value is not a string, `None` when escapes leave it to serde.
pub(super) fn tags_verdict(all_strings: bool, escapes: bool) -> Option<bool> {
    if !all_strings {
        Some(false)
    } else if escapes {
        None
    } else {
        Some(true)
    }
}

/// The tags object at the cursor: see [`tags_verdict`].
fn tags(c: &mut Cursor<'_, '_>, rec: &mut impl Record) -> Option<Option<bool>> {
    let mut all_strings = true;
    let mut escapes = false;
    c.enter()?;
    c.members(|c, key| {
        escapes |= key.is_none();
        let start = c.pos;
        match c.value()? {
            Kind::Str(e) => escapes |= e,
            _ => all_strings = false,
        }
        rec.value(Slot::Tag, start, c.pos);
        Some(())
    })?;
    c.depth -= 1;
    Some(tags_verdict(all_strings, escapes))
}

/// Scans one event into `out`; `scratch` is reused between calls. `None`: take the serde path
/// (see the module docs; `out` is then meaningless).
#[cfg(test)]
pub(crate) fn scan_event<'a>(text: &'a str, scratch: &mut Vec<u64>, out: &mut Scanned<'a>) -> Option<()> {
    scan_with(&mut Cursor::new(text, scratch), out, &mut NoRecord)
}

/// Scans the event under `c` (from its start) into `out`, telling `rec` its layout. `None`:
/// take the serde path (see the module docs; `out` is then meaningless).
pub(super) fn scan_with<'a>(c: &mut Cursor<'a, '_>, out: &mut Scanned<'a>, rec: &mut impl Record) -> Option<()> {
    *out = Scanned::default();
    let Scanned { fields: f, pre } = out;
    let mut seen = 0u32;
    c.ws();
    if c.peek()? != b'{' {
        return None;
    }
    c.enter()?;
    c.members(|c, key| {
        let key = key?;
        let start = c.pos;
        let Some(bit) = env_bit(key) else {
            c.value()?;
            rec.value(Slot::Skip, start, c.pos);
            return Some(());
        };
        let value = match (bit, c.peek()?) {
            (TAGS, b'{') => {
                rec.mark(Mark::TagsStart, start);
                pre.tags_ok = tags(c, rec)?;
                rec.mark(Mark::TagsEnd, c.pos);
                Some(c.slice(start, c.pos)?)
            }
            (PAYLOAD, b'{') => {
                rec.mark(Mark::PayloadStart, start);
                payload(c, pre.payload.insert(PayloadFields::default()), rec)?;
                rec.mark(Mark::PayloadEnd, c.pos);
                Some(c.slice(start, c.pos)?)
            }
            _ => {
                let value = c.raw_value()?;
                rec.value(Slot::Env(bit), start, c.pos);
                value
            }
        };
        set(&mut seen, bit, env_slot(f, bit)?, value)
    })?;
    c.ws();
    pre.verbatim = c.plain;
    (c.pos == c.b.len()).then_some(())
}
