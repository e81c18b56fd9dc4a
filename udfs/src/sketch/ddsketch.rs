//! A DDSketch (Masson, Rim & Lee, VLDB 2019): a mergeable quantile sketch with a relative
//! error guarantee.
//!
//! Every finite value `x` is counted in a bucket: `|x| <= MIN_INDEXABLE` in the zero bucket,
//! otherwise bucket `i = ceil(log_gamma(|x|))` of the positive or negative store, where
//! `gamma = (1 + alpha) / (1 - alpha)`. A bucket `i` stands for the value `2 gamma^i / (gamma + 1)`,
//! which is within `alpha` relative error of every value in `(gamma^(i-1), gamma^i]`.
//!
//! Merging adds bucket counts, so it is associative and commutative, and a merged sketch is
//! identical to the sketch of the concatenated input (1-minute sketches roll up exactly into
//! hourly sketches). Each store keeps at most [`MAX_BINS`] buckets; beyond that the buckets of
//! the smallest magnitudes are collapsed together (this needs a value range wider than
//! `gamma^2048 ≈ 6e17` and is the only case where the error bound is lost, for low ranks only).
//!
//! Why our own rather than the `sketches-ddsketch` crate: rollup rows keep sketch states in
//! Parquet and PostgreSQL for years, so the byte format must be ours — versioned, stable across
//! crate upgrades, and validated so that a truncated or foreign blob is a decode error rather
//! than a panic or a wrong percentile.
//!
//! # Binary format (version 1, little endian)
//!
//! ```text
//! u8   version (= 1)
//! f64  alpha
//! u64  zero_count
//! f64  min, f64 max                (min = +inf, max = -inf when empty)
//! store positive, store negative   store := i32 offset, u32 n_bins, n_bins × LEB128 u64 counts
//! ```
//! Trailing bytes, a bad version, truncation or inconsistent counts are decode errors.

use datafusion::common::{DataFusionError, Result, exec_err};

/// Default relative accuracy: 1%.
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Maximum number of buckets per store (positive and negative) before collapsing.
pub const MAX_BINS: usize = 2048;
/// Format version written as the first byte.
pub const FORMAT_VERSION: u8 = 1;
/// Values with a magnitude at or below this are counted in the zero bucket.
pub const MIN_INDEXABLE: f64 = 1e-300;

/// A dense run of bucket counts starting at bucket index `offset`.
#[derive(Debug, Clone, Default, PartialEq)]
struct Store {
    offset: i32,
    counts: Vec<u64>,
}

impl Store {
    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn end(&self) -> i32 {
        self.offset + self.counts.len() as i32
    }

    /// Adds `n` to bucket `idx`, growing the dense range (with slack) and collapsing the lowest
    /// buckets when the range would exceed [`MAX_BINS`].
    fn add(&mut self, idx: i32, n: u64) {
        if self.counts.is_empty() {
            self.offset = idx;
            self.counts.push(n);
            return;
        }
        let mut idx = idx;
        let hi = self.end().max(idx + 1);
        let lo = self.offset.min(idx);
        if (hi - lo) as usize > MAX_BINS {
            let new_lo = hi - MAX_BINS as i32;
            self.collapse_below(new_lo);
            idx = idx.max(new_lo);
        }
        if idx < self.offset {
            // grow at the front with slack so that repeated small values do not shift each time
            let need = (self.offset - idx) as usize;
            let exact_len = (self.end() - idx) as usize;
            let slack = self.counts.len().min(32).min(MAX_BINS - exact_len);
            let grow = need + slack;
            let mut counts = vec![0u64; grow];
            counts.extend_from_slice(&self.counts);
            self.counts = counts;
            self.offset -= grow as i32;
        } else if idx >= self.end() {
            self.counts.resize((idx - self.offset + 1) as usize, 0);
        }
        self.counts[(idx - self.offset) as usize] += n;
    }

