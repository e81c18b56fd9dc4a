//! Bounds on the shape of user SQL, checked on the token stream before anything parses it into
//! a tree: every later step (the parser's tree, its visitors and `Drop`, DataFusion's planner,
//! optimizer and expression evaluation) recurses over expressions, and a 50,000-term `1+1+...`
//! is a tree 50,000 levels deep. The tokenizer is a loop, so counting here cannot overflow a
//! stack whatever the text.
//!
//! Operators bound the depth of an expression (a chain of `n` binary operators is at most `n`
//! deep); set operations (`UNION`, `INTERSECT`, `EXCEPT`) bound the depth of a query; the token
//! count bounds everything else. Parenthesised nesting is already bounded by the parser's own
//! recursion limit (a 400 `invalid_sql` naming it).

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use serde::{Deserialize, Serialize};

use super::GuardError;

/// The `[query]` limits on statement shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComplexityLimits {
    /// Most operators (`+ - * / % || = < > AND OR NOT LIKE WHEN ...`) in one statement.
    pub max_expr_terms: usize,
    /// Most `UNION`/`INTERSECT`/`EXCEPT` in one statement.
    pub max_set_operations: usize,
    /// Most tokens in one statement.
    pub max_sql_tokens: usize,
}

impl Default for ComplexityLimits {
    fn default() -> Self {
        Self {
            max_expr_terms: 1_000,
            max_set_operations: 100,
            max_sql_tokens: 100_000,
        }
    }
}

/// What a statement contains.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Operators.
    pub operators: usize,
    /// Set operations.
    pub set_operations: usize,
    /// Tokens other than whitespace.
    pub tokens: usize,
}

fn is_operator(token: &Token) -> bool {
    match token {
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::DuckIntDiv
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Ampersand
        | Token::Pipe
        | Token::Caret
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::Arrow
        | Token::LongArrow
        | Token::HashArrow
        | Token::HashLongArrow
        | Token::Tilde
        | Token::TildeAsterisk
        | Token::ExclamationMarkTilde
        | Token::ExclamationMarkTildeAsterisk
        | Token::DoubleColon => true,
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::XOR
                | Keyword::WHEN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::IS
                | Keyword::IN
        ),
        _ => false,
    }
}

/// Counts the shape of `sql`; `None` when it does not tokenize (the parser reports that).
pub fn shape(sql: &str) -> Option<Shape> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let mut s = Shape::default();
    for t in &tokens {
        if matches!(t, Token::Whitespace(_)) {
            continue;
        }
        s.tokens += 1;
        if is_operator(t) {
            s.operators += 1;
        } else if let Token::Word(w) = t
            && matches!(w.keyword, Keyword::UNION | Keyword::INTERSECT | Keyword::EXCEPT)
        {
            s.set_operations += 1;
        }
    }
    Some(s)
}

/// Refuses statements beyond `limits` with [`GuardError::TooComplex`] naming the limit.
pub fn check(sql: &str, limits: &ComplexityLimits) -> Result<(), GuardError> {
    let Some(s) = shape(sql) else { return Ok(()) };
    let over = |what: &str, n: usize, key: &str, max: usize| {
        GuardError::TooComplex(format!(
            "the statement has {n} {what}, more than query.{key} = {max}; split it into smaller queries"
        ))
    };
    if s.tokens > limits.max_sql_tokens {
        return Err(over("tokens", s.tokens, "max_sql_tokens", limits.max_sql_tokens));
    }
    if s.operators > limits.max_expr_terms {
        return Err(over("operators", s.operators, "max_expr_terms", limits.max_expr_terms));
    }
    if s.set_operations > limits.max_set_operations {
        return Err(over(
            "set operations (UNION/INTERSECT/EXCEPT)",
            s.set_operations,
            "max_set_operations",
            limits.max_set_operations,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(term: &str, op: &str, n: usize) -> String {
        vec![term; n].join(op)
    }

    #[test]
    fn counts_operators_set_operations_and_tokens() {
        let s = shape("SELECT a + 1, b FROM t WHERE a = 2 AND b IS NOT NULL UNION ALL SELECT 1, 2").expect("tokens");
        assert_eq!(s.operators, 5, "+ = AND IS NOT");
        assert_eq!(s.set_operations, 1);
    }

    #[test]
    fn refuses_long_chains_naming_the_limit() {
        let limits = ComplexityLimits::default();
        for (sql, key) in [
            (format!("SELECT {}", chain("1", "+", 5_000)), "max_expr_terms"),
            (format!("SELECT {}", chain("1", "+", 50_000)), "max_expr_terms"),
            (
                format!("SELECT 1 WHERE {}", chain("1=1", " OR ", 1_000)),
                "max_expr_terms",
            ),
            (
                format!("SELECT CASE {} END", chain("WHEN 1=1 THEN 1", " ", 3_000)),
                "max_expr_terms",
            ),
            (chain("SELECT 1", " UNION ALL ", 500), "max_set_operations"),
            (format!("SELECT {}", chain("1", ",", 60_000)), "max_sql_tokens"),
        ] {
            match check(&sql, &limits) {
                Err(GuardError::TooComplex(m)) => assert!(m.contains(key), "{m}"),
                other => panic!("{key}: {other:?}"),
            }
        }
        assert_eq!(check(&format!("SELECT {}", chain("1", "+", 999)), &limits), Ok(()));
    }
}
