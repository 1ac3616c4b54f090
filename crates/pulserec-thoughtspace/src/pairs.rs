//! (behaviour, rationale) training pairs and the rationale file they come from.

use std::io::BufRead;
use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, ThoughtSpaceError};

/// One user's behaviour text and rationale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingPair {
    /// The user (as written in the file).
    pub user: String,
    /// The rendered history + chosen item.
    pub behaviour: String,
    /// Why the user chose it.
    pub rationale: String,
}

/// Reads a rationale file by its extension: `.parquet` with [`read_pairs_parquet`], anything
/// else as JSON Lines with [`read_pairs_jsonl`].
pub fn read_pairs(path: &Path) -> Result<Vec<TrainingPair>> {
    if path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("parquet"))
    {
        read_pairs_parquet(path)
    } else {
        read_pairs_jsonl(path)
    }
}

/// The text of field `field` (`None`: absent or null), or why it is unusable.
fn non_empty(field: &str, value: Option<&str>) -> std::result::Result<String, String> {
    match value {
        None => Err(format!("missing field `{field}`")),
        Some(s) if s.trim().is_empty() => Err(format!("field `{field}` is empty")),
        Some(s) => Ok(s.to_string()),
    }
}

const BAD_USER: &str = "field `user` must be a non-empty string or a number";

/// An error for record `line` (1-based; 0 for the whole file) of `path`.
fn record_error(path: &Path, line: usize, reason: String) -> ThoughtSpaceError {
    ThoughtSpaceError::Record {
        path: path.to_path_buf(),
        line,
        reason,
    }
}

fn non_empty_file(path: &Path, pairs: Vec<TrainingPair>) -> Result<Vec<TrainingPair>> {
    if pairs.is_empty() {
        return Err(record_error(path, 0, "no records".into()));
    }
    Ok(pairs)
}

/// Reads a JSONL rationale file: one object per line with `user` (string or number),
/// `behaviour` (or `behavior`) and `rationale`; blank lines are skipped.
///
/// A missing field, a wrong type or an empty text is an error naming the file and line.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<TrainingPair>> {
    let file = std::fs::File::open(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ThoughtSpaceError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| record_error(path, i + 1, reason);
        let value: Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let user = match value.get("user") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(bad(BAD_USER.into())),
            None => return Err(bad("missing field `user`".into())),
        };
        let text = |names: &[&str]| -> Result<String> {
            let v = names.iter().find_map(|n| value.get(*n));
            if v.is_some_and(|v| !v.is_string()) {
                return Err(bad(format!("field `{}` must be a string", names[0])));
            }
            non_empty(names[0], v.and_then(Value::as_str)).map_err(bad)
        };
        out.push(TrainingPair {
            user,
            behaviour: text(&["behaviour", "behavior"])?,
            rationale: text(&["rationale"])?,
        });
    }
    non_empty_file(path, out)
}

/// One column's value at a row, as text; `None` for null.
type Cell<'a> = Box<dyn Fn(usize) -> Option<String> + 'a>;

/// A [`Cell`] over `col` reading values with `value`.
fn cells<'a, V: ToString>(col: &'a ArrayRef, value: impl Fn(usize) -> V + 'a) -> Cell<'a> {
    Box::new(move |r| col.is_valid(r).then(|| value(r).to_string()))
}

/// A column as [`Cell`]s: strings as they are and, when `integers`, integers (user ids) in
/// decimal, so `user` may be either.
fn text_cells<'a>(path: &Path, col: &'a ArrayRef, field: &str, integers: bool) -> Result<Cell<'a>> {
    Ok(match col.data_type() {
        DataType::Utf8 => cells(col, move |r| col.as_string::<i32>().value(r)),
        DataType::LargeUtf8 => cells(col, move |r| col.as_string::<i64>().value(r)),
        DataType::Int32 if integers => {
            cells(col, move |r| col.as_primitive::<Int32Type>().value(r))
        }
        DataType::Int64 if integers => {
            cells(col, move |r| col.as_primitive::<Int64Type>().value(r))
        }
        DataType::UInt32 if integers => {
            cells(col, move |r| col.as_primitive::<UInt32Type>().value(r))
        }
        DataType::UInt64 if integers => {
            cells(col, move |r| col.as_primitive::<UInt64Type>().value(r))
        }
        other => {
            let want = if integers {
                "a string or an integer"
            } else {
                "a string"
            };
            return Err(record_error(
                path,
                0,
                format!("column `{field}` has type {other}, expected {want}"),
            ));
        }
    })
}

