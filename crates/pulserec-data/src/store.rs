//! Parquet storage of a prepared data set: catalogue, sequences and candidate sets, in one
//! folder, read back bit for bit.
//!
//! Layout: `catalog.parquet` (`item_id, raw_id, title, description`), `sequences.parquet`
//! (`user_id, raw_user_id, items: list<u32>` and, when present, `ratings: list<f32>`,
//! `timestamps: list<i64>`, `reviews: list<utf8>`), `candidates_K.parquet` (`user_id,
//! items: list<u32>`, positive first) and `prepared.json` (format version, split rule and the
//! settings of every candidate set).

use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    Float32Builder, Int64Builder, ListBuilder, StringBuilder, UInt32Builder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::ArrowPrimitiveType;
use arrow_array::types::{Float32Type, Int64Type, UInt32Type};
use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use pulserec_core::{Catalog, ItemId, Sequences, UserId};
use serde::{Deserialize, Serialize};

use crate::candidates::{CandidateConfig, CandidateSets};
use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::parquet_file::{batch, column, read_batches, storage, typed, write_batch};
use crate::split::Target;

/// A data set ready for the stages: the data plus its fixed candidate sets.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedDataset {
    /// Catalogue and sequences.
    pub dataset: Dataset,
    /// Candidate sets drawn once and stored with the split.
    pub candidates: Vec<CandidateSets>,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    version: u32,
    split: String,
    candidate_sets: Vec<ManifestSet>,
}

#[derive(Serialize, Deserialize)]
struct ManifestSet {
    file: String,
    target: Target,
    config: CandidateConfig,
}

const STORE_VERSION: u32 = 1;

impl PreparedDataset {
    /// Writes the data set into `dir` (created if needed); existing files are replaced.
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        write_catalog(&dir.join("catalog.parquet"), &self.dataset.catalog)?;
        write_sequences(&dir.join("sequences.parquet"), &self.dataset)?;
        let mut sets = Vec::new();
        for (k, c) in self.candidates.iter().enumerate() {
            let file = format!("candidates_{k}.parquet");
            write_candidates(&dir.join(&file), c)?;
            sets.push(ManifestSet {
                file,
                target: c.target,
                config: c.config.clone(),
            });
        }
        let manifest = Manifest {
            version: STORE_VERSION,
            split: "leave-one-out".into(),
            candidate_sets: sets,
        };
        let path = dir.join("prepared.json");
        let json = serde_json::to_string_pretty(&manifest).map_err(|e| storage(&path, e))?;
        pulserec_core::fs::write_atomic(&path, json.as_bytes()).map_err(|e| DataError::io(&path, e))
    }

    /// Reads a data set written by [`PreparedDataset::save`].
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join("prepared.json");
        let text = std::fs::read_to_string(&path).map_err(|e| DataError::io(&path, e))?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| storage(&path, e))?;
        if manifest.version != STORE_VERSION {
            return Err(storage(
                &path,
                format!(
                    "store version {} (this build reads {STORE_VERSION})",
                    manifest.version
                ),
            ));
        }
        let catalog = read_catalog(&dir.join("catalog.parquet"))?;
        let (sequences, user_ids) = read_sequences(&dir.join("sequences.parquet"))?;
        let dataset = Dataset::from_parts(catalog, sequences, user_ids)?;
        let candidates = manifest
            .candidate_sets
            .into_iter()
            .map(|s| read_candidates(&dir.join(&s.file), s.target, s.config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            dataset,
            candidates,
        })
    }

    /// The candidate set for `target` with `n_negatives`, if one was stored.
    pub fn candidates_for(&self, target: Target, n_negatives: usize) -> Option<&CandidateSets> {
        self.candidates
            .iter()
            .find(|c| c.target == target && c.config.n_negatives == n_negatives)
    }
}

