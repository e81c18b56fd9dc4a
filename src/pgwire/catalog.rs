//! The session the wire endpoint plans with: the HTTP endpoint's tables and functions (the
//! `public` schema is shared, so `events`, continuous-query outputs and `late_events`
//! registered later appear here too), plus what Postgres clients look for — datafusion-postgres'
//! `pg_catalog` and functions, `current_setting`/`version()`, and an `information_schema` with
//! Postgres type names (`data_type`, `udt_name`). The HTTP session itself is left unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemTable, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider,
    TableProvider,
};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;

use super::functions;

/// Name of the catalog (database) clients see.
pub const CATALOG: &str = "datafusion";
const INFORMATION_SCHEMA: &str = "information_schema";
const TABLES: [&str; 4] = ["tables", "columns", "schemata", "views"];

/// Builds the wire session from the HTTP session `http`.
pub fn wire_context(http: &SessionContext) -> Result<SessionContext> {
    wire_context_for(http, None)
}

/// [`wire_context`] as `tenant` sees it: only the default schema, confined to its rows
/// ([`crate::query::tenant`]), so pg_catalog and information_schema list only what it can read.
pub fn wire_context_for(http: &SessionContext, tenant: Option<&str>) -> Result<SessionContext> {
    let state = http.state();
    let default_catalog = state.config().options().catalog.default_catalog.clone();
    let default_schema = state.config().options().catalog.default_schema.clone();
    let shared = http
        .catalog(&default_catalog)
        .ok_or_else(|| DataFusionError::Plan(format!("no catalog {default_catalog}")))?;
    let catalog = Arc::new(MemoryCatalogProvider::new());
    for name in shared.schema_names() {
        if let Some(schema) = shared.schema(&name) {
            match tenant {
                None => {
                    catalog.register_schema(&name, schema)?;
                }
                Some(t) if name == default_schema => {
                    catalog.register_schema(&name, crate::query::tenant::confine_schema(schema, t))?;
                }
                Some(_) => {}
            }
        }
    }
    let catalogs = Arc::new(MemoryCatalogProviderList::new());
    catalogs.register_catalog(CATALOG.to_string(), catalog.clone());
    let mut config = state.config().clone();
    config.options_mut().catalog.default_catalog = CATALOG.to_string();
    // DataFusion's own information_schema (Arrow type names) is replaced by ours below.
    config.options_mut().catalog.information_schema = false;
    config.options_mut().catalog.create_default_catalog_and_schema = false;
    let mut builder = SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .with_catalog_list(catalogs.clone());
    if tenant.is_some() {
        builder = builder.with_analyzer_rule(Arc::new(crate::query::tenant::RefuseAnalyze));
    }
    let wire_state = builder.build();
    let ctx = SessionContext::new_with_state(wire_state);
    catalog.register_schema(
        INFORMATION_SCHEMA,
        Arc::new(PgInformationSchema {
            catalogs: catalogs as Arc<dyn CatalogProviderList>,
        }),
    )?;
    setup_pg_catalog(&ctx, CATALOG, EmptyContextProvider).map_err(|e| *e)?;
    for udf in functions::udfs() {
        ctx.register_udf(udf);
    }
    Ok(ctx)
}

/// Postgres `data_type` text for a `udt_name` (pg_type name).
fn sql_type_name(udt: &str) -> &'static str {
    match udt {
        "bool" => "boolean",
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "float4" => "real",
        "float8" => "double precision",
        "numeric" => "numeric",
        "text" => "text",
        "varchar" => "character varying",
        "bpchar" => "character",
        "name" => "name",
        "bytea" => "bytea",
        "date" => "date",
        "time" => "time without time zone",
        "timestamp" => "timestamp without time zone",
        "timestamptz" => "timestamp with time zone",
        "interval" => "interval",
        "json" => "json",
        "jsonb" => "jsonb",
        "oid" => "oid",
        u if u.starts_with('_') => "ARRAY",
        _ => "USER-DEFINED",
    }
}

/// (`data_type`, `udt_name`) of an Arrow type, from the OID the wire encoder sends.
pub fn pg_type_names(data_type: &DataType) -> (&'static str, String) {
    let udt = datafusion_postgres::arrow_pg::datatypes::into_pg_type(data_type)
        .map(|t| t.name().to_string())
        .unwrap_or_else(|_| "text".to_string());
    (sql_type_name(&udt), udt)
}

/// `information_schema` built from the catalog each time a query names one of its tables.
#[derive(Debug)]
struct PgInformationSchema {
    catalogs: Arc<dyn CatalogProviderList>,
}

/// One table of a catalog walk.
struct TableEntry {
    catalog: String,
    schema: String,
    name: String,
    view: bool,
    columns: SchemaRef,
}

impl PgInformationSchema {
    async fn walk(&self, with_columns: bool) -> Result<Vec<TableEntry>> {
        let mut out = Vec::new();
        for catalog_name in self.catalogs.catalog_names() {
            let Some(catalog) = self.catalogs.catalog(&catalog_name) else {
                continue;
            };
            let mut schemas = catalog.schema_names();
            schemas.sort();
            for schema_name in schemas {
                if schema_name == INFORMATION_SCHEMA {
                    for t in TABLES {
                        out.push(TableEntry {
                            catalog: catalog_name.clone(),
                            schema: schema_name.clone(),
                            name: t.to_string(),
                            view: true,
                            columns: Arc::new(Schema::empty()),
                        });
                    }
                    continue;
                }
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let mut names = schema.table_names();
                names.sort();
                for name in names {
                    let columns = if with_columns {
                        match schema.table(&name).await? {
                            Some(t) => t.schema(),
                            None => continue,
                        }
                    } else {
                        Arc::new(Schema::empty())
                    };
                    out.push(TableEntry {
                        catalog: catalog_name.clone(),
                        schema: schema_name.clone(),
                        view: schema_name == "pg_catalog",
                        name,
                        columns,
                    });
                }
            }
        }
        Ok(out)
    }

