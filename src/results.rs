//! Per-user predictions and the results tables built from them.
//!
//! Every evaluation row (a baseline or an SLM variant) writes one JSON object per user and
//! candidate-list size ([`Prediction`]), with user and item ids as they are in the data files,
//! so anyone can recompute a table from the files alone. [`Results::from_predictions`] turns the
//! objects of one or several runs (seeds) into:
//!
//! - HR@1 per row and list size with a 95 % percentile-bootstrap interval over users (each user's
//!   hits averaged over the seeds first);
//! - paired differences between chosen rows on the users both have, with a paired-bootstrap
//!   interval (and McNemar's exact p-value when there is one seed);
//! - HR@1 by the position at which the prompt listed the positive.
//!
//! ```
//! use pulserec::results::{Prediction, Results, Row};
//! let p = |variant: &str, user: u32, hit: bool| Prediction {
//!     data: "toy".into(), split: "test".into(), variant: variant.into(), seed: 1,
//!     user: user.to_string(), target: "a".into(),
//!     candidates: vec!["a".into(), "b".into()],
//!     chosen: Some(if hit { "a" } else { "b" }.into()), hit, answer: String::new(),
//!     scores: None,
//! };
//! let preds: Vec<Prediction> = (0..100)
//!     .flat_map(|u| [p("x", u, u % 2 == 0), p("y", u, u % 4 == 0)])
//!     .collect();
//! let rows = [Row::new("x", "X"), Row::new("y", "Y")];
//! let r = Results::from_predictions(&preds, &rows, &[("x".into(), "y".into())]);
//! assert_eq!(r.hr1("x", 2), Some(0.5));
//! assert!((r.pairs[0].difference.estimate - 0.25).abs() < 1e-12);
//! assert!(r.to_markdown().contains("| X | 0.500 ["));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use pulserec_core::stats::{DEFAULT_RESAMPLES, Interval, bootstrap_mean, mcnemar_exact};
use serde::{Deserialize, Serialize};

/// Seed of every bootstrap in the tables, so a table is reproducible from its files.
const BOOTSTRAP_SEED: u64 = 0x5eed;

/// Why predictions could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not a prediction object.
    #[error("{path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// serde_json's message (names the field).
        message: String,
    },
}

/// One user's outcome under one row, list size and seed: a line of a predictions file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// The data set (`games`, `ml100k`, ...).
    pub data: String,
    /// `test` or `valid`.
    pub split: String,
    /// The row's name (`most-popular`, `no-rationale`, `pulse`, ...).
    pub variant: String,
    /// The run seed.
    pub seed: u64,
    /// The user id as in the data files.
    pub user: String,
    /// The held-out item id as in the data files.
    pub target: String,
    /// The candidate ids in the order the prompt listed them (the target among them).
    pub candidates: Vec<String>,
    /// The chosen item id, when the answer named one.
    pub chosen: Option<String>,
    /// Whether this counts as a hit for HR@1.
    pub hit: bool,
    /// The generated answer (generative selection only; absent otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
    /// The selector's score of each candidate in the listed order (ranking selectors only; the
    /// best is `chosen`), so a reader can rerank or combine rows without rerunning them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f32>>,
}

impl Prediction {
    /// 0-based position at which the target was listed (`None` if it is not a candidate).
    pub fn target_position(&self) -> Option<usize> {
        self.candidates.iter().position(|c| *c == self.target)
    }
}

