//! One member's tail as a leaf of the query plan ([`TailExec`]): what that member holds beyond
//! the shared files the scan reads, fetched when the plan runs (not while it is planned, so
//! `EXPLAIN` asks nobody). Run on the member itself it reads its store directly; run anywhere
//! else (another coordinator, or a worker of a distributed plan) it asks the member over HTTP
//! ([`super::tail`]). The node carries only names and numbers, so it can be sent to a worker
//! ([`super::distributed::TailCodec`]).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::{StreamExt, TryStreamExt};

use super::tail::{self, Member, TailError, TailRequest};
use crate::metrics::Metrics;
use crate::storage::local::LocalStore;

/// What running a tail needs in every process: this instance's own store (its tail is read
/// directly) and how to ask the others.
#[derive(Debug)]
pub struct TailContext {
    /// This instance's stores (events and shared continuous-query tables).
    pub stores: super::tail::TailStores,
    /// Its data directory's id.
    pub store_id: String,
    /// `cluster.secret`.
    pub secret: String,
    /// Asks the members.
    pub client: reqwest::Client,
    /// `cluster.tail_timeout_ms`.
    pub timeout: Duration,
    /// Counts `cluster_tail_errors_total`.
    pub metrics: Metrics,
    /// The last member that did not answer (for `/ready`).
    pub last_error: Mutex<Option<String>>,
    /// Answers that left a member out, in this process: part of the events table's data
    /// version, so a partial answer is never served again from the result cache.
    pub failures: std::sync::atomic::AtomicU64,
}

impl TailContext {
    /// This process's store of `table` (a worker decoding another instance's plan has every
    /// shared table the coordinator has, as both run the same queries).
    pub fn store(&self, table: &str) -> DfResult<LocalStore> {
        self.stores.get(table).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "this instance has no shared table `{table}` (is the continuous query registered here?)"
            ))
        })
    }

    /// The last tail error, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The tail of one member for one scan.
#[derive(Debug)]
pub struct TailExec {
    member: Member,
    request: TailRequest,
    /// Indices into the events schema (the scan's projection).
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    context: Arc<TailContext>,
    properties: Arc<PlanProperties>,
}

impl TailExec {
    /// The tail of `member` beyond `request.known_files`, projected like the scan.
    pub fn new(
        member: Member,
        request: TailRequest,
        projection: Option<Vec<usize>>,
        context: Arc<TailContext>,
    ) -> DfResult<Self> {
        let full = context.store(&request.table)?.schema();
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Ok(Self {
            member,
            request,
            projection,
            schema,
            context,
            properties,
        })
    }

    /// The member asked.
    pub fn member(&self) -> &Member {
        &self.member
    }

    /// What is asked.
    pub fn request(&self) -> &TailRequest {
        &self.request
    }

    /// The scan's projection.
    pub fn projection(&self) -> Option<&Vec<usize>> {
        self.projection.as_ref()
    }

    /// Whether this process owns the tail (reads it without the network).
    fn is_local(&self) -> bool {
        self.request.store_id == self.context.store_id
    }

    /// This instance's own tail: its in-memory events and the local files not in the scan's
    /// list, scanned like the local `events` table (streamed, no size limit).
    fn local_plan(&self) -> DfResult<Arc<dyn ExecutionPlan>> {
        let local = self.context.store(&self.request.table)?;
        let full = local.schema();
        let snapshot = local.snapshot();
        let memory = MemorySourceConfig::try_new(&[snapshot.batches], Arc::clone(&full), self.projection.clone())?;
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = vec![DataSourceExec::from_data_source(memory)];
        let mut files = Vec::new();
        for path in tail::unlisted(snapshot.files, &self.request.known_files) {
            // A file compacted away locally since the snapshot is read by nobody: fail loudly.
            let size = std::fs::metadata(&path)
                .map_err(|e| DataFusionError::Execution(format!("{}: {e}", path.display())))?
                .len();
            files.push(PartitionedFile::new(path.to_string_lossy().into_owned(), size));
        }
        if !files.is_empty() {
            let format = ParquetFormat::default();
            let config = FileScanConfigBuilder::new(
                ObjectStoreUrl::local_filesystem(),
                format.file_source(TableSchema::from(Arc::clone(&full))),
            )
            .with_file_groups(vec![FileGroup::new(files)])
            .with_projection_indices(self.projection.clone())?
            .build();
            inputs.push(DataSourceExec::from_data_source(config));
        }
        UnionExec::try_new(inputs)
    }