    /// Folds every bucket below `new_lo` into bucket `new_lo`.
    fn collapse_below(&mut self, new_lo: i32) {
        if new_lo <= self.offset {
            return;
        }
        let cut = ((new_lo - self.offset) as usize).min(self.counts.len());
        let folded: u64 = self.counts[..cut].iter().sum();
        self.counts.drain(..cut);
        self.offset = new_lo;
        if self.counts.is_empty() {
            self.counts.push(0);
        }
        self.counts[0] += folded;
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(first, last)` indices with a non-zero count.
    fn trimmed(&self) -> Option<(usize, usize)> {
        let first = self.counts.iter().position(|&c| c != 0)?;
        let last = self.counts.iter().rposition(|&c| c != 0)?;
        Some((first, last))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self.trimmed() {
            None => {
                out.extend_from_slice(&0i32.to_le_bytes());
                out.extend_from_slice(&0u32.to_le_bytes());
            }
            Some((first, last)) => {
                out.extend_from_slice(&(self.offset + first as i32).to_le_bytes());
                out.extend_from_slice(&((last - first + 1) as u32).to_le_bytes());
                for &c in &self.counts[first..=last] {
                    write_varint(out, c);
                }
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self> {
        let offset = r.i32()?;
        let n = r.u32()? as usize;
        if n > MAX_BINS {
            return exec_err!("corrupt sketch: store has {n} bins (max {MAX_BINS})");
        }
        if offset.checked_add(n as i32).is_none() {
            return exec_err!("corrupt sketch: store offset {offset} out of range");
        }
        let mut counts = Vec::with_capacity(n);
        for _ in 0..n {
            counts.push(r.varint()?);
        }
        Ok(Self { offset, counts })
    }
}

/// A DDSketch over `f64` values. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct DDSketch {
    alpha: f64,
    gamma_ln: f64,
    zero_count: u64,
    min: f64,
    max: f64,
    positive: Store,
    negative: Store,
}

impl Default for DDSketch {
    fn default() -> Self {
        Self::new(DEFAULT_ALPHA)
    }
}

impl DDSketch {
    /// An empty sketch with relative accuracy `alpha` (0 < alpha < 1).
    pub fn new(alpha: f64) -> Self {
        let gamma = (1.0 + alpha) / (1.0 - alpha);
        Self {
            alpha,
            gamma_ln: gamma.ln(),
            zero_count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            positive: Store::default(),
            negative: Store::default(),
        }
    }

    /// The relative accuracy of this sketch.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Number of values counted.
    pub fn count(&self) -> u64 {
        self.zero_count + self.positive.total() + self.negative.total()
    }

    /// True when no value was counted.
    pub fn is_empty(&self) -> bool {
        self.zero_count == 0 && self.positive.is_empty() && self.negative.is_empty()
    }

    /// Exact minimum of the counted values (`None` when empty).
    pub fn min(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.min)
    }

    /// Exact maximum of the counted values (`None` when empty).
    pub fn max(&self) -> Option<f64> {
        (!self.is_empty()).then_some(self.max)
    }

    #[inline]
    fn index(&self, magnitude: f64) -> i32 {
        (magnitude.ln() / self.gamma_ln).ceil() as i32
    }

    #[inline]
    fn value_of(&self, idx: i32) -> f64 {
        // 2 γ^i / (γ + 1) = γ^i · (1 - α)
        (idx as f64 * self.gamma_ln).exp() * (1.0 - self.alpha)
    }

    /// Counts `x`. NaN and ±infinity are ignored (they have no bucket); returns whether `x`
    /// was counted.
    #[inline]
    pub fn add(&mut self, x: f64) -> bool {
        if !x.is_finite() {
            return false;
        }
        if x > MIN_INDEXABLE {
            let i = self.index(x);
            self.positive.add(i, 1);
        } else if x < -MIN_INDEXABLE {
            let i = self.index(-x);
            self.negative.add(i, 1);
        } else {
            self.zero_count += 1;
        }
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        true
    }

    /// Adds every bucket of `other` into `self`. Errors if the accuracies differ.
    pub fn merge(&mut self, other: &DDSketch) -> Result<()> {
        if (self.alpha - other.alpha).abs() > 1e-12 {
            return exec_err!(
                "cannot merge sketches with different accuracy ({} vs {})",
                self.alpha,
                other.alpha
            );
        }
        if other.is_empty() {
            return Ok(());
        }
        for (k, &c) in other.positive.counts.iter().enumerate() {
            if c != 0 {
                self.positive.add(other.positive.offset + k as i32, c);
            }
        }
        for (k, &c) in other.negative.counts.iter().enumerate() {
            if c != 0 {
                self.negative.add(other.negative.offset + k as i32, c);
            }
        }
        self.zero_count += other.zero_count;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        Ok(())
    }

    /// Approximate `q`-quantile: the value of rank `floor(q · (count − 1))` in sorted order
    /// (numpy's `method="lower"`), within `alpha` relative error, clamped to `[min, max]`.
    /// `None` for an empty sketch; `q` must be within `[0, 1]`.
    pub fn quantile(&self, q: f64) -> Result<Option<f64>> {
        if !(0.0..=1.0).contains(&q) {
            return exec_err!("quantile must be between 0 and 1, got {q}");
        }
        let n = self.count();
        if n == 0 {
            return Ok(None);
        }
        let rank = (q * (n - 1) as f64).floor() as u64;
        if rank == 0 {
            return Ok(Some(self.min));
        }
        if rank == n - 1 {
            return Ok(Some(self.max));
        }
        let mut seen = 0u64;
        // negative values: largest magnitude first
        for (k, &c) in self.negative.counts.iter().enumerate().rev() {
            seen += c;
            if seen > rank {
                let v = -self.value_of(self.negative.offset + k as i32);
                return Ok(Some(v.clamp(self.min, self.max)));
            }
        }
        seen += self.zero_count;
        if seen > rank {
            return Ok(Some(0.0f64.clamp(self.min, self.max)));
        }
        for (k, &c) in self.positive.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let v = self.value_of(self.positive.offset + k as i32);
                return Ok(Some(v.clamp(self.min, self.max)));
            }
        }
        Ok(Some(self.max))
    }

    /// Approximate heap size in bytes.
    pub fn size(&self) -> usize {
        std::mem::size_of::<Self>() + 8 * (self.positive.counts.capacity() + self.negative.counts.capacity())
    }

    /// Serializes to the versioned binary format of the module documentation.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48 + self.positive.counts.len() + 16);
        self.write_to(&mut out);
        out
    }

    /// Appends the serialized sketch to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&self.alpha.to_le_bytes());
        out.extend_from_slice(&self.zero_count.to_le_bytes());
        out.extend_from_slice(&self.min.to_le_bytes());
        out.extend_from_slice(&self.max.to_le_bytes());
        self.positive.encode(out);
        self.negative.encode(out);
    }

    /// Parses the binary format; any malformed input is an execution error, never a panic.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return exec_err!(
                "unsupported sketch format version {version} (expected {FORMAT_VERSION}); \
                 is this a value produced by quantile_sketch()?"
            );
        }
        let alpha = r.f64()?;
        if !(alpha > 0.0 && alpha < 1.0) {
            return exec_err!("corrupt sketch: relative accuracy {alpha} not in (0, 1)");
        }
        let mut s = DDSketch::new(alpha);
        s.zero_count = r.u64()?;
        s.min = r.f64()?;
        s.max = r.f64()?;
        s.positive = Store::decode(&mut r)?;
        s.negative = Store::decode(&mut r)?;
        if r.pos != bytes.len() {
            return exec_err!("corrupt sketch: {} trailing bytes", bytes.len().saturating_sub(r.pos));
        }
        let n = s
            .zero_count
            .checked_add(s.positive.total())
            .and_then(|t| t.checked_add(s.negative.total()));
        match n {
            None => return exec_err!("corrupt sketch: count overflow"),
            Some(0) => {
                if s.min != f64::INFINITY || s.max != f64::NEG_INFINITY {
                    return exec_err!("corrupt sketch: empty sketch with min/max set");
                }
            }
            Some(_) => {
                if !(s.min.is_finite() && s.max.is_finite() && s.min <= s.max) {
                    return exec_err!("corrupt sketch: invalid min/max");
                }
            }
        }
        Ok(s)
    }
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        let end = self.pos + N;
        let slice = self.bytes.get(self.pos..end).ok_or_else(|| {
            DataFusionError::Execution(format!(
                "corrupt sketch: truncated at byte {} of {}",
                self.pos,
                self.bytes.len()
            ))
        })?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(slice);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take()?))
    }
    fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        exec_err!("corrupt sketch: varint too long")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact_lower(sorted: &[f64], q: f64) -> f64 {
        sorted[(q * (sorted.len() - 1) as f64).floor() as usize]
    }

    /// Deterministic pseudo-random lognormal-ish data (xorshift + Box-Muller).
    fn lognormal(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..n)
            .map(|_| {
                let (u1, u2) = (next().max(1e-12), next());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (1.0 + 2.0 * z).exp()
            })
            .collect()
    }

    #[test]
    fn quantiles_within_relative_error() {
        let data = lognormal(50_000, 42);
        let mut s = DDSketch::default();
        for &x in &data {
            assert!(s.add(x));
        }
        let mut sorted = data.clone();
        sorted.sort_by(f64::total_cmp);
        for q in [0.0, 0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0] {
            let est = s.quantile(q).expect("valid q").expect("non-empty");
            let exact = exact_lower(&sorted, q);
            let rel = (est - exact).abs() / exact;
            assert!(rel <= 0.01 + 1e-12, "q={q} est={est} exact={exact} rel={rel}");
        }
    }

    #[test]
    fn merge_equals_sketch_of_union() {
        let data = lognormal(10_000, 7);
        let mut whole = DDSketch::default();
        let mut a = DDSketch::default();
        let mut b = DDSketch::default();
        for (i, &x) in data.iter().enumerate() {
            let x = if i % 3 == 0 { -x } else { x };
            whole.add(x);
            if i % 2 == 0 {
                a.add(x)
            } else {
                b.add(x)
            };
        }
        a.merge(&b).expect("same alpha");
        for q in [0.05, 0.3, 0.5, 0.77, 0.99] {
            assert_eq!(a.quantile(q).expect("q"), whole.quantile(q).expect("q"));
        }
        assert_eq!(a.count(), whole.count());
    }

    #[test]
    fn roundtrip_and_corruption() {
        let mut s = DDSketch::default();
        for x in [-3.5, 0.0, 1.0, 2.0, 1000.0, 1e-320] {
            s.add(x);
        }
        let bytes = s.to_bytes();
        let back = DDSketch::from_bytes(&bytes).expect("roundtrip");
        assert_eq!(back.count(), 6);
        assert_eq!(back.quantile(0.5).expect("q"), s.quantile(0.5).expect("q"));
        for cut in 0..bytes.len() {
            assert!(DDSketch::from_bytes(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = 9;
        let err = DDSketch::from_bytes(&bad).expect_err("bad version");
        assert!(err.to_string().contains("version 9"), "{err}");
        let mut extra = bytes;
        extra.push(0);
        assert!(DDSketch::from_bytes(&extra).is_err());
    }

    #[test]
    fn non_finite_ignored_and_empty() {
        let mut s = DDSketch::default();
        assert!(!s.add(f64::NAN));
        assert!(!s.add(f64::INFINITY));
        assert_eq!(s.quantile(0.5).expect("q"), None);
        assert!(s.quantile(1.5).is_err());
        s.add(42.0);
        assert_eq!(s.quantile(0.0).expect("q"), Some(42.0));
        assert_eq!(s.quantile(0.5).expect("q"), Some(42.0));
    }

    #[test]
    fn collapse_keeps_bin_bound() {
        let mut s = DDSketch::default();
        for e in -200..200 {
            s.add(10f64.powi(e));
        }
        assert!(s.positive.counts.len() <= MAX_BINS);
        assert_eq!(s.count(), 400);
        // high quantiles keep their accuracy
        let p99 = s.quantile(0.99).expect("q").expect("non-empty");
        let exact = 10f64.powi(-200 + (0.99f64 * 399.0).floor() as i32);
        assert!((p99 - exact).abs() / exact <= 0.01 + 1e-12);
    }
}
