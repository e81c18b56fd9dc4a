//! [`TailExec`] across the network: a distributed plan's stages travel as `datafusion-proto`
//! plans, and this codec carries the one node of ours in them (names and numbers only; the
//! worker that decodes it asks the member itself, or reads its own store).

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use serde::{Deserialize, Serialize};

use crate::cluster::tail::{Member, TailRequest};
use crate::cluster::tail_exec::{TailContext, TailExec};

/// Encodes and decodes [`TailExec`].
#[derive(Debug)]
pub struct TailCodec {
    context: Arc<TailContext>,
}

impl TailCodec {
    /// Decoded tails run with `context` (this process's store and client).
    pub fn new(context: Arc<TailContext>) -> Self {
        Self { context }
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncodedTail {
    store_id: String,
    instance_id: String,
    url: String,
    request: TailRequest,
    projection: Option<Vec<usize>>,
}

impl PhysicalExtensionCodec for TailCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal("a TailExec has no inputs".into()));
        }
        let t: EncodedTail =
            serde_json::from_slice(buf).map_err(|e| DataFusionError::Internal(format!("undecodable TailExec: {e}")))?;
        let member = Member {
            store_id: t.store_id,
            instance_id: t.instance_id,
            url: t.url,
            epoch: 0,
            appends: 0,
            worker_url: None,
            worker_key: None,
        };
        Ok(Arc::new(TailExec::new(
            member,
            t.request,
            t.projection,
            Arc::clone(&self.context),
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let Some(tail) = node.downcast_ref::<TailExec>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to another instance",
                node.name()
            )));
        };
        let member = tail.member();
        let encoded = EncodedTail {
            store_id: member.store_id.clone(),
            instance_id: member.instance_id.clone(),
            url: member.url.clone(),
            request: tail.request().clone(),
            projection: tail.projection().cloned(),
        };
        serde_json::to_writer(buf, &encoded).map_err(|e| DataFusionError::Internal(format!("encoding a TailExec: {e}")))
    }
}