/// The first of `names` that `b` has, as a text accessor; a file without any is an error
/// naming `names[0]`.
fn column_cells<'a>(
    path: &Path,
    b: &'a RecordBatch,
    names: &[&str],
    integers: bool,
) -> Result<Cell<'a>> {
    let col = names
        .iter()
        .find_map(|n| b.column_by_name(n))
        .ok_or_else(|| record_error(path, 0, format!("missing column `{}`", names[0])))?;
    text_cells(path, col, names[0], integers)
}

/// Reads a Parquet rationale file with columns `user` (string or integer), `behaviour` (or
/// `behavior`) and `rationale` (strings); other columns are ignored.
///
/// A missing column or a column of another type is an error naming the file (line 0); a null or
/// empty value is an error naming the file and the 1-based row, like a bad line of
/// [`read_pairs_jsonl`].
pub fn read_pairs_parquet(path: &Path) -> Result<Vec<TrainingPair>> {
    let bad_file = |e: String| record_error(path, 0, format!("invalid Parquet file: {e}"));
    let file = std::fs::File::open(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
    // Read by the Parquet types alone: a writer's Arrow hints (string views, dictionaries)
    // would otherwise change the column types this reader expects.
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| bad_file(e.to_string()))?
        .build()
        .map_err(|e| bad_file(e.to_string()))?;
    let mut out = Vec::new();
    for b in reader {
        let b = b.map_err(|e| bad_file(e.to_string()))?;
        let user = column_cells(path, &b, &["user"], true)?;
        let behaviour = column_cells(path, &b, &["behaviour", "behavior"], false)?;
        let rationale = column_cells(path, &b, &["rationale"], false)?;
        for r in 0..b.num_rows() {
            let bad = |reason: String| record_error(path, out.len() + 1, reason);
            let user = match user(r) {
                None => return Err(bad("missing field `user`".into())),
                Some(u) if u.trim().is_empty() => return Err(bad(BAD_USER.into())),
                Some(u) => u,
            };
            let behaviour = non_empty("behaviour", behaviour(r).as_deref()).map_err(bad)?;
            let rationale = non_empty("rationale", rationale(r).as_deref()).map_err(bad)?;
            out.push(TrainingPair {
                user,
                behaviour,
                rationale,
            });
        }
    }
    non_empty_file(path, out)
}