/// Writes `predictions` as JSON lines to `path` through a temporary file in the same folder, so a
/// failure never leaves a partial file.
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<(), ResultsError> {
    let io = |e: std::io::Error| ResultsError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let mut w = std::io::BufWriter::new(tmp.as_file_mut());
        for p in predictions {
            serde_json::to_writer(&mut w, p).map_err(|e| io(e.into()))?;
            w.write_all(b"\n").map_err(io)?;
        }
        w.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads a predictions file; a bad line is reported with its number and field.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>, ResultsError> {
    let file = std::fs::File::open(path).map_err(|e| ResultsError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ResultsError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line).map_err(|e| ResultsError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// A row of the tables: its name in the predictions and its label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// [`Prediction::variant`].
    pub variant: String,
    /// What the tables print.
    pub label: String,
}

impl Row {
    /// A row.
    pub fn new(variant: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            variant: variant.into(),
            label: label.into(),
        }
    }
}

/// One row at one list size.
#[derive(Clone, Debug, PartialEq)]
pub struct Cell {
    /// HR@1 with its 95 % interval.
    pub hr1: Interval,
    /// Users evaluated.
    pub users: usize,
    /// Seeds pooled.
    pub seeds: usize,
    /// `(hits, cases)` by the positive's 0-based position in the prompt, over users and seeds.
    pub by_position: Vec<(usize, usize)>,
}

/// A paired comparison of two rows at one list size.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    /// The first row's variant.
    pub a: String,
    /// The second row's variant.
    pub b: String,
    /// List size.
    pub size: usize,
    /// Users both rows have.
    pub users: usize,
    /// HR@1(a) - HR@1(b) with its paired 95 % interval.
    pub difference: Interval,
    /// McNemar's exact two-sided p-value (one seed only).
    pub mcnemar_p: Option<f64>,
}

/// HR@1 tables of several rows on the same users.
#[derive(Clone, Debug, PartialEq)]
pub struct Results {
    /// List sizes (columns), ascending.
    pub sizes: Vec<usize>,
    /// Rows in table order.
    pub rows: Vec<Row>,
    /// `cells[(variant, size)]`.
    pub cells: BTreeMap<(String, usize), Cell>,
    /// The requested comparisons that both rows have.
    pub pairs: Vec<Pair>,
}

/// Per user (data, split, user) the hits of each seed.
type UserHits = BTreeMap<(String, String, String), BTreeMap<u64, bool>>;

fn user_mean(seeds: &BTreeMap<u64, bool>) -> f64 {
    seeds.values().map(|&h| f64::from(u8::from(h))).sum::<f64>() / seeds.len() as f64
}

impl Results {
    /// Builds the tables from `predictions` (any order, any number of seeds): `rows` in table
    /// order (rows without predictions print as not run) and the `(a, b)` pairs to compare.
    pub fn from_predictions(
        predictions: &[Prediction],
        rows: &[Row],
        pairs: &[(String, String)],
    ) -> Self {
        let mut hits: BTreeMap<(String, usize), UserHits> = BTreeMap::new();
        let mut positions: BTreeMap<(String, usize), Vec<(usize, usize)>> = BTreeMap::new();
        let mut sizes = BTreeSet::new();
        for p in predictions {
            let size = p.candidates.len();
            sizes.insert(size);
            let key = (p.variant.clone(), size);
            hits.entry(key.clone())
                .or_default()
                .entry((p.data.clone(), p.split.clone(), p.user.clone()))
                .or_default()
                .insert(p.seed, p.hit);
            if let Some(pos) = p.target_position() {
                let v = positions.entry(key).or_insert_with(|| vec![(0, 0); size]);
                v[pos].0 += usize::from(p.hit);
                v[pos].1 += 1;
            }
        }
        let mut cells = BTreeMap::new();
        for (key, users) in &hits {
            let values: Vec<f64> = users.values().map(user_mean).collect();
            let seeds: BTreeSet<u64> = users.values().flat_map(|s| s.keys().copied()).collect();
            cells.insert(
                key.clone(),
                Cell {
                    hr1: bootstrap_mean(&values, DEFAULT_RESAMPLES, BOOTSTRAP_SEED),
                    users: users.len(),
                    seeds: seeds.len(),
                    by_position: positions.get(key).cloned().unwrap_or_default(),
                },
            );
        }
        let mut out_pairs = Vec::new();
        for (a, b) in pairs {
            for &size in &sizes {
                let (Some(ha), Some(hb)) =
                    (hits.get(&(a.clone(), size)), hits.get(&(b.clone(), size)))
                else {
                    continue;
                };
                let common: Vec<_> = ha.keys().filter(|u| hb.contains_key(*u)).collect();
                if common.is_empty() {
                    continue;
                }
                let d: Vec<f64> = common
                    .iter()
                    .map(|u| user_mean(&ha[*u]) - user_mean(&hb[*u]))
                    .collect();
                let one_seed = common
                    .iter()
                    .all(|u| ha[*u].len() == 1 && hb[*u].len() == 1);
                let mcnemar_p = one_seed.then(|| {
                    let only_a = d.iter().filter(|&&x| x > 0.0).count();
                    let only_b = d.iter().filter(|&&x| x < 0.0).count();
                    mcnemar_exact(only_a, only_b)
                });
                out_pairs.push(Pair {
                    a: a.clone(),
                    b: b.clone(),
                    size,
                    users: common.len(),
                    difference: bootstrap_mean(&d, DEFAULT_RESAMPLES, BOOTSTRAP_SEED),
                    mcnemar_p,
                });
            }
        }
        Self {
            sizes: sizes.into_iter().collect(),
            rows: rows.to_vec(),
            cells,
            pairs: out_pairs,
        }
    }

