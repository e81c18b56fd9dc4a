//! Tenant isolation below SQL. A tenant's session sees the catalog through these wrappers:
//! only the default catalog's default schema, only the tables with a `tenant` column, and
//! every scan of those filtered to the tenant's rows. Subqueries, joins, CTEs, unions, window
//! functions and the catalog views (`information_schema` is built from the catalog list) all go
//! through a scan or the catalog, so no statement reaches another tenant's rows or sees a table
//! it cannot read.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, Session, TableProvider};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::expressions::{Column, binary, cast, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use futures::FutureExt;

/// Refuses `EXPLAIN ANALYZE` in a tenant's session: its metrics (a filter's selectivity, the
/// rows a scan produced) count every tenant's rows. Plain `EXPLAIN` shows the plan only.
#[derive(Debug)]
pub struct RefuseAnalyze;

impl datafusion::optimizer::AnalyzerRule for RefuseAnalyze {
    fn analyze(
        &self,
        plan: datafusion::logical_expr::LogicalPlan,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<datafusion::logical_expr::LogicalPlan> {
        use datafusion::common::tree_node::TreeNode;
        if plan.exists(|p| Ok(matches!(p, datafusion::logical_expr::LogicalPlan::Analyze(_))))? {
            return datafusion::common::plan_err!(
                "EXPLAIN ANALYZE is not available to a tenant-bound login (its metrics count every tenant's rows); use EXPLAIN"
            );
        }
        Ok(plan)
    }

    fn name(&self) -> &str {
        "refuse_explain_analyze_for_tenants"
    }
}

/// The column that says whose a row is.
pub const TENANT_COLUMN: &str = "tenant";

/// The catalog list as `tenant` sees it.
#[derive(Debug)]
pub struct TenantCatalogList {
    inner: Arc<dyn CatalogProviderList>,
    catalog: String,
    schema: String,
    tenant: Arc<str>,
}

impl TenantCatalogList {
    /// `inner` confined to `tenant`'s rows of `catalog.schema`.
    pub fn new(inner: Arc<dyn CatalogProviderList>, catalog: &str, schema: &str, tenant: &str) -> Self {
        Self {
            inner,
            catalog: catalog.to_string(),
            schema: schema.to_string(),
            tenant: Arc::from(tenant),
        }
    }
}

impl CatalogProviderList for TenantCatalogList {
    fn register_catalog(&self, _name: String, _catalog: Arc<dyn CatalogProvider>) -> Option<Arc<dyn CatalogProvider>> {
        None
    }

    fn catalog_names(&self) -> Vec<String> {
        vec![self.catalog.clone()]
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        if name != self.catalog {
            return None;
        }
        let schema = self.inner.catalog(name)?.schema(&self.schema)?;
        Some(Arc::new(TenantCatalog {
            schema_name: self.schema.clone(),
            schema: Arc::new(TenantSchema {
                inner: schema,
                tenant: Arc::clone(&self.tenant),
            }),
        }))
    }
}

#[derive(Debug)]
struct TenantCatalog {
    schema_name: String,
    schema: Arc<TenantSchema>,
}

impl CatalogProvider for TenantCatalog {
    fn schema_names(&self) -> Vec<String> {
        vec![self.schema_name.clone()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == self.schema_name).then(|| Arc::clone(&self.schema) as Arc<dyn SchemaProvider>)
    }
}

/// `inner` (a schema) as `tenant` sees it: only its tables with a `tenant` column, filtered.
pub fn confine_schema(inner: Arc<dyn SchemaProvider>, tenant: &str) -> Arc<dyn SchemaProvider> {
    Arc::new(TenantSchema {
        inner,
        tenant: Arc::from(tenant),
    })
}

#[derive(Debug)]
struct TenantSchema {
    inner: Arc<dyn SchemaProvider>,
    tenant: Arc<str>,
}

fn has_tenant_column(table: &Arc<dyn TableProvider>) -> bool {
    table
        .schema()
        .field_with_name(TENANT_COLUMN)
        .is_ok_and(|f| matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8))
}

#[async_trait]
impl SchemaProvider for TenantSchema {
    fn table_names(&self) -> Vec<String> {
        // The Hub's schemas are in memory: `table` is ready at once. A provider that would
        // have to wait is left out rather than blocked on.
        self.inner
            .table_names()
            .into_iter()
            .filter(|name| {
                self.inner
                    .table(name)
                    .now_or_never()
                    .and_then(Result::ok)
                    .flatten()
                    .is_some_and(|t| has_tenant_column(&t))
            })
            .collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(self.inner.table(name).await?.filter(has_tenant_column).map(|inner| {
            Arc::new(TenantTable {
                inner,
                tenant: Arc::clone(&self.tenant),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.table_names().iter().any(|n| n == name)
    }
}

/// A table whose every scan keeps only `tenant`'s rows.
#[derive(Debug)]
struct TenantTable {
    inner: Arc<dyn TableProvider>,
    tenant: Arc<str>,
}

#[async_trait]
impl TableProvider for TenantTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // The inner table may prune with them; they are applied again above the scan.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let tenant_index = schema.index_of(TENANT_COLUMN)?;
        // The inner scan reads the tenant column too; a limit is never pushed below the filter.
        let inner_projection = projection.map(|p| {
            let mut p = p.clone();
            if !p.contains(&tenant_index) {
                p.push(tenant_index);
            }
            p
        });
        let plan = self.inner.scan(state, inner_projection.as_ref(), filters, None).await?;
        let scanned = plan.schema();
        let position = scanned.index_of(TENANT_COLUMN)?;
        let column = Arc::new(Column::new(TENANT_COLUMN, position));
        let as_text = cast(column, &scanned, DataType::Utf8)?;
        let predicate = binary(
            as_text,
            Operator::Eq,
            lit(ScalarValue::Utf8(Some(self.tenant.to_string()))),
            &scanned,
        )?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(FilterExec::try_new(predicate, plan)?);
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..schema.fields().len()).collect(),
        };
        let exprs = wanted
            .iter()
            .map(|&i| {
                let name = schema.field(i).name();
                let at = scanned.index_of(name)?;
                Ok((
                    Arc::new(Column::new(name, at)) as Arc<dyn datafusion::physical_expr::PhysicalExpr>,
                    name.clone(),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(ProjectionExec::try_new(exprs, filtered)?))
    }
}
