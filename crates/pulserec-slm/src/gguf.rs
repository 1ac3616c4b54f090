//! GGUF (v2/v3) reader: metadata, tensor infos and tensor bytes, memory-mapped.
//!
//! Every read is bounds-checked: a truncated or corrupt file gives an [`SlmError`] naming the
//! byte offset (or the tensor), never a panic, and counts are checked against the bytes left
//! before anything is allocated, so a hostile header cannot exhaust memory.

use std::collections::BTreeMap;
use std::path::Path;

use pulserec_core::fs::FileBytes;

use crate::error::{Result, SlmError};
use crate::quant::{GgmlType, dequantize_row};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_ARRAY_DEPTH: usize = 4;
const MAX_DIMS: u32 = 8;

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced, lossily).
    String(String),
    /// Array of values of one type.
    Array(Vec<MetaValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl MetaValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// Where a tensor lives in the file and what it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml dimensions, innermost first: a PyTorch `[out, in]` weight is `[in, out]` here.
    pub dims: Vec<usize>,
    /// Element type.
    pub dtype: GgmlType,
    /// Byte offset inside the data section.
    pub offset: usize,
    /// Byte length.
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Row length (innermost dimension) and number of rows.
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.dims.first().copied().unwrap_or(1);
        (self.elements() / cols.max(1), cols)
    }
}

/// A parsed GGUF file whose tensor data stays in the (memory-mapped) file.
pub struct GgufFile {
    source: String,
    version: u32,
    metadata: BTreeMap<String, MetaValue>,
    tensors: Vec<TensorInfo>,
    by_name: BTreeMap<String, usize>,
    data_offset: usize,
    storage: FileBytes,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("source", &self.source)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| SlmError::Io {
            path: path.to_path_buf(),
            source,
        };
        let map = FileBytes::map(path).map_err(io)?;
        Self::parse(map, path.display().to_string())
    }

    /// Parses a GGUF image held in memory (`source` names it in errors).
    pub fn from_bytes(bytes: Vec<u8>, source: impl Into<String>) -> Result<Self> {
        Self::parse(FileBytes::Owned(bytes), source.into())
    }

    fn parse(storage: FileBytes, source: String) -> Result<Self> {
        let mut r = Reader {
            buf: &storage,
            pos: 0,
            file: &source,
        };
        let magic: [u8; 4] = r.array("magic")?;
        if &magic != MAGIC {
            return Err(r.corrupt(0, format!("bad magic {magic:?}, expected \"GGUF\"")));
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(SlmError::UnsupportedVersion {
                file: source.clone(),
                version,
            });
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;
        // Every key/value takes at least 12 bytes and every tensor info at least 24.
        r.check_count(n_kv, 12, "metadata count")?;
        r.check_count(n_tensors, 24, "tensor count")?;

        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let at = r.pos;
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata value type")?;
            let value = r.value(ty, 0, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.corrupt(at, format!("duplicate metadata key `{key}`")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => return Err(r.corrupt(0, format!("bad general.alignment {v:?}"))),
            },
        };

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = r.pos;
            let name = r.string("tensor name")?;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(r.corrupt(at, format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = r.u64("tensor dimension")?;
                dims.push(usize::try_from(d).map_err(|_| {
                    r.corrupt(at, format!("tensor `{name}` dimension {d} too large"))
                })?);
            }
            let code = r.u32("tensor type")?;
            let offset = r.u64("tensor offset")?;
            raw.push((at, name, dims, code, offset));
        }
        let data_offset = (r.pos as u64).div_ceil(alignment) * alignment;
        let data_len = (storage.len() as u64).saturating_sub(data_offset);

        let mut tensors = Vec::with_capacity(raw.len());
        let mut by_name = BTreeMap::new();
        for (at, name, dims, code, offset) in raw {
            let Some(dtype) = GgmlType::from_code(code) else {
                return Err(SlmError::UnsupportedDType {
                    tensor: name,
                    dtype: format!("ggml type code {code}"),
                });
            };
            let bad = |reason: String| SlmError::BadTensor {
                tensor: name.clone(),
                reason: format!("{reason} (tensor info at offset {at} of {source})"),
            };
            let mut elements: usize = 1;
            for &d in &dims {
                elements = elements
                    .checked_mul(d)
                    .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
            }
            let row = dims[0];
            let len = dtype
                .row_bytes(row)
                .and_then(|rb| rb.checked_mul(elements / row.max(1)))
                .ok_or_else(|| {
                    bad(format!(
                        "row length {row} is not a whole number of {dtype} blocks"
                    ))
                })?;
            if offset % alignment != 0 {
                return Err(bad(format!(
                    "data offset {offset} not aligned to {alignment}"
                )));
            }
            let end = offset.checked_add(len as u64);
            if end.is_none_or(|e| e > data_len) {
                return Err(SlmError::Truncated {
                    file: source.clone(),
                    what: format!("data of tensor `{name}`"),
                    offset: data_offset + offset,
                    needed: len as u64,
                    len: storage.len() as u64,
                });
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad("duplicate tensor name".to_string()));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                dtype,
                offset: offset as usize,
                len,
            });
        }
        Ok(Self {
            source,
            version,
            metadata,
            tensors,
            by_name,
            data_offset: data_offset as usize,
            storage,
        })
    }

    /// Where the file came from (its path, or the name given to [`GgufFile::from_bytes`]).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata, by key.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.metadata
    }

    /// One metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn meta_err(&self, key: &str, reason: &str) -> SlmError {
        SlmError::Metadata {
            file: self.source.clone(),
            key: key.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A required string value.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        v.as_str().ok_or_else(|| self.meta_err(key, "not a string"))
    }

    /// A required non-negative integer value.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        v.as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.meta_err(key, "not a non-negative integer"))
    }

    /// A required numeric value.
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        v.as_f64().ok_or_else(|| self.meta_err(key, "not a number"))
    }

    /// A required array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.get(key).ok_or_else(|| self.meta_err(key, "missing"))?;
        let a = v
            .as_array()
            .ok_or_else(|| self.meta_err(key, "not an array"))?;
        a.iter()
            .map(|x| {
                x.as_str()
                    .ok_or_else(|| self.meta_err(key, "array element not a string"))
            })
            .collect()
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// A tensor's info, or [`SlmError::MissingTensor`].
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.tensor(name).ok_or_else(|| SlmError::MissingTensor {
            file: self.source.clone(),
            tensor: name.to_string(),
        })
    }

    /// The raw bytes of a tensor (ranges were validated at parse time).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = self.data_offset + info.offset;
        &self.storage[start..start + info.len]
    }

    /// Dequantises a whole tensor to f32, innermost dimension contiguous.
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.require(name)?;
        let mut out = vec![0.0f32; info.elements()];
        dequantize_row(info.dtype, self.tensor_bytes(info), &mut out, name)?;
        Ok(out)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    file: &'a str,
}

