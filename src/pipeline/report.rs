//! The run's Markdown report and results table, built from whatever the stages have written so
//! far (a stage that has not run shows as such; no number is ever filled in for it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pulserec_tot::{RationaleStore, StoredRationale};
use serde_json::Value;

use super::marker::{DONE_FILE, DoneMarker, LOSS_PLOT, MAP_PLOT, read_json, write_atomic};
use super::{Pipeline, Result, Stage, StageResult, eval, rationales, sasrec};
use crate::config::SelectorKind;
use crate::results::{Prediction, Results, read_predictions};

fn read_opt(path: &Path) -> Option<Value> {
    if path.exists() {
        read_json(path).ok()
    } else {
        None
    }
}

fn marker(p: &Pipeline, stage: Stage) -> Option<DoneMarker> {
    let path = p.stage_dir(stage).join(DONE_FILE);
    if path.exists() {
        read_json(&path).ok()
    } else {
        None
    }
}

/// Every prediction the run's evaluation folder (`eval/<split>/`) holds, for the configured rows.
pub(super) fn predictions(p: &Pipeline) -> Result<Vec<Prediction>> {
    let dir = p.stage_dir(Stage::Eval);
    let mut out = Vec::new();
    for row in eval::rows(p) {
        let path = dir.join(format!("{}.jsonl", row.name()));
        if path.exists() {
            out.extend(read_predictions(&path).at(Stage::Eval)?);
        }
    }
    Ok(out)
}

/// The results tables of several runs (e.g. one per seed) pooled: rows and pairs of the first.
pub(super) fn pooled(runs: &[Pipeline]) -> Result<Results> {
    let mut all = Vec::new();
    for p in runs {
        all.extend(predictions(p)?);
    }
    let (rows, pairs) = match runs.first() {
        Some(p) => (eval::table_rows(p), eval::table_pairs(p)),
        None => (Vec::new(), Vec::new()),
    };
    let mut results = Results::from_predictions(&all, &rows, &pairs);
    // Columns for every configured size, so rows not evaluated yet print as such.
    for p in runs {
        results.sizes.extend(&p.config().eval.candidates);
    }
    results.sizes.sort_unstable();
    results.sizes.dedup();
    Ok(results)
}

/// The three tables (rows, paired differences, HR@1 by position) as Markdown.
pub(crate) fn tables_markdown(p: &Pipeline, results: &Results) -> String {
    let mut s = results.to_markdown();
    if !results.pairs.is_empty() {
        s.push_str("\nPaired differences on the same users (bootstrap over users; seeds averaged per user first):\n\n");
        s.push_str(&results.pairs_markdown());
    }
    let slm: Vec<&str> = eval::rows(p)
        .into_iter()
        .filter(|r| r.is_slm())
        .map(|r| r.name())
        .collect();
    if slm.iter().any(|v| {
        results
            .sizes
            .iter()
            .any(|&n| results.cells.contains_key(&(v.to_string(), n)))
    }) {
        s.push_str("\nHR@1 of the SLM rows by the position at which the prompt listed the positive (candidate order: a seeded shuffle per user, or most bought first with `sft.order_by_popularity`):\n\n");
        s.push_str(&results.positions_markdown(&slm));
    }
    s
}

fn examples(out: &mut String, records: &[StoredRationale], n: usize) {
    for r in records.iter().filter(|r| !r.text.trim().is_empty()).take(n) {
        let score = r
            .score
            .map(|s| format!(" (score {s:.3})"))
            .unwrap_or_default();
        let text: String = r.text.chars().take(300).collect();
        let _ = writeln!(
            out,
            "- user {}{score}: {}",
            r.user.0,
            text.replace('\n', " ")
        );
    }
}

fn image(out: &mut String, p: &Pipeline, stage: Stage, file: &str, alt: &str) {
    if p.stage_dir(stage).join(file).exists() {
        let _ = writeln!(out, "\n![{alt}]({}/{file})\n", stage.folder());
    }
}

fn selector_label(kind: SelectorKind) -> &'static str {
    match kind {
        SelectorKind::Likelihood => "likelihood (the candidate whose title is most likely)",
        SelectorKind::Generative => "generative (the paper's title-in-answer HR@1)",
    }
}

