//! Reading whole files into memory (gzip transparently) and walking their lines.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{DataError, Result};

/// A file's bytes, decompressed when it was gzipped.
pub(crate) struct TextFile {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
}

/// Reads `path`, gunzipping when it starts with the gzip magic bytes (whatever its extension).
pub(crate) fn read_file(path: &Path) -> Result<TextFile> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)
        .map_err(|e| DataError::io(path, e))?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|source| DataError::Gzip {
                path: path.to_path_buf(),
                source,
            })?;
        out
    } else {
        raw
    };
    Ok(TextFile {
        path: path.to_path_buf(),
        bytes,
    })
}

impl TextFile {
    /// Non-empty lines with their 1-based numbers, `\r\n` and `\n` endings stripped.
    pub fn lines(&self) -> impl Iterator<Item = (usize, &[u8])> {
        self.bytes
            .split(|&b| b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| !l.iter().all(|b| b.is_ascii_whitespace()))
    }

    /// The whole file as UTF-8 (validated once, which is much cheaper than per field). On
    /// invalid bytes the error names the line and, counting `sep` before the bad byte, the column
    /// among `columns` (or `record` when the format has no columns).
    pub fn text(&self, sep: u8, columns: &[String]) -> Result<&str> {
        std::str::from_utf8(&self.bytes).map_err(|e| {
            let at = e.valid_up_to();
            let line_start = self.bytes[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let line = 1 + self.bytes[..at].iter().filter(|&&b| b == b'\n').count();
            let col = self.bytes[line_start..at]
                .iter()
                .filter(|&&b| b == sep)
                .count();
            let field = columns
                .get(col)
                .cloned()
                .unwrap_or_else(|| "record".to_string());
            DataError::Utf8 {
                path: self.path.clone(),
                line,
                field,
            }
        })
    }

    /// Non-empty lines of validated text with their 1-based numbers.
    pub fn text_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
        text.split('\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)))
            .filter(|(_, l)| !l.trim().is_empty())
    }

    /// A field as UTF-8, or an error naming file, line and field.
    pub fn utf8<'a>(&self, bytes: &'a [u8], line: usize, field: &str) -> Result<&'a str> {
        std::str::from_utf8(bytes).map_err(|_| DataError::Utf8 {
            path: self.path.clone(),
            line,
            field: field.to_string(),
        })
    }

    /// An error for a field of this file.
    pub fn field_error(&self, line: usize, field: &str, message: impl Into<String>) -> DataError {
        DataError::Field {
            path: self.path.clone(),
            line,
            field: field.to_string(),
            message: message.into(),
        }
    }

    /// An error for a whole line of this file.
    pub fn line_error(&self, line: usize, message: impl Into<String>) -> DataError {
        DataError::Line {
            path: self.path.clone(),
            line,
            message: message.into(),
        }
    }
}

/// Decodes ISO-8859-1 (Latin-1) bytes: every byte is the code point of the same value.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Parses a rating: finite and non-negative.
pub(crate) fn parse_rating(file: &TextFile, s: &str, line: usize, field: &str) -> Result<f32> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| file.field_error(line, field, format!("`{s}` is not a number")))?;
    if !v.is_finite() || v < 0.0 {
        return Err(file.field_error(
            line,
            field,
            format!("rating must be finite and non-negative, got `{s}`"),
        ));
    }
    Ok(v)
}

/// Parses a timestamp in seconds (integer or float, as RecBole writes them).
pub(crate) fn parse_timestamp(file: &TextFile, s: &str, line: usize, field: &str) -> Result<i64> {
    let t = s.trim();
    if let Ok(v) = t.parse::<i64>() {
        return Ok(v);
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v as i64),
        _ => Err(file.field_error(line, field, format!("`{s}` is not a timestamp"))),
    }
}
