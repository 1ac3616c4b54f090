//! `pulserec verify`: what each stage of a run directory has finished, and for the generation
//! stages (written in shards, possibly on several machines) which users each store still lacks.

use std::fmt;

use pulserec_core::UserId;
use pulserec_data::LeaveOneOut;
use pulserec_tot::{ContextBuilder, RationaleStore, Shard};

use super::marker::{DONE_FILE, SETTINGS_FILE};
use super::rationales::{hindsight_store, shard_count, tot_store};
use super::{Pipeline, Result, Stage, StageResult, prepare};

/// Where one stage of a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum StageState {
    /// Finished (`done.json` is there).
    Done,
    /// Nothing to do in this run, and why.
    NotNeeded(String),
    /// Started (`settings.json` is there) but not finished.
    Started,
    /// Not started.
    NotStarted,
}

/// One rationale store of a generation stage against the users it must hold.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreCheck {
    /// The store's name (`hindsight`, or the Tree-of-Thought scorer).
    pub name: String,
    /// Users it must hold.
    pub expected: usize,
    /// The shard count it is written in (1: not sharded).
    pub shards: u32,
    /// The users it lacks, in user order.
    pub missing: Vec<UserId>,
}

/// One stage's state, with its stores for the generation stages.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCheck {
    /// The stage.
    pub stage: Stage,
    /// Where it stands.
    pub state: StageState,
    /// The generation stages' stores (empty for the other stages, and before `prepare` is
    /// done, since the users are not known yet).
    pub stores: Vec<StoreCheck>,
}

/// Every stage of a run ([`Pipeline::verify`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Verification {
    /// The stages in pipeline order.
    pub stages: Vec<StageCheck>,
}

impl Verification {
    /// Whether every stage the run needs is done.
    pub fn complete(&self) -> bool {
        self.stages
            .iter()
            .all(|s| matches!(s.state, StageState::Done | StageState::NotNeeded(_)))
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.stages {
            let state = match &s.state {
                StageState::Done => "done".to_string(),
                StageState::NotNeeded(why) => format!("not needed ({why})"),
                StageState::Started => "started, not finished".to_string(),
                StageState::NotStarted => "not started".to_string(),
            };
            writeln!(f, "{:>14}: {state}", s.stage.name())?;
            for store in &s.stores {
                let stored = store.expected - store.missing.len();
                write!(
                    f,
                    "{:>14}  {}: {stored} of {} users",
                    "", store.name, store.expected
                )?;
                if store.shards > 1 {
                    write!(f, " in {} shards", store.shards)?;
                }
                if store.missing.is_empty() {
                    writeln!(f)?;
                    continue;
                }
                let mut per_shard = vec![0usize; store.shards as usize];
                for u in &store.missing {
                    per_shard[(u.0 % store.shards) as usize] += 1;
                }
                let shards: Vec<String> = per_shard
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, n)| format!("{i}/{}: {n}", store.shards))
                    .collect();
                let first: Vec<String> = store
                    .missing
                    .iter()
                    .take(10)
                    .map(|u| u.0.to_string())
                    .collect();
                writeln!(
                    f,
                    "; missing {} (by shard {}; first users {})",
                    store.missing.len(),
                    shards.join(", "),
                    first.join(", ")
                )?;
            }
        }
        Ok(())
    }
}

pub(super) fn verify(p: &Pipeline) -> Result<Verification> {
    let expected = if p.stage_dir(Stage::Prepare).join(DONE_FILE).exists() {
        Some(expected_users(p)?)
    } else {
        None
    };
    let mut stages = Vec::new();
    for stage in Stage::ALL {
        let dir = p.stage_dir(stage);
        let state = if let Some(why) = p.not_needed(stage) {
            StageState::NotNeeded(why)
        } else if dir.join(DONE_FILE).exists() {
            StageState::Done
        } else if dir.join(SETTINGS_FILE).exists() {
            StageState::Started
        } else {
            StageState::NotStarted
        };
        let stores = match (&state, stage, &expected) {
            (StageState::Done | StageState::Started, Stage::Rationales, Some(users)) => {
                vec![check(p, stage, "hindsight", hindsight_store(p), users)?]
            }
            (StageState::Done | StageState::Started, Stage::Tot, Some(users)) => p
                .config()
                .tot
                .scorers
                .iter()
                .map(|&k| check(p, stage, k.name(), tot_store(p, k), users))
                .collect::<Result<_>>()?,
            _ => Vec::new(),
        };
        stages.push(StageCheck {
            stage,
            state,
            stores,
        });
    }
    Ok(Verification { stages })
}

/// The training users with a context (a last training item): the users every generation store
/// must hold.
pub(super) fn expected_users(p: &Pipeline) -> Result<Vec<UserId>> {
    let (prepared, users) = prepare::load(p)?;
    let split = LeaveOneOut::new(&prepared.dataset.sequences);
    let builder = ContextBuilder::default();
    Ok(users
        .training
        .iter()
        .copied()
        .filter(|&u| builder.context(&prepared.dataset, &split, u, &[]).is_some())
        .collect())
}

fn check(
    p: &Pipeline,
    stage: Stage,
    name: &str,
    dir: std::path::PathBuf,
    users: &[UserId],
) -> Result<StoreCheck> {
    let missing = if dir.exists() {
        RationaleStore::open(&dir)
            .and_then(|s| s.pending(users.iter().copied(), Shard::ALL))
            .at(stage)?
    } else {
        users.to_vec()
    };
    Ok(StoreCheck {
        name: name.to_string(),
        expected: users.len(),
        shards: shard_count(p, stage)?.unwrap_or(1),
        missing,
    })
}