/// Writes pairs as JSONL (the format [`read_pairs_jsonl`] reads).
pub fn write_pairs_jsonl(path: &Path, pairs: &[TrainingPair]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        // Serialising a struct of strings cannot fail.
        text.push_str(&serde_json::to_string(p).unwrap_or_default());
        text.push('\n');
    }
    pulserec_core::fs::write_atomic(path, text.as_bytes())
        .map_err(|e| ThoughtSpaceError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    #[test]
    fn reads_and_round_trips() {
        let f = write(
            "{\"user\": 7, \"behavior\": \"History: A\", \"rationale\": \"likes A\"}\n\n\
             {\"user\": \"u2\", \"behaviour\": \"History: B\", \"rationale\": \"likes B\"}\n",
        );
        let pairs = read_pairs_jsonl(f.path()).unwrap();
        assert_eq!(pairs.len(), 2);
        assert_eq!(pairs[0].user, "7");
        let out = tempfile::NamedTempFile::new().unwrap();
        write_pairs_jsonl(out.path(), &pairs).unwrap();
        assert_eq!(read_pairs_jsonl(out.path()).unwrap(), pairs);
    }

    #[test]
    fn bad_records_name_file_and_line() {
        let cases = [
            (
                "{\"user\": 1, \"behaviour\": \"b\"}\n",
                "missing field `rationale`",
            ),
            (
                "{\"user\": 1, \"behaviour\": \"b\", \"rationale\": \"r\"}\n{\"user\": 2, \"behaviour\": \"  \", \"rationale\": \"r\"}\n",
                "field `behaviour` is empty",
            ),
            (
                "{\"behaviour\": \"b\", \"rationale\": \"r\"}\n",
                "missing field `user`",
            ),
            ("not json\n", "invalid JSON"),
            ("\n", "no records"),
        ];
        for (content, want) in cases {
            let f = write(content);
            let err = read_pairs_jsonl(f.path()).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
            assert!(
                err.contains(&f.path().display().to_string()),
                "{err} names no file"
            );
        }
        let f = write("{\"user\": 1, \"behaviour\": \"b\", \"rationale\": \"r\"}\n{\"user\": 2}\n");
        let err = read_pairs_jsonl(f.path()).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err} names no line");
    }

    use std::sync::Arc;

    use arrow_array::{Float64Array, Int64Array, LargeStringArray, StringArray};
    use parquet::arrow::ArrowWriter;

    /// A `.parquet` temporary file holding `columns` (empty columns: a file with no rows).
    fn write_parquet(columns: Vec<(&str, ArrayRef)>) -> tempfile::NamedTempFile {
        let f = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .unwrap();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut w = ArrowWriter::try_new(f.reopen().unwrap(), batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        f
    }

    fn strings(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    #[test]
    fn reads_parquet_like_jsonl() {
        let f = write_parquet(vec![
            ("user", Arc::new(Int64Array::from(vec![7, 12])) as ArrayRef),
            ("score", Arc::new(Float64Array::from(vec![0.5, 0.25]))),
            (
                "behavior",
                Arc::new(LargeStringArray::from(vec!["History: A", "History: B"])),
            ),
            ("rationale", strings(&[Some("likes A"), Some("likes B")])),
        ]);
        let pairs = read_pairs(f.path()).unwrap();
        let jsonl = write(
            "{\"user\": 7, \"behavior\": \"History: A\", \"rationale\": \"likes A\"}\n\
             {\"user\": 12, \"behaviour\": \"History: B\", \"rationale\": \"likes B\"}\n",
        );
        assert_eq!(pairs, read_pairs(jsonl.path()).unwrap());
        assert_eq!(pairs[1].user, "12");

        let f = write_parquet(vec![
            ("user", strings(&[Some("u1")])),
            ("behaviour", strings(&[Some("History: C")])),
            ("rationale", strings(&[Some("likes C")])),
        ]);
        assert_eq!(read_pairs_parquet(f.path()).unwrap()[0].user, "u1");
    }

    #[test]
    fn bad_parquet_records_name_file_and_row() {
        let ok = |n: usize| strings(&vec![Some("text"); n]);
        let users = |n: i64| Arc::new(Int64Array::from((0..n).collect::<Vec<_>>())) as ArrayRef;
        let cases: Vec<(Vec<(&str, ArrayRef)>, &str)> = vec![
            (
                vec![
                    ("user", users(3)),
                    ("behaviour", ok(3)),
                    ("rationale", strings(&[Some("r"), Some("r"), None])),
                ],
                ":3: missing field `rationale`",
            ),
            (
                vec![
                    ("user", users(2)),
                    ("behaviour", strings(&[Some("b"), Some("  ")])),
                    ("rationale", ok(2)),
                ],
                ":2: field `behaviour` is empty",
            ),
            (
                vec![
                    ("user", strings(&[Some("a"), None])),
                    ("behaviour", ok(2)),
                    ("rationale", ok(2)),
                ],
                ":2: missing field `user`",
            ),
            (
                vec![
                    ("user", strings(&[Some(" ")])),
                    ("behaviour", ok(1)),
                    ("rationale", ok(1)),
                ],
                ":1: field `user` must be a non-empty string or a number",
            ),
            (
                vec![("user", users(1)), ("behaviour", ok(1))],
                ":0: missing column `rationale`",
            ),
            (
                vec![
                    ("user", Arc::new(Float64Array::from(vec![1.5]))),
                    ("behaviour", ok(1)),
                    ("rationale", ok(1)),
                ],
                ":0: column `user` has type Float64, expected a string or an integer",
            ),
            (
                vec![
                    ("user", users(1)),
                    ("behaviour", users(1)),
                    ("rationale", ok(1)),
                ],
                ":0: column `behaviour` has type Int64, expected a string",
            ),
            (
                vec![
                    ("user", users(0)),
                    ("behaviour", ok(0)),
                    ("rationale", ok(0)),
                ],
                ":0: no records",
            ),
        ];
        for (columns, want) in cases {
            let f = write_parquet(columns);
            let err = read_pairs(f.path()).unwrap_err().to_string();
            let file = f.path().display().to_string();
            assert!(err.starts_with(&file), "{err} does not start with {file}");
            assert!(err.contains(want), "{err} does not say {want}");
        }
        let f = tempfile::Builder::new()
            .suffix(".parquet")
            .tempfile()
            .unwrap();
        std::fs::write(f.path(), "user,behaviour,rationale\n").unwrap();
        let err = read_pairs(f.path()).unwrap_err().to_string();
        assert!(err.contains(":0: invalid Parquet file"), "{err}");
    }
}