    /// Another member's tail over HTTP; a member that does not answer is left out of this
    /// answer (logged, counted), a tail too large fails the query (narrow it).
    async fn fetch(&self) -> DfResult<Vec<RecordBatch>> {
        let c = &self.context;
        let batches = match tail::fetch(&c.client, &self.member, &c.secret, &self.request, c.timeout).await {
            Ok(batches) => batches,
            Err(e @ TailError::Peer { status, .. }) if status != Some(413) => {
                c.metrics.cluster_tail_errors_total.inc();
                c.failures.fetch_add(1, std::sync::atomic::Ordering::Release);
                tracing::warn!(error = %e, "a member's recent events are left out of this answer");
                *c.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.to_string());
                return Ok(Vec::new());
            }
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        };
        // The answer holds the requested columns, then `timestamp` when it was not requested.
        let n = self.schema.fields().len();
        batches
            .into_iter()
            .map(|b| {
                let columns = b.columns()[..n.min(b.num_columns())].to_vec();
                let options = RecordBatchOptions::new().with_row_count(Some(b.num_rows()));
                RecordBatch::try_new_with_options(Arc::clone(&self.schema), columns, &options)
                    .map_err(DataFusionError::from)
            })
            .collect()
    }
}

impl DisplayAs for TailExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "TailExec: instance={}, known_files={}",
            self.member.instance_id,
            self.request.known_files.len()
        )
    }
}

