//! One Parquet file as Arrow record batches: atomic writes, checked column access.
//!
//! Shared by [`crate::PreparedDataset`] and other crates' stores (the rationale store of
//! `pulserec-tot`), so every Parquet file of a run is written and read the same way.

use std::fs::File;
use std::path::Path;

use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{DataError, Result};

/// A [`DataError::Storage`] for `path`.
pub fn storage(path: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Storage {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `batch` to `path` (Snappy-compressed) atomically
/// ([`pulserec_core::fs::write_atomic`]): a crash or `kill -9` leaves either the complete file or
/// none (plus, at worst, a stray hidden `.tmp*` file, which readers of `*.parquet` ignore).
pub fn write_batch(path: &Path, batch: RecordBatch) -> Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut bytes = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props))
        .map_err(|e| storage(path, e))?;
    writer.write(&batch).map_err(|e| storage(path, e))?;
    writer.close().map_err(|e| storage(path, e))?;
    pulserec_core::fs::write_atomic(path, &bytes).map_err(|e| DataError::io(path, e))
}

/// Every record batch of the Parquet file at `path`.
pub fn read_batches(path: &Path) -> Result<Vec<RecordBatch>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| storage(path, e))?
        .build()
        .map_err(|e| storage(path, e))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| storage(path, e))
}

/// A record batch from named columns (all of one length).
pub fn batch(path: &Path, columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch> {
    RecordBatch::try_from_iter(columns).map_err(|e| storage(path, e))
}

/// The column `name` of `b`, or an error naming `path` and the column.
pub fn column<'a>(path: &Path, b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| storage(path, format!("missing column `{name}`")))
}

/// `a` as the concrete array type `T`, or an error naming `path`, the column and its type.
pub fn typed<'a, T: 'static>(path: &Path, a: &'a ArrayRef, name: &str) -> Result<&'a T> {
    a.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| storage(path, format!("column `{name}` has type {}", a.data_type())))
}

/// The column `name` of `b` as the concrete array type `T` ([`column`] then [`typed`]).
pub fn typed_column<'a, T: 'static>(path: &Path, b: &'a RecordBatch, name: &str) -> Result<&'a T> {
    typed(path, column(path, b, name)?, name)
}