impl Reader<'_> {
    fn corrupt(&self, offset: usize, reason: String) -> SlmError {
        SlmError::Corrupt {
            file: self.file.to_string(),
            offset: offset as u64,
            reason,
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&[u8]> {
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(SlmError::Truncated {
                file: self.file.to_string(),
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                len: self.buf.len() as u64,
            });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    /// Refuses counts that could not fit in the remaining bytes.
    fn check_count(&self, count: u64, min_item: u64, what: &str) -> Result<()> {
        let left = (self.buf.len() - self.pos) as u64;
        if count.saturating_mul(min_item) > left {
            return Err(self.corrupt(
                self.pos,
                format!("{what} {count} cannot fit in the {left} bytes left"),
            ));
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let s = self.take(n, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<MetaValue> {
        let what = format!("value of `{key}`");
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(&what)?[0]),
            1 => MetaValue::I8(self.array::<1>(&what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => MetaValue::Bool(self.array::<1>(&what)?[0] != 0),
            8 => MetaValue::String(self.string(&what)?),
            9 => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.corrupt(at, format!("arrays nested too deep in `{key}`")));
                }
                let elem = self.u32(&what)?;
                let n = self.u64(&what)?;
                self.check_count(n, 1, &format!("array length of `{key}`"))?;
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(elem, depth + 1, key)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(&what)?)),
            other => {
                return Err(self.corrupt(
                    self.pos.saturating_sub(4),
                    format!("unknown metadata value type {other} for `{key}`"),
                ));
            }
        })
    }
}
