//! The rollups shipped in `queries/`, compiled into the binary and registered at startup
//! (finer windows first: coarser ones read them).

use super::CqError;
use super::catalog::OptionsInput;
use super::create::parse_create;

/// `(file stem, file contents)` of every shipped query, in dependency order.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "llm_provider_model_1m",
        include_str!("../../queries/llm_provider_model_1m.sql"),
    ),
    (
        "llm_provider_model_5m",
        include_str!("../../queries/llm_provider_model_5m.sql"),
    ),
    (
        "llm_provider_model_15m",
        include_str!("../../queries/llm_provider_model_15m.sql"),
    ),
    (
        "llm_provider_model_1h",
        include_str!("../../queries/llm_provider_model_1h.sql"),
    ),
    (
        "llm_provider_model_6h",
        include_str!("../../queries/llm_provider_model_6h.sql"),
    ),
    (
        "llm_provider_model_1d",
        include_str!("../../queries/llm_provider_model_1d.sql"),
    ),
    (
        "llm_provider_model_1w",
        include_str!("../../queries/llm_provider_model_1w.sql"),
    ),
    (
        "llm_provider_model_1mo",
        include_str!("../../queries/llm_provider_model_1mo.sql"),
    ),
    (
        "llm_module_type_1m",
        include_str!("../../queries/llm_module_type_1m.sql"),
    ),
    (
        "llm_module_type_5m",
        include_str!("../../queries/llm_module_type_5m.sql"),
    ),
    (
        "llm_module_type_15m",
        include_str!("../../queries/llm_module_type_15m.sql"),
    ),
    (
        "llm_module_type_1h",
        include_str!("../../queries/llm_module_type_1h.sql"),
    ),
    (
        "llm_module_type_6h",
        include_str!("../../queries/llm_module_type_6h.sql"),
    ),
    (
        "llm_module_type_1d",
        include_str!("../../queries/llm_module_type_1d.sql"),
    ),
    (
        "llm_module_type_1w",
        include_str!("../../queries/llm_module_type_1w.sql"),
    ),
    (
        "llm_module_type_1mo",
        include_str!("../../queries/llm_module_type_1mo.sql"),
    ),
    (
        "llm_tenant_model_1m",
        include_str!("../../queries/llm_tenant_model_1m.sql"),
    ),
    (
        "llm_tenant_model_1h",
        include_str!("../../queries/llm_tenant_model_1h.sql"),
    ),
];

/// `(name, select)` of every shipped query.
pub fn shipped_queries() -> Result<Vec<(String, String)>, CqError> {
    SHIPPED
        .iter()
        .map(|(stem, text)| {
            let sql: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n");
            match parse_create(&sql) {
                Some(Ok(c)) if c.options != OptionsInput::default() => Err(CqError::Invalid(format!(
                    "queries/{stem}.sql: shipped rollups run with the default options; remove WITH (...)"
                ))),
                Some(Ok(c)) if c.name == *stem => Ok((c.name, c.select)),
                Some(Ok(c)) => Err(CqError::Invalid(format!(
                    "queries/{stem}.sql defines `{}`; the file must be named after its query",
                    c.name
                ))),
                Some(Err(e)) => Err(e),
                None => Err(CqError::Invalid(format!(
                    "queries/{stem}.sql is not a CREATE CONTINUOUS QUERY statement"
                ))),
            }
        })
        .collect()
}
