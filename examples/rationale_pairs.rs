//! Stage 1 -> stage 2 glue: turns a rationale store into the Thought Space's training file.
//!
//! For every user in the store, the behaviour text is the user's history and chosen item as
//! [`BehaviourRenderer`] renders them (the same context the hindsight prompt was built from:
//! training history, target = last training item), and the rationale is the stored text.
//!
//! ```text
//! cargo run --release --example rationale_pairs -- --store runs/r/hindsight --out runs/r/pairs.jsonl
//! cargo run --release --example thought_space -- --model assets/all-minilm-l6-v2 --pairs runs/r/pairs.jsonl ...
//! ```

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulserec_core::UserId;
use pulserec_data::{LeaveOneOut, load};
use pulserec_thoughtspace::{BehaviourRenderer, TrainingPair, write_pairs_jsonl};
use pulserec_tot::{ContextBuilder, RationaleStore};

#[derive(Parser, Debug)]
#[command(about = "Write (behaviour, rationale) pairs from a rationale store")]
struct Args {
    /// Data set the store was made from (file or folder).
    #[arg(long, default_value = "../shared/data/amazon-games-2018")]
    data: PathBuf,
    /// Rationale store directory (e.g. `runs/r/hindsight`).
    #[arg(long)]
    store: PathBuf,
    /// Output JSONL file.
    #[arg(long)]
    out: PathBuf,
    /// Also keep rationales whose model output did not parse (their fallback text).
    #[arg(long)]
    keep_unparsed: bool,
}

fn main() -> anyhow::Result<()> {
    pulserec::init_logging("warn");
    let args = Args::parse();
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let split = LeaveOneOut::new(&dataset.sequences);
    let records = RationaleStore::open(&args.store)?.load()?;
    anyhow::ensure!(
        !records.is_empty(),
        "{}: the store holds no rationales",
        args.store.display()
    );
    let builder = ContextBuilder::default();
    let renderer = BehaviourRenderer::default();
    let by_user: HashMap<UserId, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.user, i))
        .collect();
    let mut users: Vec<UserId> = by_user.keys().copied().collect();
    users.sort();
    let (mut pairs, mut unparsed, mut empty) = (Vec::new(), 0usize, 0usize);
    for user in users {
        let record = &records[by_user[&user]];
        if !record.parsed && !args.keep_unparsed {
            unparsed += 1;
            continue;
        }
        if record.text.trim().is_empty() {
            empty += 1;
            continue;
        }
        let context = builder
            .context(&dataset, &split, user, &[])
            .with_context(|| format!("user {user} of the store has no context in the data"))?;
        pairs.push(TrainingPair {
            user: dataset.user_ids[user.index()].clone(),
            behaviour: renderer.render(&context),
            rationale: record.text.trim().to_string(),
        });
    }
    write_pairs_jsonl(&args.out, &pairs)?;
    eprintln!(
        "{} pairs written to {} ({unparsed} unparsed rationales {}, {empty} empty skipped)",
        pairs.len(),
        args.out.display(),
        if args.keep_unparsed {
            "kept"
        } else {
            "skipped"
        },
    );
    Ok(())
}
