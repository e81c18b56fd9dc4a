//! File pruning by event time: the bounds a scan's filters put on `timestamp`, checked against a
//! file's recorded bounds before the file is opened (row groups are pruned later by the
//! Parquet reader itself).

use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::event::schema::col;

/// Inclusive bounds on `timestamp` (µs); `None` = unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Lowest time a matching row can have.
    pub lo: Option<i64>,
    /// Highest time a matching row can have.
    pub hi: Option<i64>,
}

fn micros(e: &Expr) -> Option<i64> {
    match e {
        Expr::Literal(ScalarValue::TimestampMicrosecond(Some(v), _), _) => Some(*v),
        Expr::Literal(ScalarValue::TimestampMillisecond(Some(v), _), _) => v.checked_mul(1_000),
        Expr::Literal(ScalarValue::TimestampSecond(Some(v), _), _) => v.checked_mul(1_000_000),
        Expr::Literal(ScalarValue::TimestampNanosecond(Some(v), _), _) => Some(v.div_euclid(1_000)),
        _ => None,
    }
}

fn is_time(e: &Expr, column: &str) -> bool {
    matches!(e, Expr::Column(c) if c.name == column)
}

impl TimeRange {
    /// The bounds the conjunction of `filters` implies (anything it cannot read is ignored,
    /// which only widens the range).
    pub fn from_filters(filters: &[Expr]) -> Self {
        Self::on(col::TIMESTAMP, filters)
    }

    /// [`Self::from_filters`] on another time column (`window_start` of a continuous query's rows).
    pub fn on(column: &str, filters: &[Expr]) -> Self {
        let mut range = Self::default();
        for filter in filters {
            for e in split_conjunction(filter) {
                range.narrow(e, column);
            }
        }
        range
    }

    fn at_least(&mut self, v: i64) {
        self.lo = Some(self.lo.map_or(v, |lo| lo.max(v)));
    }

    fn at_most(&mut self, v: i64) {
        self.hi = Some(self.hi.map_or(v, |hi| hi.min(v)));
    }

    fn narrow(&mut self, e: &Expr, column: &str) {
        match e {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, v) = if is_time(left, column) {
                    match micros(right) {
                        Some(v) => (*op, v),
                        None => return,
                    }
                } else if is_time(right, column) {
                    match (micros(left), op.swap()) {
                        (Some(v), Some(op)) => (op, v),
                        _ => return,
                    }
                } else {
                    return;
                };
                match op {
                    Operator::Gt | Operator::GtEq => self.at_least(v),
                    Operator::Lt | Operator::LtEq => self.at_most(v),
                    Operator::Eq => {
                        self.at_least(v);
                        self.at_most(v);
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_time(expr, column) => {
                if let Some(v) = micros(low) {
                    self.at_least(v);
                }
                if let Some(v) = micros(high) {
                    self.at_most(v);
                }
            }
            _ => {}
        }
    }

    /// Whether a file holding times in `[min, max]` (unknown = anything) can match.
    pub fn overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        let below = matches!((self.hi, min), (Some(hi), Some(min)) if min > hi);
        let above = matches!((self.lo, max), (Some(lo), Some(max)) if max < lo);
        !(below || above)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::{col as column, lit};

    use super::*;

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into())))
    }

    #[test]
    fn reads_comparisons_between_and_flipped_sides() {
        let t = || column(col::TIMESTAMP);
        let r = TimeRange::from_filters(&[t().gt_eq(ts(100)).and(t().lt(ts(200)))]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(100),
                hi: Some(200)
            }
        );
        let r = TimeRange::from_filters(&[ts(150).lt(t()), t().between(ts(0), ts(180))]);
        assert_eq!(
            r,
            TimeRange {
                lo: Some(150),
                hi: Some(180)
            }
        );
        // Other columns, ORs and non-literals say nothing.
        let r = TimeRange::from_filters(&[
            column("model").eq(lit("gpt")),
            t().gt(ts(5)).or(t().lt(ts(1))),
            t().gt(column("ingest_time")),
        ]);
        assert_eq!(r, TimeRange::default());
        let w = || column("window_start");
        assert_eq!(
            TimeRange::on("window_start", &[w().gt_eq(ts(7)), t().lt(ts(9))]).lo,
            Some(7)
        );
        assert_eq!(TimeRange::on("window_start", &[t().lt(ts(9))]), TimeRange::default());
    }

    #[test]
    fn files_outside_the_range_are_skipped_unknown_bounds_kept() {
        let r = TimeRange {
            lo: Some(100),
            hi: Some(200),
        };
        assert!(r.overlaps(Some(150), Some(300)));
        assert!(r.overlaps(Some(200), Some(200)));
        assert!(!r.overlaps(Some(201), Some(300)));
        assert!(!r.overlaps(Some(0), Some(99)));
        assert!(r.overlaps(None, None));
        assert!(TimeRange::default().overlaps(Some(0), Some(1)));
    }
}