fn write_catalog(path: &Path, catalog: &Catalog) -> Result<()> {
    let n = catalog.len();
    let ids: UInt32Array = (1..=n as u32).collect();
    let strings = |v: &[String]| Arc::new(StringArray::from_iter_values(v[1..].iter())) as ArrayRef;
    let b = batch(
        path,
        vec![
            ("item_id", Arc::new(ids) as ArrayRef),
            ("raw_id", strings(catalog.raw_ids())),
            ("title", strings(catalog.titles())),
            ("description", strings(catalog.descriptions())),
        ],
    )?;
    write_batch(path, b)
}

fn read_catalog(path: &Path) -> Result<Catalog> {
    let mut catalog = Catalog::new();
    for b in read_batches(path)? {
        let ids = typed::<UInt32Array>(path, column(path, &b, "item_id")?, "item_id")?;
        let raw = typed::<StringArray>(path, column(path, &b, "raw_id")?, "raw_id")?;
        let title = typed::<StringArray>(path, column(path, &b, "title")?, "title")?;
        let desc = typed::<StringArray>(path, column(path, &b, "description")?, "description")?;
        for r in 0..b.num_rows() {
            let id = catalog.push(
                raw.value(r).to_string(),
                title.value(r).to_string(),
                desc.value(r).to_string(),
            );
            if id.0 != ids.value(r) {
                return Err(storage(
                    path,
                    format!("row {r}: item ids are not 1..=n in order"),
                ));
            }
        }
    }
    Ok(catalog)
}

fn write_sequences(path: &Path, ds: &Dataset) -> Result<()> {
    let s = &ds.sequences;
    let off = s.offsets();
    let mut items = ListBuilder::new(UInt32Builder::new());
    let mut ratings = s.ratings().map(|_| ListBuilder::new(Float32Builder::new()));
    let mut times = s
        .timestamps()
        .map(|_| ListBuilder::new(Int64Builder::new()));
    let mut reviews = s.reviews().map(|_| ListBuilder::new(StringBuilder::new()));
    for u in 0..s.n_users() {
        let r = off[u]..off[u + 1];
        items
            .values()
            .append_slice(&s.items()[r.clone()].iter().map(|i| i.0).collect::<Vec<_>>());
        items.append(true);
        if let (Some(b), Some(v)) = (ratings.as_mut(), s.ratings()) {
            b.values().append_slice(&v[r.clone()]);
            b.append(true);
        }
        if let (Some(b), Some(v)) = (times.as_mut(), s.timestamps()) {
            b.values().append_slice(&v[r.clone()]);
            b.append(true);
        }
        if let (Some(b), Some(v)) = (reviews.as_mut(), s.reviews()) {
            for t in &v[r] {
                b.values().append_value(t);
            }
            b.append(true);
        }
    }
    let users: UInt32Array = (0..s.n_users() as u32).collect();
    let mut cols: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(users)),
        (
            "raw_user_id",
            Arc::new(StringArray::from_iter_values(ds.user_ids.iter())),
        ),
        ("items", Arc::new(items.finish())),
    ];
    if let Some(mut b) = ratings {
        cols.push(("ratings", Arc::new(b.finish())));
    }
    if let Some(mut b) = times {
        cols.push(("timestamps", Arc::new(b.finish())));
    }
    if let Some(mut b) = reviews {
        cols.push(("reviews", Arc::new(b.finish())));
    }
    write_batch(path, batch(path, cols)?)
}

/// A `list<primitive>` column as its row lengths and its flat values.
fn primitive_list<'a, T: ArrowPrimitiveType>(
    path: &Path,
    col: &'a ArrayRef,
    name: &str,
) -> Result<(Vec<usize>, &'a [T::Native])> {
    let list = col
        .as_list_opt::<i32>()
        .ok_or_else(|| storage(path, format!("`{name}` is not a list")))?;
    let values = list
        .values()
        .as_primitive_opt::<T>()
        .ok_or_else(|| storage(path, format!("`{name}` is not a list of {}", T::DATA_TYPE)))?;
    let off = list.value_offsets();
    let lens = off.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    let (first, last) = (off[0] as usize, off[off.len() - 1] as usize);
    Ok((lens, &values.values()[first..last]))
}