    /// HR@1 of a row (by variant or label) at a list size.
    pub fn hr1(&self, row: &str, size: usize) -> Option<f64> {
        self.cell(row, size).map(|c| c.hr1.estimate)
    }

    /// A row's cell (by variant or label) at a list size.
    pub fn cell(&self, row: &str, size: usize) -> Option<&Cell> {
        let r = self
            .rows
            .iter()
            .find(|r| r.variant == row || r.label == row)?;
        self.cells.get(&(r.variant.clone(), size))
    }

    fn label(&self, variant: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.variant == variant)
            .map_or_else(|| variant.to_string(), |r| r.label.clone())
    }

    /// The main table: HR@1 [95 % interval] per list size, users and seeds.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from("| method |");
        for size in &self.sizes {
            let _ = write!(s, " HR@1, {size} candidates [95 % CI] |");
        }
        s.push_str(" users | seeds |\n|---|");
        for _ in &self.sizes {
            s.push_str("---:|");
        }
        s.push_str("---:|---:|\n");
        for row in &self.rows {
            let _ = write!(s, "| {} |", row.label);
            let (mut users, mut seeds) = (0, 0);
            for &size in &self.sizes {
                match self.cells.get(&(row.variant.clone(), size)) {
                    Some(c) => {
                        users = users.max(c.users);
                        seeds = seeds.max(c.seeds);
                        let _ = write!(
                            s,
                            " {:.3} [{:.3}, {:.3}] |",
                            c.hr1.estimate, c.hr1.low, c.hr1.high
                        );
                    }
                    None => s.push_str(" not run |"),
                }
            }
            if users > 0 {
                let _ = writeln!(s, " {users} | {seeds} |");
            } else {
                s.push_str(" | |\n");
            }
        }
        s
    }

    /// The paired comparisons: difference [95 % interval], McNemar p, users.
    pub fn pairs_markdown(&self) -> String {
        let mut s = String::from(
            "| comparison | candidates | HR@1 difference [95 % CI] | McNemar p | users |\n|---|---:|---:|---:|---:|\n",
        );
        for p in &self.pairs {
            let d = &p.difference;
            let _ = writeln!(
                s,
                "| {} - {} | {} | {:+.3} [{:+.3}, {:+.3}] | {} | {} |",
                self.label(&p.a),
                self.label(&p.b),
                p.size,
                d.estimate,
                d.low,
                d.high,
                p.mcnemar_p
                    .map_or_else(|| "n/a".into(), |v| format!("{v:.3}")),
                p.users
            );
        }
        s
    }

    /// HR@1 by the position (1-based) at which the prompt listed the positive, for `variants`.
    pub fn positions_markdown(&self, variants: &[&str]) -> String {
        let mut s = String::from(
            "| method | candidates | HR@1 with the positive listed 1st, 2nd, ... |\n|---|---:|---|\n",
        );
        for &v in variants {
            for &size in &self.sizes {
                let Some(c) = self.cells.get(&(v.to_string(), size)) else {
                    continue;
                };
                let rates: Vec<String> = c
                    .by_position
                    .iter()
                    .map(|&(h, n)| {
                        if n == 0 {
                            "-".into()
                        } else {
                            format!("{:.2}", h as f64 / n as f64)
                        }
                    })
                    .collect();
                let _ = writeln!(s, "| {} | {size} | {} |", self.label(v), rates.join(" "));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(variant: &str, seed: u64, user: u32, hit: bool, position: usize) -> Prediction {
        let mut candidates: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        candidates[position] = "t".into();
        Prediction {
            data: "toy".into(),
            split: "test".into(),
            variant: variant.into(),
            seed,
            user: user.to_string(),
            target: "t".into(),
            chosen: Some(if hit {
                "t".into()
            } else {
                candidates[(position + 1) % 5].clone()
            }),
            candidates,
            hit,
            answer: String::new(),
            scores: None,
        }
    }

    #[test]
    fn seeds_are_averaged_per_user_before_the_interval() {
        // 10 users; seed 1 hits users 0-4, seed 2 hits users 0-1: HR@1 = (0.5 + 0.2) / 2.
        let preds: Vec<Prediction> = (0..10)
            .flat_map(|u| [pred("a", 1, u, u < 5, 0), pred("a", 2, u, u < 2, 1)])
            .collect();
        let r = Results::from_predictions(&preds, &[Row::new("a", "A")], &[]);
        let c = r.cell("A", 5).unwrap();
        assert!((c.hr1.estimate - 0.35).abs() < 1e-12);
        assert_eq!((c.users, c.seeds), (10, 2));
        assert_eq!(c.by_position[0], (5, 10));
        assert_eq!(c.by_position[1], (2, 10));
        assert_eq!(c.by_position[2], (0, 0));
        assert!(r.to_markdown().contains("| 10 | 2 |"));
        assert!(
            r.positions_markdown(&["a"])
                .contains("| A | 5 | 0.50 0.20 - - - |")
        );
    }

    #[test]
    fn pairs_use_common_users_and_mcnemar_needs_one_seed() {
        let mut preds: Vec<Prediction> = (0..200)
            .flat_map(|u| {
                [
                    pred("a", 1, u, u % 2 == 0, 0),
                    pred("b", 1, u, u % 4 == 0, 0),
                ]
            })
            .collect();
        preds.push(pred("a", 1, 999, true, 0)); // only in `a`: not paired
        let r = Results::from_predictions(
            &preds,
            &[Row::new("a", "A"), Row::new("b", "B"), Row::new("c", "C")],
            &[("a".into(), "b".into()), ("a".into(), "c".into())],
        );
        assert_eq!(r.pairs.len(), 1, "no predictions for c");
        let p = &r.pairs[0];
        assert_eq!(p.users, 200);
        assert!((p.difference.estimate - 0.25).abs() < 1e-12);
        assert!(p.difference.low > 0.15 && p.difference.high < 0.35);
        // 50 users hit by a only, 0 by b only.
        assert!((p.mcnemar_p.unwrap() - 2.0 * 0.5f64.powi(50)).abs() < 1e-20);
        assert!(r.to_markdown().contains("| C | not run |"));
        assert!(r.pairs_markdown().contains("| A - B | 5 | +0.250 ["));
    }

    #[test]
    fn files_round_trip_and_bad_lines_name_their_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let preds = vec![pred("a", 1, 1, true, 2), pred("a", 1, 2, false, 0)];
        write_predictions(&path, &preds).unwrap();
        assert_eq!(read_predictions(&path).unwrap(), preds);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"data\": \"toy\"}\n");
        std::fs::write(&path, text).unwrap();
        let e = read_predictions(&path).unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("split"), "{e}");
    }
}
