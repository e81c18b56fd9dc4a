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
enum Kind {
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

struct Cursor<'a, 's> {
    text: &'a str,
    b: &'a [u8],
    pos: usize,
    /// The text holds bytes below 0x20: strings must be checked for raw control characters.
    ctrl: bool,
    /// The text holds no backslash: every string ends at the next quote of `quotes`.
    plain: bool,
    quotes: &'s [u64],
    /// Index in `quotes` of the word `qbits` comes from.
    qword: usize,
    /// Quotes of that word not consumed yet (plain text: strings take the quotes in order).
    qbits: u64,
    depth: u32,
}

impl<'a, 's> Cursor<'a, 's> {
    fn new(text: &'a str, scratch: &'s mut Vec<u64>) -> Self {
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
        let b = self.b;
        let mut p = self.pos;
        if b.get(p) == Some(&b'-') {
            p += 1;
        }
        match b.get(p)? {
            b'0' => p += 1,
            b'1'..=b'9' => {
                p += 1;
                while b.get(p).is_some_and(u8::is_ascii_digit) {
                    p += 1;
                }
            }
            _ => return None,
        }
        if b.get(p) == Some(&b'.') {
            p += 1;
            if !b.get(p).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            while b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
        }
        if matches!(b.get(p), Some(b'e' | b'E')) {
            p += 1;
            if matches!(b.get(p), Some(b'+' | b'-')) {
                p += 1;
            }
            if !b.get(p).is_some_and(u8::is_ascii_digit) {
                return None;
            }
            while b.get(p).is_some_and(u8::is_ascii_digit) {
                p += 1;
            }
        }
        self.pos = p;
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
    fn value(&mut self) -> Option<Kind> {
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

/// Records a field, refusing a second occurrence (serde reports duplicates of known fields).
fn set<'a>(seen: &mut u32, bit: u32, slot: &mut Option<&'a str>, value: Option<&'a str>) -> Option<()> {
    if *seen & (1 << bit) != 0 {
        return None;
    }
    *seen |= 1 << bit;
    *slot = value;
    Some(())
}

/// The payload object at the cursor: its LLM fields, written into `p` (in place: the field
/// views are large and moving them showed up in profiles).
fn payload<'a>(c: &mut Cursor<'a, '_>, p: &mut PayloadFields<'a>) -> Option<()> {
    let mut seen = 0u32;
    c.enter()?;
    c.members(|c, key| {
        let key = key?;
        let (bit, slot) = match key {
            b"operation" => (0, &mut p.operation),
            b"gen_ai.operation.name" => (1, &mut p.otel_operation),
            b"provider" => (2, &mut p.provider),
            b"gen_ai.provider.name" => (3, &mut p.otel_provider),
            b"gen_ai.system" => (4, &mut p.otel_system),
            b"model" => (5, &mut p.model),
            b"gen_ai.response.model" => (6, &mut p.otel_response_model),
            b"gen_ai.request.model" => (7, &mut p.otel_request_model),
            b"latency_ms" => (8, &mut p.latency_ms),
            b"ttft_ms" => (9, &mut p.ttft_ms),
            b"input_tokens" => (10, &mut p.input_tokens),
            b"gen_ai.usage.input_tokens" => (11, &mut p.otel_input_tokens),
            b"gen_ai.usage.prompt_tokens" => (12, &mut p.otel_prompt_tokens),
            b"output_tokens" => (13, &mut p.output_tokens),
            b"gen_ai.usage.output_tokens" => (14, &mut p.otel_output_tokens),
            b"gen_ai.usage.completion_tokens" => (15, &mut p.otel_completion_tokens),
            b"total_tokens" => (16, &mut p.total_tokens),
            b"cost_usd" => (17, &mut p.cost_usd),
            b"status" => (18, &mut p.status),
            b"error_type" => (19, &mut p.error_type),
            b"error.type" => (20, &mut p.otel_error_type),
            b"user_id" => (21, &mut p.user_id),
            b"tenant" => (22, &mut p.tenant),
            _ => return c.value().map(drop),
        };
        let value = c.raw_value()?;
        set(&mut seen, bit, slot, value)
    })?;
    c.depth -= 1;
    Some(())
}

/// The tags object at the cursor: `Some(true)` if every value is a string without escapes,
/// `Some(false)` if some value is not a string, `None` when escapes leave it to serde.
fn tags(c: &mut Cursor<'_, '_>) -> Option<Option<bool>> {
    let mut all_strings = true;
    let mut escapes = false;
    c.enter()?;
    c.members(|c, key| {
        escapes |= key.is_none();
        match c.value()? {
            Kind::Str(e) => escapes |= e,
            _ => all_strings = false,
        }
        Some(())
    })?;
    c.depth -= 1;
    Some(if !all_strings {
        Some(false)
    } else if escapes {
        None
    } else {
        Some(true)
    })
}

/// Scans one event into `out`; `scratch` is reused between calls. `None`: take the serde path
/// (see the module docs; `out` is then meaningless).
pub(crate) fn scan_event<'a>(text: &'a str, scratch: &mut Vec<u64>, out: &mut Scanned<'a>) -> Option<()> {
    let mut c = Cursor::new(text, scratch);
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
        let (bit, slot) = match key {
            b"event_id" => (0, &mut f.event_id),
            b"timestamp" => (1, &mut f.timestamp),
            b"source_module" => (2, &mut f.source_module),
            b"event_type" => (3, &mut f.event_type),
            b"schema_version" => (4, &mut f.schema_version),
            b"severity" => (5, &mut f.severity),
            b"environment" => (6, &mut f.environment),
            b"correlation_id" => (7, &mut f.correlation_id),
            b"parent_event_id" => (8, &mut f.parent_event_id),
            b"tags" => (9, &mut f.tags),
            b"payload" => (10, &mut f.payload),
            _ => return c.value().map(drop),
        };
        let start = c.pos;
        let value = match (bit, c.peek()?) {
            (9, b'{') => {
                pre.tags_ok = tags(c)?;
                Some(c.slice(start, c.pos)?)
            }
            (10, b'{') => {
                payload(c, pre.payload.insert(PayloadFields::default()))?;
                Some(c.slice(start, c.pos)?)
            }
            _ => c.raw_value()?,
        };
        set(&mut seen, bit, slot, value)
    })?;
    c.ws();
    pre.verbatim = c.plain;
    (c.pos == c.b.len()).then_some(())
}
