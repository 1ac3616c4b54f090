//! Amazon review data, 2018 and 2023 releases: reviews JSONL and metadata JSONL, plain or gzipped.
//!
//! 2018: reviews `reviewerID, asin, overall, unixReviewTime` (seconds), `reviewText, summary`;
//! meta `asin, title, description[], category[]`.
//! 2023: reviews `user_id, parent_asin, rating, timestamp` (milliseconds), `title, text`;
//! meta `parent_asin, title, features[], description[], categories[]`. Items are joined on
//! `parent_asin`, as the 2023 release recommends.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{DataError, Result};
use crate::log::{InteractionLog, ItemTable};
use crate::reader::{TextFile, read_file};

/// Which Amazon release a file follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AmazonVersion {
    /// Amazon Review Data 2018 (McAuley lab).
    V2018,
    /// Amazon Reviews 2023.
    V2023,
}

#[derive(Deserialize)]
#[allow(non_snake_case)] // the 2018 release's own key names
struct ReviewRecord {
    reviewerID: Option<String>,
    asin: Option<String>,
    overall: Option<f64>,
    unixReviewTime: Option<i64>,
    reviewText: Option<String>,
    summary: Option<String>,
    user_id: Option<String>,
    parent_asin: Option<String>,
    rating: Option<f64>,
    timestamp: Option<i64>,
    title: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct MetaRecord {
    asin: Option<String>,
    parent_asin: Option<String>,
    title: Option<Value>,
    description: Option<Value>,
    features: Option<Value>,
    category: Option<Value>,
    categories: Option<Value>,
}

fn parse_line<'a, T: Deserialize<'a>>(file: &TextFile, raw: &'a [u8], line: usize) -> Result<T> {
    serde_json::from_slice(raw).map_err(|e| file.line_error(line, format!("invalid JSON: {e}")))
}

fn required<T>(file: &TextFile, v: Option<T>, line: usize, key: &str) -> Result<T> {
    v.ok_or_else(|| file.field_error(line, key, "missing"))
}

/// Guesses the release from the first record's keys.
pub(crate) fn sniff_version(path: &Path) -> Result<AmazonVersion> {
    let file = read_file(path)?;
    let (line, raw) = file.lines().next().ok_or_else(|| DataError::Empty {
        path: file.path.clone(),
    })?;
    let v: Value = parse_line(&file, raw, line)?;
    if v.get("reviewerID").is_some() {
        Ok(AmazonVersion::V2018)
    } else if v.get("user_id").is_some() {
        Ok(AmazonVersion::V2023)
    } else {
        Err(DataError::UnknownFormat {
            path: file.path.clone(),
            message: "JSON records have neither `reviewerID` (2018) nor `user_id` (2023)".into(),
        })
    }
}

/// Joins the non-empty texts of a key holding a string or an array of strings.
fn text_of(v: &Option<Value>) -> String {
    match v {
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn join_review(a: Option<String>, b: Option<String>) -> Option<String> {
    let parts: Vec<String> = [a, b]
        .into_iter()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(". "))
}

fn check_rating(file: &TextFile, r: f64, line: usize, key: &str) -> Result<f32> {
    if !r.is_finite() || r < 0.0 {
        return Err(file.field_error(
            line,
            key,
            format!("rating must be finite and non-negative, got {r}"),
        ));
    }
    Ok(r as f32)
}

/// Reads a reviews file of the given release.
pub(crate) fn read_reviews(path: &Path, version: AmazonVersion) -> Result<InteractionLog> {
    let file = read_file(path)?;
    let mut log = InteractionLog::new(true, true, true);
    for (line, raw) in file.lines() {
        let r: ReviewRecord = parse_line(&file, raw, line)?;
        let (user, item, rating, ts, review) = match version {
            AmazonVersion::V2018 => (
                required(&file, r.reviewerID, line, "reviewerID")?,
                required(&file, r.asin, line, "asin")?,
                check_rating(
                    &file,
                    required(&file, r.overall, line, "overall")?,
                    line,
                    "overall",
                )?,
                required(&file, r.unixReviewTime, line, "unixReviewTime")?,
                join_review(r.summary, r.reviewText),
            ),
            AmazonVersion::V2023 => (
                required(&file, r.user_id, line, "user_id")?,
                required(&file, r.parent_asin.or(r.asin), line, "parent_asin")?,
                check_rating(
                    &file,
                    required(&file, r.rating, line, "rating")?,
                    line,
                    "rating",
                )?,
                // 2023 timestamps are in milliseconds.
                required(&file, r.timestamp, line, "timestamp")? / 1000,
                join_review(r.title, r.text),
            ),
        };
        if user.trim().is_empty() || item.trim().is_empty() {
            return Err(file.field_error(
                line,
                if user.trim().is_empty() {
                    "user"
                } else {
                    "item"
                },
                "empty id",
            ));
        }
        log.push(user.trim(), item.trim(), Some(rating), Some(ts), review);
    }
    if log.len() == 0 {
        return Err(DataError::Empty {
            path: file.path.clone(),
        });
    }
    Ok(log)
}

/// Reads a metadata file; the description joins description, features and categories.
pub(crate) fn read_meta(path: &Path, version: AmazonVersion) -> Result<ItemTable> {
    let file = read_file(path)?;
    let mut table = ItemTable::default();
    for (line, raw) in file.lines() {
        let m: MetaRecord = parse_line(&file, raw, line)?;
        let (key, id) = match version {
            AmazonVersion::V2018 => ("asin", m.asin),
            AmazonVersion::V2023 => ("parent_asin", m.parent_asin.or(m.asin)),
        };
        let id = required(&file, id, line, key)?;
        let title = text_of(&m.title);
        let desc: Vec<String> = [&m.description, &m.features, &m.category, &m.categories]
            .into_iter()
            .map(text_of)
            .filter(|s| !s.is_empty())
            .collect();
        if let Err(first_line) = table.insert(id.trim(), title, desc.join(" | "), line) {
            return Err(DataError::DuplicateId {
                path: file.path.clone(),
                line,
                id,
                first_line,
            });
        }
    }
    table.non_empty(&file.path)
}