/// Appends an optional per-event column, checking that its rows line up with the items'.
fn extend_parallel<T: ArrowPrimitiveType>(
    path: &Path,
    b: &RecordBatch,
    name: &str,
    item_lens: &[usize],
    out: &mut Option<Vec<T::Native>>,
) -> Result<()> {
    if let Some(col) = b.column_by_name(name) {
        let (lens, values) = primitive_list::<T>(path, col, name)?;
        if lens != item_lens {
            return Err(storage(
                path,
                format!("`{name}` rows do not line up with `items`"),
            ));
        }
        out.get_or_insert_with(Vec::new).extend_from_slice(values);
    }
    Ok(())
}

fn read_sequences(path: &Path) -> Result<(Sequences, Vec<String>)> {
    let mut offsets = vec![0usize];
    let mut items = Vec::new();
    let mut ratings: Option<Vec<f32>> = None;
    let mut times: Option<Vec<i64>> = None;
    let mut reviews: Option<Vec<String>> = None;
    let mut user_ids = Vec::new();
    for b in read_batches(path)? {
        let raw = typed::<StringArray>(path, column(path, &b, "raw_user_id")?, "raw_user_id")?;
        user_ids.extend((0..b.num_rows()).map(|r| raw.value(r).to_string()));
        let (lens, values) =
            primitive_list::<UInt32Type>(path, column(path, &b, "items")?, "items")?;
        items.extend(values.iter().map(|&i| ItemId(i)));
        for len in &lens {
            offsets.push(offsets[offsets.len() - 1] + len);
        }
        extend_parallel::<Float32Type>(path, &b, "ratings", &lens, &mut ratings)?;
        extend_parallel::<Int64Type>(path, &b, "timestamps", &lens, &mut times)?;
        if let Some(c) = b.column_by_name("reviews") {
            let list = c
                .as_list_opt::<i32>()
                .ok_or_else(|| storage(path, "`reviews` is not a list"))?;
            let v = list
                .values()
                .as_string_opt::<i32>()
                .ok_or_else(|| storage(path, "`reviews` is not list<utf8>"))?;
            let off = list.value_offsets();
            let row_lens: Vec<usize> = off.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
            if row_lens != lens {
                return Err(storage(path, "`reviews` rows do not line up with `items`"));
            }
            let out = reviews.get_or_insert_with(Vec::new);
            out.extend(
                (off[0] as usize..off[off.len() - 1] as usize).map(|k| v.value(k).to_string()),
            );
        }
    }
    let seqs = Sequences::from_parts(offsets, items, ratings, times, reviews)
        .map_err(|e| storage(path, e))?;
    Ok((seqs, user_ids))
}

fn write_candidates(path: &Path, c: &CandidateSets) -> Result<()> {
    let users: UInt32Array = c.users().iter().map(|u| u.0).collect();
    let mut items = ListBuilder::new(UInt32Builder::new());
    for (_, cands) in c.iter() {
        items
            .values()
            .append_slice(&cands.iter().map(|i| i.0).collect::<Vec<_>>());
        items.append(true);
    }
    write_batch(
        path,
        batch(
            path,
            vec![
                ("user_id", Arc::new(users) as ArrayRef),
                ("items", Arc::new(items.finish())),
            ],
        )?,
    )
}

fn read_candidates(path: &Path, target: Target, config: CandidateConfig) -> Result<CandidateSets> {
    let mut users = Vec::new();
    let mut offsets = vec![0usize];
    let mut items = Vec::new();
    for b in read_batches(path)? {
        let u = typed::<UInt32Array>(path, column(path, &b, "user_id")?, "user_id")?;
        let (lens, values) =
            primitive_list::<UInt32Type>(path, column(path, &b, "items")?, "items")?;
        users.extend((0..b.num_rows()).map(|r| UserId(u.value(r))));
        items.extend(values.iter().map(|&i| ItemId(i)));
        for len in lens {
            offsets.push(offsets[offsets.len() - 1] + len);
        }
    }
    if users.windows(2).any(|w| w[0] >= w[1]) {
        return Err(storage(path, "users are not in increasing id order"));
    }
    Ok(CandidateSets::from_parts(
        target, config, users, offsets, items,
    ))
}
