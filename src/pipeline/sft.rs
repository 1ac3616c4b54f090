//! Stage 4 (LoRA SFT of the SLM) and the evaluation of the fine-tuned SLM recommenders.
//!
//! Both come from the `pulserec-sft` crate, which is not part of the workspace yet; until it
//! lands these stages stop with [`PipelineError::NotAvailable`], after every earlier stage has
//! finished and been cached.

use std::path::Path;

use serde_json::Value;

use super::{Pipeline, PipelineError, Result, Stage};

fn not_yet(stage: Stage) -> PipelineError {
    PipelineError::NotAvailable {
        stage: stage.name(),
        reason: "LoRA fine-tuning (pulserec-sft) is not in this build yet; stages up to `tot` \
                 are complete and cached"
            .into(),
    }
}

pub(super) fn run_sft(_p: &Pipeline, _dir: &Path) -> Result<Value> {
    Err(not_yet(Stage::Sft))
}

pub(super) fn run_eval(_p: &Pipeline, _dir: &Path) -> Result<Value> {
    Err(not_yet(Stage::Eval))
}
