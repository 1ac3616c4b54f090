//! A resumable, shardable store of rationales: JSON Lines parts in one directory.
//!
//! Each [`RationaleStore::append`] writes one part file under a temporary name and renames it
//! into place, so a part is either complete or absent: a run killed at any point (even
//! `kill -9`) loses at most the batch in flight, and a rerun skips every user already stored.
//! Shards (`--shard i/n`) write parts with their own names into the same directory.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use pulserec_core::{RationaleSource, UserId};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TotError};

/// One stored rationale, with what is needed to reproduce and audit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredRationale {
    /// The user.
    pub user: UserId,
    /// The rationale text.
    pub text: String,
    /// Whether the model output parsed as asked (false: fallback extraction).
    pub parsed: bool,
    /// Stage 1 or Tree-of-Thought.
    pub source: RationaleSource,
    /// The scorer's score (Tree-of-Thought only).
    pub score: Option<f32>,
    /// The scorer's name (Tree-of-Thought only).
    pub scorer: Option<String>,
    /// The generating model's name.
    pub model: String,
    /// `PROMPT_VERSION` of the prompts used.
    pub prompt_version: String,
    /// The run seed.
    pub seed: u64,
    /// Tokens generated for this user.
    pub tokens: usize,
    /// Wall time spent on this user's batch divided by its size, in seconds.
    pub seconds: f64,
}

/// Shard `index` of `count`: the users with `id % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// 0-based shard index.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
}

impl Shard {
    /// The whole set of users.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Whether `user` belongs to this shard.
    pub fn contains(&self, user: UserId) -> bool {
        user.0 % self.count == self.index
    }
}

impl FromStr for Shard {
    type Err = TotError;

    /// Parses `i/n` with `0 <= i < n`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            TotError::config(
                "shard",
                format!("expected `i/n` with 0 <= i < n, got `{s}`"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

/// A directory of rationale parts.
#[derive(Clone, Debug)]
pub struct RationaleStore {
    dir: PathBuf,
}

const PART_EXT: &str = "jsonl";

impl RationaleStore {
    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| TotError::io(&dir, e))?;
        Ok(Self { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Complete part files, sorted by name (temporary files of interrupted writes are ignored).
    fn parts(&self) -> Result<Vec<PathBuf>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| TotError::io(&self.dir, e))?;
        let mut parts = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| TotError::io(&self.dir, e))?.path();
            if path.extension().is_some_and(|x| x == PART_EXT) {
                parts.push(path);
            }
        }
        parts.sort();
        Ok(parts)
    }

    /// Every stored rationale, one per user (a user stored twice keeps the later part's
    /// record), in user order.
    pub fn load(&self) -> Result<Vec<StoredRationale>> {
        let mut by_user = BTreeMap::new();
        for part in self.parts()? {
            let text = fs::read_to_string(&part).map_err(|e| TotError::io(&part, e))?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let record: StoredRationale =
                    serde_json::from_str(line).map_err(|e| TotError::Store {
                        path: part.clone(),
                        line: i + 1,
                        message: e.to_string(),
                    })?;
                by_user.insert(record.user, record);
            }
        }
        Ok(by_user.into_values().collect())
    }

    /// Users already stored.
    pub fn done(&self) -> Result<HashSet<UserId>> {
        Ok(self.load()?.into_iter().map(|r| r.user).collect())
    }

    /// The users of `candidates` in `shard` that are not stored yet, in the given order.
    pub fn pending(
        &self,
        candidates: impl IntoIterator<Item = UserId>,
        shard: Shard,
    ) -> Result<Vec<UserId>> {
        let done = self.done()?;
        Ok(candidates
            .into_iter()
            .filter(|u| shard.contains(*u) && !done.contains(u))
            .collect())
    }

    /// Writes `records` as one new part of `shard`, atomically; returns its path (`None` for
    /// an empty batch).
    pub fn append(&self, records: &[StoredRationale], shard: Shard) -> Result<Option<PathBuf>> {
        if records.is_empty() {
            return Ok(None);
        }
        let prefix = format!("part-s{:03}of{:03}-", shard.index, shard.count);
        let existing = self
            .parts()?
            .iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .count();
        let path = self.dir.join(format!("{prefix}{existing:06}.{PART_EXT}"));
        let tmp = path.with_extension(format!("{PART_EXT}.tmp"));
        let mut body = Vec::new();
        for record in records {
            // Serialising plain data to memory cannot fail except for non-finite floats, which
            // serde_json writes as `null`; keep the error path anyway rather than unwrap.
            serde_json::to_writer(&mut body, record).map_err(|e| TotError::Store {
                path: path.clone(),
                line: 0,
                message: e.to_string(),
            })?;
            body.push(b'\n');
        }
        let mut file = fs::File::create(&tmp).map_err(|e| TotError::io(&tmp, e))?;
        file.write_all(&body).map_err(|e| TotError::io(&tmp, e))?;
        file.sync_all().map_err(|e| TotError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| TotError::io(&path, e))?;
        tracing::debug!(path = %path.display(), records = records.len(), "rationale part written");
        Ok(Some(path))
    }
}
