//! MovieLens raw formats: ML-100K (`u.data` + `u.item`), ML-1M (`ratings.dat` + `movies.dat`),
//! both ISO-8859-1, and the `ml-latest(-small)` CSVs (`ratings.csv` + `movies.csv`, UTF-8).

use std::path::Path;

use crate::error::{DataError, Result};
use crate::log::{InteractionLog, ItemTable};
use crate::reader::{TextFile, latin1, parse_rating, parse_timestamp, read_file};

const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Splits on a multi-byte separator (`::`) or a single byte.
fn split_sep<'a>(raw: &'a [u8], sep: &'a [u8]) -> Vec<&'a [u8]> {
    if sep.len() == 1 {
        return raw.split(|&b| b == sep[0]).collect();
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= raw.len() {
        if &raw[i..i + sep.len()] == sep {
            out.push(&raw[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&raw[start..]);
    out
}

/// Reads `user SEP item SEP rating SEP timestamp` lines (u.data with TAB, ratings.dat with `::`).
fn read_ratings(file: &TextFile, sep: &[u8], skip_header: bool) -> Result<InteractionLog> {
    let mut log = InteractionLog::new(true, true, false);
    for (line, raw) in file.lines().skip(usize::from(skip_header)) {
        let f = split_sep(raw, sep);
        if f.len() != 4 {
            return Err(file.line_error(
                line,
                format!(
                    "expected 4 fields (user, item, rating, timestamp), found {}",
                    f.len()
                ),
            ));
        }
        let user = file.utf8(f[0], line, "user")?.trim();
        let item = file.utf8(f[1], line, "item")?.trim();
        if user.is_empty() || item.is_empty() {
            return Err(file.field_error(
                line,
                if user.is_empty() { "user" } else { "item" },
                "empty id",
            ));
        }
        let rating = parse_rating(file, file.utf8(f[2], line, "rating")?, line, "rating")?;
        let ts = parse_timestamp(file, file.utf8(f[3], line, "timestamp")?, line, "timestamp")?;
        log.push(user, item, Some(rating), Some(ts), None);
    }
    if log.len() == 0 {
        return Err(DataError::Empty {
            path: file.path.clone(),
        });
    }
    Ok(log)
}

fn insert(
    table: &mut ItemTable,
    file: &TextFile,
    id: &str,
    title: String,
    desc: String,
    line: usize,
) -> Result<()> {
    if id.is_empty() {
        return Err(file.field_error(line, "movie id", "empty id"));
    }
    table
        .insert(id, title, desc, line)
        .map_err(|first_line| DataError::DuplicateId {
            path: file.path.clone(),
            line,
            id: id.to_string(),
            first_line,
        })
}

/// ML-100K `u.data` (TAB-separated).
pub(crate) fn read_100k_ratings(path: &Path) -> Result<InteractionLog> {
    read_ratings(&read_file(path)?, b"\t", false)
}

/// ML-100K `u.item`: `id|title|release date|video release|url|19 genre flags`, ISO-8859-1.
pub(crate) fn read_100k_items(path: &Path) -> Result<ItemTable> {
    let file = read_file(path)?;
    let mut table = ItemTable::default();
    for (line, raw) in file.lines() {
        let f: Vec<&[u8]> = raw.split(|&b| b == b'|').collect();
        if f.len() != 5 + ML100K_GENRES.len() {
            return Err(file.line_error(
                line,
                format!("expected 24 `|`-separated fields, found {}", f.len()),
            ));
        }
        let genres: Vec<&str> = ML100K_GENRES
            .iter()
            .zip(&f[5..])
            .filter(|(_, flag)| flag.trim_ascii() == b"1")
            .map(|(g, _)| *g)
            .collect();
        let mut desc = Vec::new();
        let date = latin1(f[2]);
        if !date.trim().is_empty() {
            desc.push(format!("release date: {}", date.trim()));
        }
        if !genres.is_empty() {
            desc.push(format!("genres: {}", genres.join(", ")));
        }
        insert(
            &mut table,
            &file,
            latin1(f[0]).trim(),
            latin1(f[1]),
            desc.join("; "),
            line,
        )?;
    }
    table.non_empty(&file.path)
}

/// ML-1M `ratings.dat` (`::`-separated).
pub(crate) fn read_1m_ratings(path: &Path) -> Result<InteractionLog> {
    read_ratings(&read_file(path)?, b"::", false)
}

/// ML-1M `movies.dat`: `id::title::Genre|Genre`, ISO-8859-1.
pub(crate) fn read_1m_movies(path: &Path) -> Result<ItemTable> {
    let file = read_file(path)?;
    let mut table = ItemTable::default();
    for (line, raw) in file.lines() {
        let f = split_sep(raw, b"::");
        if f.len() != 3 {
            return Err(file.line_error(
                line,
                format!("expected 3 `::`-separated fields, found {}", f.len()),
            ));
        }
        let genres = latin1(f[2]).replace('|', ", ");
        insert(
            &mut table,
            &file,
            latin1(f[0]).trim(),
            latin1(f[1]),
            format!("genres: {genres}"),
            line,
        )?;
    }
    table.non_empty(&file.path)
}

/// Splits one CSV record (RFC 4180 quoting, `""` escapes a quote inside a quoted field).
pub(crate) fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

/// `ratings.csv` of ml-latest(-small): header `userId,movieId,rating,timestamp`.
pub(crate) fn read_csv_ratings(path: &Path) -> Result<InteractionLog> {
    let file = read_file(path)?;
    let (hline, header) = file.lines().next().ok_or_else(|| DataError::Empty {
        path: file.path.clone(),
    })?;
    let header = file.utf8(header, hline, "header")?;
    if !header.trim().starts_with("userId,movieId,rating,timestamp") {
        return Err(DataError::Header {
            path: file.path.clone(),
            line: hline,
            message: format!("expected `userId,movieId,rating,timestamp`, found `{header}`"),
        });
    }
    read_ratings(&file, b",", true)
}

/// `movies.csv` of ml-latest(-small): `movieId,title,genres` with quoted titles.
pub(crate) fn read_csv_movies(path: &Path) -> Result<ItemTable> {
    let file = read_file(path)?;
    let mut table = ItemTable::default();
    for (line, raw) in file.lines().skip(1) {
        let text = file.utf8(raw, line, "record")?;
        let f =
            split_csv(text).ok_or_else(|| file.line_error(line, "unterminated quoted field"))?;
        if f.len() != 3 {
            return Err(file.line_error(
                line,
                format!(
                    "expected 3 fields (movieId, title, genres), found {}",
                    f.len()
                ),
            ));
        }
        let genres = f[2].replace('|', ", ");
        insert(
            &mut table,
            &file,
            f[0].trim(),
            f[1].clone(),
            format!("genres: {genres}"),
            line,
        )?;
    }
    table.non_empty(&file.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_separators() {
        assert_eq!(
            split_csv(r#"1,"Toy Story, The (1995)",Comedy"#).unwrap(),
            ["1", "Toy Story, The (1995)", "Comedy"]
        );
        assert_eq!(
            split_csv(r#"2,"Say ""Hi""",Drama"#).unwrap(),
            ["2", "Say \"Hi\"", "Drama"]
        );
        assert!(split_csv(r#"3,"open"#).is_none());
        assert_eq!(split_sep(b"1::2::3", b"::"), vec![&b"1"[..], b"2", b"3"]);
    }
}