/// Writes `report.md`; returns the results table and the report's path.
pub(super) fn write(p: &Pipeline) -> Result<(Results, PathBuf)> {
    let c = p.config();
    let table = pooled(std::slice::from_ref(p))?;
    let mut s = String::from("# PULSE run report\n\n");
    let _ = writeln!(
        s,
        "Data `{}`, seed {}, device {}. The resolved configuration is `config.toml`.\n",
        c.data_path().display(),
        c.seed,
        p.device_name()
    );
    let _ = writeln!(
        s,
        "## Results\n\nHR@1 on the `{}` split: the same held-out users and stored candidate lists (positive + uniform negatives) for every row, 95 % bootstrap intervals over users. SLM rows use the {} selector; per-user predictions are in `eval/{}/<row>.jsonl`.\n",
        c.eval.split.name(),
        selector_label(c.eval.selector),
        c.eval.split.name()
    );
    s.push_str(&tables_markdown(p, &table));
    s.push_str("\n## Stages\n\n| stage | status | seconds |\n|---|---|---:|\n");
    for stage in Stage::ALL {
        match marker(p, stage) {
            Some(m) => {
                let _ = writeln!(s, "| {} | done | {:.1} |", stage.name(), m.seconds);
            }
            None => {
                let _ = writeln!(s, "| {} | not run | |", stage.name());
            }
        }
    }
    if let Some(m) = marker(p, Stage::Prepare) {
        let _ = writeln!(s, "\nData slice: `{}`", m.summary);
    }
    if let Some(m) = read_opt(&p.stage_dir(Stage::SasRec).join(sasrec::METRICS_FILE)) {
        let _ = writeln!(
            s,
            "\n## SASRec\n\nOwn protocol on every test user: `{}` ({} users); {} epochs, median {:.2} s/epoch. Loss per epoch:",
            m["test"]["metrics"],
            m["test"]["users"],
            m["epochs_run"],
            m["median_seconds_per_epoch"].as_f64().unwrap_or(f64::NAN)
        );
        image(&mut s, p, Stage::SasRec, LOSS_PLOT, "SASRec training loss");
    }
    if let Some(m) = marker(p, Stage::Rationales) {
        let _ = writeln!(s, "\n## Hindsight rationales\n\n`{}`\n", m.summary);
        let dir = rationales::hindsight_store(p);
        if dir.is_dir()
            && let Ok(records) = RationaleStore::open(&dir).and_then(|st| st.load())
        {
            examples(&mut s, &records, 3);
        }
    }
    if let Some(m) = read_opt(&p.stage_dir(Stage::ThoughtSpace).join("metrics.json")) {
        let _ = writeln!(
            s,
            "\n## Thought Space\n\nHeld-out retrieval (behaviour -> own rationale among {}): accuracy {:.3} before, {:.3} after training ({} train pairs, {} held out).\n\nMap of held-out behaviour (blue) and rationale (orange) embeddings, before | after:",
            m["group_size"],
            m["before"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            m["after"]["accuracy"].as_f64().unwrap_or(f64::NAN),
            m["train_pairs"],
            m["held_out_pairs"]
        );
        image(
            &mut s,
            p,
            Stage::ThoughtSpace,
            MAP_PLOT,
            "Thought-Space map",
        );
        s.push_str("Training loss per step:\n");
        image(
            &mut s,
            p,
            Stage::ThoughtSpace,
            LOSS_PLOT,
            "Thought-Space loss",
        );
    }
    if let Some(m) = marker(p, Stage::Tot) {
        let _ = writeln!(s, "\n## Tree-of-Thought\n\n`{}`\n", m.summary);
        for &kind in &c.tot.scorers {
            // Opening a store creates its folder: look only at stores that exist.
            let dir = rationales::tot_store(p, kind);
            if dir.is_dir()
                && let Ok(records) = RationaleStore::open(&dir).and_then(|st| st.load())
                && !records.is_empty()
            {
                let _ = writeln!(s, "\nChosen by {}:\n", kind.name());
                examples(&mut s, &records, 3);
            }
        }
    }
    if let Some(m) = marker(p, Stage::Sft) {
        let _ = writeln!(s, "\n## LoRA SFT\n\n`{}`\n", m.summary);
        if let Some(from) = &c.sft.adapters_from {
            let _ = writeln!(
                s,
                "Cross-domain: the adapters were trained in `{}` (another data set) and are evaluated here on this run's users.\n",
                from.display()
            );
        }
        s.push_str("Training loss per optimiser step:\n");
        for v in &c.sft.variants {
            let _ = writeln!(s, "\n{}:", v.label());
            image(
                &mut s,
                p,
                Stage::Sft,
                &format!("{}/{LOSS_PLOT}", v.name()),
                &format!("{} training loss", v.label()),
            );
        }
    }
    let path = c.run_dir.join("report.md");
    write_atomic(&path, s.as_bytes())?;
    Ok((table, path))
}
