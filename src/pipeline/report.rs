//! The run's Markdown report and results table, built from whatever the stages have written so
//! far (a stage that has not run shows as such; no number is ever filled in for it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use pulserec_tot::{RationaleStore, StoredRationale};
use serde_json::Value;

use super::marker::{DONE_FILE, DoneMarker, read_json, write_atomic};
use super::{Pipeline, Result, Stage, rationales, sasrec};
use crate::config::SelectorKind;

/// One row of the results table.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultRow {
    /// The method (`SASRec`, `PULSE`, ...).
    pub label: String,
    /// HR@1 per candidate-list size (same order as [`ResultsTable::sizes`]); `None`: not run.
    pub hr1: Vec<Option<f64>>,
    /// Users evaluated, when known.
    pub users: Option<usize>,
}

/// HR@1 of every method on the same held-out users and candidate lists.
#[derive(Clone, Debug, PartialEq)]
pub struct ResultsTable {
    /// Candidate-list sizes (positive included).
    pub sizes: Vec<usize>,
    /// Rows in the paper's order; the random baseline first.
    pub rows: Vec<ResultRow>,
}

impl ResultsTable {
    /// A row by label.
    pub fn row(&self, label: &str) -> Option<&ResultRow> {
        self.rows.iter().find(|r| r.label == label)
    }

    /// The table as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| method |");
        for size in &self.sizes {
            let _ = write!(s, " HR@1 ({size} candidates) |");
        }
        s.push_str(" users |\n|---|");
        for _ in &self.sizes {
            s.push_str("---:|");
        }
        s.push_str("---:|\n");
        for row in &self.rows {
            let _ = write!(s, "| {} |", row.label);
            for v in &row.hr1 {
                match v {
                    Some(v) => {
                        let _ = write!(s, " {v:.4} |");
                    }
                    None => s.push_str(" not run |"),
                }
            }
            match row.users {
                Some(n) => {
                    let _ = writeln!(s, " {n} |");
                }
                None => s.push_str(" |\n"),
            }
        }
        s
    }
}

impl ResultsTable {
    /// Several runs' tables (e.g. one per seed) as one Markdown table: per row and column the mean
    /// and, with more than one run, the spread `(min-max)`; `n/a` where no run has the value.
    ///
    /// Rows are matched by label, columns by candidate-list size; a value missing from some runs
    /// is averaged over the runs that have it, and the number of runs is shown in the last column.
    ///
    /// ```
    /// use pulserec::pipeline::{ResultRow, ResultsTable};
    /// let table = |hr: f64| ResultsTable {
    ///     sizes: vec![5],
    ///     rows: vec![ResultRow { label: "PULSE".into(), hr1: vec![Some(hr)], users: Some(50) }],
    /// };
    /// let md = ResultsTable::summarize(&[table(0.2), table(0.4)]);
    /// assert!(md.contains("| PULSE | 0.300 (0.200-0.400) | 2 |"), "{md}");
    /// ```
    pub fn summarize(tables: &[ResultsTable]) -> String {
        let mut sizes: Vec<usize> = tables.iter().flat_map(|t| t.sizes.clone()).collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut labels: Vec<&str> = Vec::new();
        for t in tables {
            for r in &t.rows {
                if !labels.contains(&r.label.as_str()) {
                    labels.push(&r.label);
                }
            }
        }
        let mut s = String::from("| method |");
        for size in &sizes {
            let _ = write!(s, " HR@1 ({size} candidates) |");
        }
        s.push_str(" runs |\n|---|");
        for _ in &sizes {
            s.push_str("---:|");
        }
        s.push_str("---:|\n");
        for label in labels {
            let _ = write!(s, "| {label} |");
            let mut runs = 0;
            for &size in &sizes {
                let values: Vec<f64> = tables
                    .iter()
                    .filter_map(|t| {
                        let col = t.sizes.iter().position(|&n| n == size)?;
                        t.row(label)?.hr1.get(col).copied().flatten()
                    })
                    .collect();
                runs = runs.max(values.len());
                if values.is_empty() {
                    s.push_str(" n/a |");
                    continue;
                }
                let mean = values.iter().sum::<f64>() / values.len() as f64;
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                if values.len() > 1 {
                    let _ = write!(s, " {mean:.3} ({min:.3}-{max:.3}) |");
                } else {
                    let _ = write!(s, " {mean:.3} |");
                }
            }
            let _ = writeln!(s, " {runs} |");
        }
        s
    }
}

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

/// The results table from the metrics files present.
pub(super) fn results(p: &Pipeline) -> ResultsTable {
    let c = p.config();
    let sizes = c.eval.candidates.clone();
    let mut rows = vec![ResultRow {
        label: "random".into(),
        hr1: sizes.iter().map(|&n| Some(1.0 / n as f64)).collect(),
        users: None,
    }];
    let sas = read_opt(&p.stage_dir(Stage::SasRec).join(sasrec::METRICS_FILE));
    let on = |size: usize, key: &str| -> Option<f64> {
        sas.as_ref()?
            .get("slm_candidates")?
            .get(size.to_string())?
            .get("values")?
            .get(key)?
            .as_f64()
    };
    rows.push(ResultRow {
        label: "SASRec".into(),
        hr1: sizes.iter().map(|&n| on(n, "HR@1")).collect(),
        users: sas
            .as_ref()
            .and_then(|m| m.get("evaluation_users")?.as_u64())
            .map(|n| n as usize),
    });
    for v in &c.sft.variants {
        let m = read_opt(&p.stage_dir(Stage::Eval).join(format!("{}.json", v.name())));
        let get = |size: usize| -> Option<f64> {
            m.as_ref()?
                .get("candidates")?
                .get(size.to_string())?
                .get("HR@1")?
                .as_f64()
        };
        rows.push(ResultRow {
            label: v.label().into(),
            hr1: sizes.iter().map(|&n| get(n)).collect(),
            users: m
                .as_ref()
                .and_then(|m| m.get("users")?.as_u64())
                .map(|n| n as usize),
        });
    }
    ResultsTable { sizes, rows }
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
pub(super) fn write(p: &Pipeline) -> Result<(ResultsTable, PathBuf)> {
    let c = p.config();
    let table = results(p);
    let mut s = String::from("# PULSE run report\n\n");
    let _ = writeln!(
        s,
        "Data `{}`, seed {}, device {}. The resolved configuration is `config.toml`.\n",
        c.data_path().display(),
        c.seed,
        p.device_name()
    );
    s.push_str("## Results\n\nHR@1 on the same held-out users and stored candidate lists (positive + uniform negatives); SASRec ranks the same candidates.\n\n");
    s.push_str(&table.to_markdown());
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
        image(&mut s, p, Stage::SasRec, "loss.png", "SASRec training loss");
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
            "map.png",
            "Thought-Space map",
        );
        s.push_str("Training loss per step:\n");
        image(
            &mut s,
            p,
            Stage::ThoughtSpace,
            "loss.png",
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
                &format!("{}/loss.png", v.name()),
                &format!("{} training loss", v.label()),
            );
        }
    }
    if let Some(m) = marker(p, Stage::Eval) {
        let _ = writeln!(
            s,
            "\n## Evaluation of the SLM recommenders\n\nSelector `{}`; per-user outcomes in `eval/predictions-<variant>-<size>.jsonl`. Metrics per variant and list size: `{}`",
            selector_label(c.eval.selector),
            m.summary
        );
    }
    let path = c.run_dir.join("report.md");
    write_atomic(&path, s.as_bytes())?;
    Ok((table, path))
}
