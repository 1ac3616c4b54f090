//! RecBole atomic files: `.inter` (interactions, or pre-split `item_id_list` sequences) and
//! `.item` (item features), TAB-separated with a `name:type` header.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::log::{InteractionLog, ItemTable};
use crate::reader::{TextFile, parse_rating, parse_timestamp, read_file};

/// A RecBole column type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FieldType {
    Token,
    TokenSeq,
    Float,
    FloatSeq,
}

struct Header {
    names: Vec<String>,
    types: Vec<FieldType>,
    /// Line number of the header (1 unless blank lines precede it).
    line: usize,
}

impl Header {
    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

fn parse_header(file: &TextFile) -> Result<(Header, usize)> {
    let (line, raw) = file.lines().next().ok_or_else(|| DataError::Empty {
        path: file.path.clone(),
    })?;
    let text = file.utf8(raw, line, "header")?;
    let mut names = Vec::new();
    let mut types = Vec::new();
    for col in text.split('\t') {
        let (name, ty) = col.split_once(':').ok_or_else(|| DataError::Header {
            path: file.path.clone(),
            line,
            message: format!("column `{col}` is not `name:type`"),
        })?;
        let ty = match ty.trim() {
            "token" => FieldType::Token,
            "token_seq" => FieldType::TokenSeq,
            "float" => FieldType::Float,
            "float_seq" => FieldType::FloatSeq,
            other => {
                return Err(DataError::Header {
                    path: file.path.clone(),
                    line,
                    message: format!(
                        "column `{name}` has unknown type `{other}` (token, token_seq, float, float_seq)"
                    ),
                });
            }
        };
        names.push(name.trim().to_string());
        types.push(ty);
    }
    Ok((Header { names, types, line }, line))
}

fn require(header: &Header, file: &TextFile, name: &str, ty: FieldType) -> Result<usize> {
    let i = header.position(name).ok_or_else(|| DataError::Header {
        path: file.path.clone(),
        line: header.line,
        message: format!(
            "missing column `{name}` (found: {})",
            header.names.join(", ")
        ),
    })?;
    if header.types[i] != ty {
        return Err(DataError::Header {
            path: file.path.clone(),
            line: header.line,
            message: format!(
                "column `{name}` must be of type {ty:?}, found {:?}",
                header.types[i]
            ),
        });
    }
    Ok(i)
}

/// Splits a data line into exactly the header's number of fields, reusing `out`.
fn fields<'a>(
    file: &TextFile,
    raw: &'a str,
    line: usize,
    n: usize,
    out: &mut Vec<&'a str>,
) -> Result<()> {
    out.clear();
    out.extend(raw.split('\t'));
    if out.len() != n {
        return Err(file.line_error(
            line,
            format!("expected {n} TAB-separated fields, found {}", out.len()),
        ));
    }
    Ok(())
}

fn token<'a>(file: &TextFile, raw: &'a str, line: usize, field: &str) -> Result<&'a str> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(file.field_error(line, field, "empty id"));
    }
    Ok(s)
}

/// Reads a `.inter` file: one interaction per line, or one pre-split sequence per line
/// (`item_id_list` + `item_id`: the whole sequence is the list followed by the item).
pub(crate) fn read_inter(path: &Path) -> Result<InteractionLog> {
    let file = read_file(path)?;
    let (header, header_line) = parse_header(&file)?;
    let user = require(&header, &file, "user_id", FieldType::Token)?;
    let item = require(&header, &file, "item_id", FieldType::Token)?;
    let list = header.position("item_id_list");
    let rating = header.position("rating");
    let timestamp = header.position("timestamp");
    for (name, at) in [("rating", rating), ("timestamp", timestamp)] {
        if let Some(i) = at {
            require(&header, &file, name, FieldType::Float).map(|_| i)?;
        }
    }
    if list.is_some() {
        require(&header, &file, "item_id_list", FieldType::TokenSeq)?;
    }
    let ncol = header.names.len();
    let text = file.text(b'\t', &header.names)?;
    let mut f = Vec::with_capacity(ncol);
    let mut log = InteractionLog::new(rating.is_some(), timestamp.is_some(), false);
    // Pre-split files hold one row per user; a repeated user means a per-prefix file.
    let mut seen_users = rustc_hash::FxHashMap::default();
    let mut rows = 0usize;
    for (line, raw) in TextFile::text_lines(text).skip_while(|&(l, _)| l <= header_line) {
        fields(&file, raw, line, ncol, &mut f)?;
        let u = token(&file, f[user], line, "user_id")?;
        let r = rating
            .map(|i| parse_rating(&file, f[i], line, "rating"))
            .transpose()?;
        let t = timestamp
            .map(|i| parse_timestamp(&file, f[i], line, "timestamp"))
            .transpose()?;
        if let Some(li) = list {
            if let Some(first) = seen_users.insert(u.to_string(), line) {
                return Err(DataError::DuplicateId {
                    path: file.path.clone(),
                    line,
                    id: u.to_string(),
                    first_line: first,
                });
            }
            for tok in f[li].split(' ').filter(|t| !t.is_empty()) {
                log.push(u, tok, None, None, None);
            }
        }
        let i = token(&file, f[item], line, "item_id")?;
        log.push(u, i, r, t, None);
        rows += 1;
    }
    if rows == 0 {
        return Err(DataError::Empty {
            path: file.path.clone(),
        });
    }
    Ok(log)
}

/// Reads a `.item` file. The title is the `title`, `movie_title` or `name` column (else the
/// first `token_seq` column); the other feature columns become the description
/// (`name: value; ...`).
pub(crate) fn read_item(path: &Path) -> Result<ItemTable> {
    let file = read_file(path)?;
    let (header, header_line) = parse_header(&file)?;
    let id = require(&header, &file, "item_id", FieldType::Token)?;
    let title = ["title", "movie_title", "name"]
        .iter()
        .find_map(|n| header.position(n))
        .or_else(|| header.types.iter().position(|&t| t == FieldType::TokenSeq));
    let ncol = header.names.len();
    let text = file.text(b'\t', &header.names)?;
    let mut f = Vec::with_capacity(ncol);
    let mut table = ItemTable::default();
    for (line, raw) in TextFile::text_lines(text).skip_while(|&(l, _)| l <= header_line) {
        fields(&file, raw, line, ncol, &mut f)?;
        let item = token(&file, f[id], line, "item_id")?;
        let t = match title {
            Some(i) => f[i].to_string(),
            None => String::new(),
        };
        let mut desc = Vec::new();
        for (i, name) in header.names.iter().enumerate() {
            if i == id || Some(i) == title {
                continue;
            }
            let v = f[i].trim();
            if !v.is_empty() {
                desc.push(format!("{name}: {v}"));
            }
        }
        if let Err(first_line) = table.insert(item, t, desc.join("; "), line) {
            return Err(DataError::DuplicateId {
                path: file.path.clone(),
                line,
                id: item.to_string(),
                first_line,
            });
        }
    }
    table.non_empty(&file.path)
}
