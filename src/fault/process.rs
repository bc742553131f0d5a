//! Process faults: `process-kill` and `process-pause`. (Stub; being written.)
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Fault, ResolveCtx, Result, RevertToken, Target};

/// `process-kill`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KillSpec {
    /// Pattern over the command line.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
}
/// `process-pause`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseSpec {
    /// Pattern over the command line.
    #[serde(rename = "match")]
    pub pattern: Option<String>,
}
impl Fault for KillSpec {
    fn resolve(&self, _ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        Ok(vec![])
    }
    fn inject<'a>(&'a self, _t: &'a [Target]) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async { Ok(None) })
    }
    fn needs_duration(&self) -> bool {
        false
    }
}
impl Fault for PauseSpec {
    fn resolve(&self, _ctx: &mut ResolveCtx<'_>) -> Result<Vec<Target>> {
        Ok(vec![])
    }
    fn inject<'a>(&'a self, _t: &'a [Target]) -> BoxFuture<'a, Result<Option<RevertToken>>> {
        Box::pin(async { Ok(None) })
    }
    fn needs_duration(&self) -> bool {
        true
    }
}
/// Nothing to revert for a kill.
pub async fn revert_kill(_t: &RevertToken) -> Result<()> {
    Ok(())
}
/// Resume paused processes.
pub async fn revert_pause(_t: &RevertToken) -> Result<()> {
    Ok(())
}