    async fn build(&self, table: &str) -> Result<Option<RecordBatch>> {
        fn text(values: Vec<Option<String>>) -> ArrayRef {
            Arc::new(StringArray::from(values))
        }
        fn schema(names: &[&str]) -> SchemaRef {
            Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| {
                        let dt = if matches!(
                            *n,
                            "ordinal_position" | "character_maximum_length" | "numeric_precision" | "numeric_scale"
                        ) {
                            DataType::Int32
                        } else {
                            DataType::Utf8
                        };
                        Field::new(*n, dt, true)
                    })
                    .collect::<Vec<_>>(),
            ))
        }
        let batch = match table {
            "tables" => {
                let entries = self.walk(false).await?;
                let cols = ["table_catalog", "table_schema", "table_name", "table_type"];
                RecordBatch::try_new(
                    schema(&cols),
                    vec![
                        text(entries.iter().map(|e| Some(e.catalog.clone())).collect()),
                        text(entries.iter().map(|e| Some(e.schema.clone())).collect()),
                        text(entries.iter().map(|e| Some(e.name.clone())).collect()),
                        text(
                            entries
                                .iter()
                                .map(|e| Some(if e.view { "VIEW" } else { "BASE TABLE" }.to_string()))
                                .collect(),
                        ),
                    ],
                )?
            }
            "views" => {
                let cols = ["table_catalog", "table_schema", "table_name", "view_definition"];
                RecordBatch::new_empty(schema(&cols))
            }
            "schemata" => {
                let mut rows: Vec<(String, String)> = Vec::new();
                for c in self.catalogs.catalog_names() {
                    if let Some(catalog) = self.catalogs.catalog(&c) {
                        let mut names = catalog.schema_names();
                        names.sort();
                        rows.extend(names.into_iter().map(|s| (c.clone(), s)));
                    }
                }
                let cols = ["catalog_name", "schema_name", "schema_owner"];
                RecordBatch::try_new(
                    schema(&cols),
                    vec![
                        text(rows.iter().map(|r| Some(r.0.clone())).collect()),
                        text(rows.iter().map(|r| Some(r.1.clone())).collect()),
                        text(rows.iter().map(|_| Some("hub".to_string())).collect()),
                    ],
                )?
            }
            "columns" => {
                let entries = self.walk(true).await?;
                let mut c: Vec<Vec<Option<String>>> = vec![Vec::new(); 9];
                let mut ordinal = Vec::new();
                let mut char_len = Vec::new();
                let mut precision = Vec::new();
                let mut scale = Vec::new();
                for e in &entries {
                    for (i, f) in e.columns.fields().iter().enumerate() {
                        let (data_type, udt) = pg_type_names(f.data_type());
                        c[0].push(Some(e.catalog.clone()));
                        c[1].push(Some(e.schema.clone()));
                        c[2].push(Some(e.name.clone()));
                        c[3].push(Some(f.name().clone()));
                        c[4].push(None);
                        c[5].push(Some(if f.is_nullable() { "YES" } else { "NO" }.to_string()));
                        c[6].push(Some(data_type.to_string()));
                        c[7].push(Some(CATALOG.to_string()));
                        c[8].push(Some(udt.clone()));
                        ordinal.push(Some(i32::try_from(i + 1).unwrap_or(i32::MAX)));
                        char_len.push(None);
                        let (p, s) = match f.data_type() {
                            DataType::Int16 => (Some(16), Some(0)),
                            DataType::Int32 => (Some(32), Some(0)),
                            DataType::Int64 => (Some(64), Some(0)),
                            DataType::Float32 => (Some(24), None),
                            DataType::Float64 => (Some(53), None),
                            DataType::Decimal128(p, s) => (Some(i32::from(*p)), Some(i32::from(*s))),
                            _ => (None, None),
                        };
                        precision.push(p);
                        scale.push(s);
                    }
                }
                let cols = [
                    "table_catalog",
                    "table_schema",
                    "table_name",
                    "column_name",
                    "ordinal_position",
                    "column_default",
                    "is_nullable",
                    "data_type",
                    "character_maximum_length",
                    "numeric_precision",
                    "numeric_scale",
                    "udt_catalog",
                    "udt_schema",
                    "udt_name",
                ];
                let mut c = c.into_iter();
                let mut next = || text(c.next().unwrap_or_default());
                let (cat, sch, tab, col, default, nullable, dt, udt_cat, udt) =
                    (next(), next(), next(), next(), next(), next(), next(), next(), next());
                let udt_schema = text(vec![Some("pg_catalog".to_string()); ordinal.len()]);
                RecordBatch::try_new(
                    schema(&cols),
                    vec![
                        cat,
                        sch,
                        tab,
                        col,
                        Arc::new(Int32Array::from(ordinal)),
                        default,
                        nullable,
                        dt,
                        Arc::new(Int32Array::from(char_len)),
                        Arc::new(Int32Array::from(precision)),
                        Arc::new(Int32Array::from(scale)),
                        udt_cat,
                        udt_schema,
                        udt,
                    ],
                )?
            }
            _ => return Ok(None),
        };
        Ok(Some(batch))
    }
}

#[async_trait]
impl SchemaProvider for PgInformationSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let Some(batch) = self.build(&name.to_ascii_lowercase()).await? else {
            return Ok(None);
        };
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        Ok(Some(Arc::new(table)))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name.to_ascii_lowercase().as_str())
    }
}