impl ExecutionPlan for TailExec {
    fn name(&self) -> &str {
        "TailExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return Err(DataFusionError::Internal("TailExec has no children".into()));
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "TailExec has one partition, not {partition}"
            )));
        }
        if self.is_local() {
            return datafusion::physical_plan::execute_stream(self.local_plan()?, context);
        }
        let me = Self {
            member: self.member.clone(),
            request: self.request.clone(),
            projection: self.projection.clone(),
            schema: Arc::clone(&self.schema),
            context: Arc::clone(&self.context),
            properties: Arc::clone(&self.properties),
        };
        let stream = futures::stream::once(async move { me.fetch().await })
            .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
            .try_flatten()
            .boxed();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        )))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use datafusion::physical_plan::common::collect;
    use datafusion_proto::physical_plan::{DefaultPhysicalProtoConverter, PhysicalExtensionCodec};

    use super::*;
    use crate::cluster::distributed::TailCodec;
    use crate::event::decode_batch_body;
    use crate::generate::{Generator, GeneratorConfig};
    use crate::storage::EventStore;
    use crate::storage::health::StorageHealth;
    use crate::storage::local::LocalStoreConfig;

    fn batch(seed: u64, n: usize) -> RecordBatch {
        let mut g = Generator::new(GeneratorConfig {
            seed,
            ..GeneratorConfig::default()
        });
        let body: String = (0..n).map(|_| g.next_event(None) + "\n").collect();
        decode_batch_body(body.as_bytes(), 0).expect("decodes").batch
    }

    /// A store in `dir` and the tail context of an instance with store id `me` over it.
    pub(crate) fn context(dir: &std::path::Path, secret: &str) -> (LocalStore, Metrics, Arc<TailContext>) {
        let metrics = Metrics::new().expect("metrics");
        let config = LocalStoreConfig {
            data_dir: dir.to_path_buf(),
            ..LocalStoreConfig::default()
        };
        let local = LocalStore::open(config, metrics.clone(), StorageHealth::default()).expect("open");
        let ctx = Arc::new(TailContext {
            stores: crate::cluster::tail::TailStores::new(local.clone()),
            store_id: "me".into(),
            secret: secret.into(),
            client: reqwest::Client::new(),
            timeout: Duration::from_millis(500),
            metrics: metrics.clone(),
            last_error: Mutex::new(None),
            failures: std::sync::atomic::AtomicU64::new(0),
        });
        (local, metrics, ctx)
    }

    fn member(store_id: &str, url: &str) -> Member {
        Member {
            store_id: store_id.into(),
            instance_id: store_id.into(),
            url: url.into(),
            epoch: 0,
            appends: 0,
            worker_url: None,
            worker_key: None,
        }
    }

    fn request(store_id: &str, known_files: Vec<String>) -> TailRequest {
        TailRequest {
            table: crate::cluster::EVENTS.into(),
            store_id: store_id.into(),
            columns: None,
            min_time_us: None,
            max_time_us: None,
            known_files,
        }
    }

    async fn rows(plan: Arc<dyn ExecutionPlan>) -> usize {
        let batches = collect(plan.execute(0, Arc::new(TaskContext::default())).expect("execute"))
            .await
            .expect("collect");
        batches.iter().map(RecordBatch::num_rows).sum()
    }

    #[tokio::test]
    async fn the_own_tail_is_memory_plus_the_files_the_scan_does_not_list_and_survives_the_codec() {
        let dir = tempfile::tempdir().expect("tmp");
        let (local, _, ctx) = context(dir.path(), "secret-0123456789");
        local.append(batch(1, 300)).await.expect("append");
        local.flush().await.expect("flush");
        local.append(batch(2, 40)).await.expect("append");
        let flushed: Vec<String> = std::fs::read_dir(local.dir())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        assert_eq!(flushed.len(), 1, "{flushed:?}");

        let all = TailExec::new(member("me", ""), request("me", Vec::new()), None, Arc::clone(&ctx)).expect("tail");
        assert_eq!(rows(Arc::new(all)).await, 340);
        // The scan reads the flushed file from shared storage: the tail is the rest.
        let model = local.schema().index_of("model").expect("model");
        let rest = TailExec::new(
            member("me", ""),
            request("me", flushed.clone()),
            Some(vec![model]),
            Arc::clone(&ctx),
        )
        .expect("tail");
        assert_eq!(rest.schema().fields().len(), 1);
        assert_eq!(rows(Arc::new(rest)).await, 40);

        // Through the codec (as to a worker): the same node, the same rows.
        let codec = TailCodec::new(Arc::clone(&ctx));
        let node: Arc<dyn ExecutionPlan> = Arc::new(
            TailExec::new(
                member("me", ""),
                request("me", flushed),
                Some(vec![model]),
                Arc::clone(&ctx),
            )
            .expect("tail"),
        );
        let mut buf = Vec::new();
        codec
            .try_encode(Arc::clone(&node), &mut buf, &DefaultPhysicalProtoConverter {})
            .expect("encode");
        let decoded = codec
            .try_decode(&buf, &[], &TaskContext::default(), &DefaultPhysicalProtoConverter {})
            .expect("decode");
        let back = decoded.downcast_ref::<TailExec>().expect("a TailExec");
        assert_eq!(back.request(), rows_request(&node));
        assert_eq!(back.projection(), Some(&vec![model]));
        assert_eq!(back.schema(), node.schema());
        assert_eq!(rows(decoded).await, 40);
        assert!(
            codec
                .try_decode(b"{}", &[], &TaskContext::default(), &DefaultPhysicalProtoConverter {})
                .is_err()
        );
    }

    fn rows_request(node: &Arc<dyn ExecutionPlan>) -> &TailRequest {
        node.downcast_ref::<TailExec>().expect("tail").request()
    }

    #[tokio::test]
    async fn a_member_that_does_not_answer_is_left_out_and_counted() {
        let dir = tempfile::tempdir().expect("tmp");
        let (_, metrics, ctx) = context(dir.path(), "secret-0123456789");
        // Nothing listens on port 1.
        let gone = TailExec::new(
            member("other", "http://127.0.0.1:1"),
            request("other", Vec::new()),
            None,
            Arc::clone(&ctx),
        )
        .expect("tail");
        assert_eq!(rows(Arc::new(gone)).await, 0);
        assert_eq!(metrics.cluster_tail_errors_total.get(), 1);
        assert!(ctx.last_error().expect("recorded").contains("127.0.0.1:1"));
    }
}
