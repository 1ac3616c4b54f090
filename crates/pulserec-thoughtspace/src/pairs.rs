//! (behaviour, rationale) training pairs and the rationale file they come from.

use std::io::BufRead;
use std::path::Path;

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

/// Reads a JSONL rationale file: one object per line with `user` (string or number),
/// `behaviour` (or `behavior`) and `rationale`; blank lines are skipped.
///
/// A missing field, a wrong type or an empty text is an error naming the file and line.
pub fn read_pairs_jsonl(path: &Path) -> Result<Vec<TrainingPair>> {
    let file = std::fs::File::open(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| ThoughtSpaceError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| ThoughtSpaceError::Record {
            path: path.to_path_buf(),
            line: line_no,
            reason,
        };
        let value: Value =
            serde_json::from_str(&line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let user = match value.get("user") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => {
                return Err(bad(
                    "field `user` must be a non-empty string or a number".into()
                ));
            }
            None => return Err(bad("missing field `user`".into())),
        };
        let text = |names: &[&str]| -> Result<String> {
            let v = names
                .iter()
                .find_map(|n| value.get(*n))
                .ok_or_else(|| bad(format!("missing field `{}`", names[0])))?;
            let s = v
                .as_str()
                .ok_or_else(|| bad(format!("field `{}` must be a string", names[0])))?;
            if s.trim().is_empty() {
                return Err(bad(format!("field `{}` is empty", names[0])));
            }
            Ok(s.to_string())
        };
        out.push(TrainingPair {
            user,
            behaviour: text(&["behaviour", "behavior"])?,
            rationale: text(&["rationale"])?,
        });
    }
    if out.is_empty() {
        return Err(ThoughtSpaceError::Record {
            path: path.to_path_buf(),
            line: 0,
            reason: "no records".into(),
        });
    }
    Ok(out)
}

/// Writes pairs as JSONL (the format [`read_pairs_jsonl`] reads).
pub fn write_pairs_jsonl(path: &Path, pairs: &[TrainingPair]) -> Result<()> {
    let mut text = String::new();
    for p in pairs {
        // Serialising a struct of strings cannot fail.
        text.push_str(&serde_json::to_string(p).unwrap_or_default());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| ThoughtSpaceError::io(path, e))
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
}
