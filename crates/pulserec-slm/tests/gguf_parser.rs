//! The GGUF reader on hand-built files: values, tensors, and every way a file can be bad.

use half::f16;
use proptest::prelude::*;
use pulserec_slm::{GgmlType, GgufFile, MetaValue, SlmError};

/// Writes a minimal GGUF v3 image: metadata, tensor infos, aligned data.
struct Builder {
    kv: Vec<u8>,
    n_kv: u64,
    tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    version: u32,
}

fn gstr(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

impl Builder {
    fn new() -> Self {
        Self {
            kv: Vec::new(),
            n_kv: 0,
            tensors: Vec::new(),
            version: 3,
        }
    }

    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        gstr(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }

    fn tensor(mut self, name: &str, dims: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.into(), dims.to_vec(), ty, data));
        self
    }

    fn build(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        let mut offset = 0u64;
        let mut data = Vec::new();
        for (name, dims, ty, bytes) in &self.tensors {
            gstr(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            data.extend(bytes);
            while !data.len().is_multiple_of(32) {
                data.push(0);
            }
            offset = data.len() as u64;
        }
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
        out.extend(data);
        out
    }
}

fn sample() -> Vec<u8> {
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend(2u64.to_le_bytes());
    gstr(&mut arr, "a b");
    gstr(&mut arr, "c d");
    let mut name = Vec::new();
    gstr(&mut name, "tiny");
    let mut q8 = f16::from_f32(0.5).to_le_bytes().to_vec();
    q8.extend((0..32).map(|i| i as u8));
    Builder::new()
        .kv("general.architecture", 8, &name)
        .kv("tiny.block_count", 4, &7u32.to_le_bytes())
        .kv("tiny.eps", 6, &1e-5f32.to_le_bytes())
        .kv("tokenizer.ggml.merges", 9, &arr)
        .kv("flag", 7, &[1])
        .tensor(
            "norm",
            &[4],
            0,
            [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
        .tensor("w", &[32, 1], 8, q8)
        .tensor(
            "h",
            &[2],
            1,
            [f16::from_f32(1.5), f16::from_f32(-2.0)]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        )
        .build()
}

#[test]
fn reads_metadata_and_tensors() {
    let g = GgufFile::from_bytes(sample(), "sample").unwrap();
    assert_eq!(g.version(), 3);
    assert_eq!(g.str("general.architecture").unwrap(), "tiny");
    assert_eq!(g.usize("tiny.block_count").unwrap(), 7);
    assert!((g.f64("tiny.eps").unwrap() - 1e-5).abs() < 1e-9);
    assert_eq!(
        g.str_array("tokenizer.ggml.merges").unwrap(),
        ["a b", "c d"]
    );
    assert_eq!(g.get("flag"), Some(&MetaValue::Bool(true)));
    assert_eq!(g.tensors().len(), 3);
    let w = g.tensor("w").unwrap();
    assert_eq!((w.dtype, w.dims.clone()), (GgmlType::Q8_0, vec![32, 1]));
    assert_eq!(g.dequantize("norm").unwrap(), [1.0, 2.0, 3.0, 4.0]);
    assert_eq!(g.dequantize("h").unwrap(), [1.5, -2.0]);
    let wv = g.dequantize("w").unwrap();
    assert_eq!(wv[3], 1.5);
    assert!(matches!(
        g.dequantize("nope"),
        Err(SlmError::MissingTensor { .. })
    ));
    assert!(matches!(
        g.usize("general.architecture"),
        Err(SlmError::Metadata { .. })
    ));
}

#[test]
fn v2_is_read_and_v1_refused() {
    let mut b = sample();
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(GgufFile::from_bytes(b.clone(), "v2").unwrap().version(), 2);
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(b, "v1"),
        Err(SlmError::UnsupportedVersion { version: 1, .. })
    ));
}

#[test]
fn bad_magic_and_truncation_name_offsets() {
    let mut b = sample();
    b[0] = b'X';
    let e = GgufFile::from_bytes(b, "m").unwrap_err();
    assert!(e.to_string().contains("offset 0"), "{e}");
    let b = sample();
    // Cut in the header: the counts no longer fit (refused before reading on).
    let e = GgufFile::from_bytes(b[..30].to_vec(), "cut").unwrap_err();
    assert!(matches!(e, SlmError::Corrupt { offset: 24, .. }), "{e}");
    // Cut inside a metadata string.
    let e = GgufFile::from_bytes(b[..120].to_vec(), "cut").unwrap_err();
    assert!(
        matches!(e, SlmError::Truncated { .. } | SlmError::Corrupt { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("offset"), "{e}");
    // Cut inside the tensor data: the error names the tensor.
    let e = GgufFile::from_bytes(b[..b.len() - 40].to_vec(), "cut").unwrap_err();
    assert!(
        e.to_string().contains("`w`") || e.to_string().contains("`h`"),
        "{e}"
    );
}

#[test]
fn absurd_counts_are_refused_without_allocating() {
    let mut b = sample();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        GgufFile::from_bytes(b, "n").unwrap_err(),
        SlmError::Corrupt { .. }
    ));
    let arr = {
        let mut a = 8u32.to_le_bytes().to_vec();
        a.extend((1u64 << 60).to_le_bytes());
        a
    };
    let b = Builder::new().kv("x", 9, &arr).build();
    assert!(matches!(
        GgufFile::from_bytes(b, "a").unwrap_err(),
        SlmError::Corrupt { .. }
    ));
}

#[test]
fn bad_tensor_infos_are_errors() {
    let odd = Builder::new().tensor("w", &[31, 1], 8, vec![0; 34]).build();
    let e = GgufFile::from_bytes(odd, "o").unwrap_err();
    assert!(e.to_string().contains("`w`"), "{e}");
    let unknown = Builder::new().tensor("u", &[4], 99, vec![0; 16]).build();
    assert!(matches!(
        GgufFile::from_bytes(unknown, "u").unwrap_err(),
        SlmError::UnsupportedDType { .. }
    ));
    let huge = Builder::new()
        .tensor("big", &[u64::MAX, 2], 0, vec![0; 4])
        .build();
    assert!(GgufFile::from_bytes(huge, "h").is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any prefix of a valid file parses or fails cleanly.
    #[test]
    fn truncation_never_panics(cut in 0usize..400) {
        let b = sample();
        let cut = cut.min(b.len());
        let _ = GgufFile::from_bytes(b[..cut].to_vec(), "cut");
    }

    /// Random byte corruption parses or fails cleanly; if it parses, every tensor dequantises
    /// or fails cleanly too.
    #[test]
    fn corruption_never_panics(edits in proptest::collection::vec((0usize..400, any::<u8>()), 1..8)) {
        let mut b = sample();
        for (at, v) in edits {
            let n = b.len();
            b[at % n] = v;
        }
        if let Ok(g) = GgufFile::from_bytes(b, "fuzz") {
            for t in g.tensors().to_vec() {
                let _ = g.dequantize(&t.name);
            }
        }
    }

    /// Arbitrary bytes after a valid magic and version.
    #[test]
    fn random_headers_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(tail);
        let _ = GgufFile::from_bytes(b, "rand");
    }
}
