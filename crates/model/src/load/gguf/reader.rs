//! GGUF header, metadata and tensor-info parsing. Every count, length and offset is checked
//! against the file size before anything is allocated.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::{ModelError, Result};
use crate::ggml::GgmlType;

/// A metadata value (every GGUF value type).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl MetaValue {
    /// Integer value of any integer type (and bool).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) if v >= 0 => Some(v as u64),
            MetaValue::I16(v) if v >= 0 => Some(v as u64),
            MetaValue::I32(v) if v >= 0 => Some(v as u64),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            MetaValue::Bool(b) => Some(b as u64),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's description.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub n_bytes: usize,
    pub n_elements: usize,
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    data: DataSource,
}

enum DataSource {
    Mmap(Mmap),
    Bytes(Vec<u8>),
}

impl DataSource {
    fn bytes(&self) -> &[u8] {
        match self {
            DataSource::Mmap(m) => m,
            DataSource::Bytes(b) => b,
        }
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

const MAX_DIMS: u32 = 4;

impl<'a> Cursor<'a> {
    fn err(&self, msg: impl Into<String>) -> ModelError {
        ModelError::Gguf { path: self.path.to_path_buf(), message: format!("{} (at byte {})", msg.into(), self.pos) }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "file truncated while reading {what} ({n} bytes needed, {} left)",
                self.buf.len() - self.pos
            ))),
        }
    }

    fn u8(&mut self, w: &str) -> Result<u8> {
        Ok(self.take(1, w)?[0])
    }
    fn u16(&mut self, w: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, w)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self, w: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, w)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self, w: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, w)?.try_into().expect("8 bytes")))
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// A length-prefixed string; the length is checked against the bytes left.
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        if n > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what}: string length {n} exceeds the {} bytes left in the file (truncated or corrupt)",
                self.remaining()
            )));
        }
        let b = self.take(n as usize, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(format!("{what}: string is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.u8(key)?),
            1 => MetaValue::I8(self.u8(key)? as i8),
            2 => MetaValue::U16(self.u16(key)?),
            3 => MetaValue::I16(self.u16(key)? as i16),
            4 => MetaValue::U32(self.u32(key)?),
            5 => MetaValue::I32(self.u32(key)? as i32),
            6 => MetaValue::F32(f32::from_bits(self.u32(key)?)),
            7 => match self.u8(key)? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.err(format!("metadata {key}: bool byte {b} is neither 0 nor 1"))),
            },
            8 => MetaValue::Str(self.string(key)?),
            9 => {
                if depth > 2 {
                    return Err(self.err(format!("metadata {key}: arrays nested too deeply")));
                }
                let ety = self.u32(key)?;
                let n = self.u64(key)?;
                // every element takes at least one byte: a count beyond the bytes left is a lie
                if n > self.remaining() as u64 {
                    return Err(self
                        .err(format!("metadata {key}: array count {n} exceeds the {} bytes left", self.remaining())));
                }
                let mut v = Vec::with_capacity((n as usize).min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(ety, key, depth + 1)?);
                }
                MetaValue::Array(v)
            }
            10 => MetaValue::U64(self.u64(key)?),
            11 => MetaValue::I64(self.u64(key)? as i64),
            12 => MetaValue::F64(f64::from_bits(self.u64(key)?)),
            t => return Err(self.err(format!("metadata {key}: unknown value type {t} (known: 0..=12)"))),
        })
    }
}

impl GgufFile {
    /// Open and parse a file (data memory-mapped).
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|error| ModelError::Io { path: path.to_path_buf(), error })?;
        // SAFETY: the map is read-only; a concurrent writer could change the bytes but every
        // access below is bounds-checked against the map's length, so it cannot go out of range.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|error| ModelError::Io { path: path.to_path_buf(), error })?;
        Self::parse(path, DataSource::Mmap(mmap))
    }

    /// Parse from bytes in memory (tests, fuzzing).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path, DataSource::Bytes(bytes))
    }

    fn parse(path: &Path, data: DataSource) -> Result<Self> {
        let buf = data.bytes();
        let mut c = Cursor { buf, pos: 0, path };
        let magic = c.take(4, "magic").map_err(|_| ModelError::Gguf {
            path: path.to_path_buf(),
            message: "file is too short to be GGUF (no magic)".into(),
        })?;
        if magic != b"GGUF" {
            return Err(ModelError::Gguf {
                path: path.to_path_buf(),
                message: format!("bad magic {magic:?}, expected \"GGUF\""),
            });
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(c.err(format!("GGUF version {version} is not supported (supported: 2, 3)")));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // a tensor info takes ≥ 24 bytes, a kv ≥ 13: counts beyond the file size are corrupt
        if n_tensors > (c.remaining() / 24) as u64 {
            return Err(c.err(format!("tensor count {n_tensors} is impossible for a file of {} bytes", buf.len())));
        }
        if n_kv > (c.remaining() / 13) as u64 {
            return Err(c.err(format!("metadata count {n_kv} is impossible for a file of {} bytes", buf.len())));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32(&key)?;
            let v = c.value(ty, &key, 0)?;
            metadata.insert(key, v);
        }
        let alignment = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 16 => a as usize,
                _ => return Err(c.err(format!("general.alignment {v:?} must be a power of two ≤ 65536"))),
            },
        };
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let nd = c.u32(&name)?;
            if nd == 0 || nd > MAX_DIMS {
                return Err(c.err(format!("tensor {name}: {nd} dimensions (allowed 1..={MAX_DIMS})")));
            }
            let mut dims = Vec::with_capacity(nd as usize);
            for _ in 0..nd {
                dims.push(c.u64(&name)?);
            }
            let ty = c.u32(&name)?;
            let rel = c.u64(&name)?;
            infos.push((name, dims, ty, rel));
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut tensors = Vec::with_capacity(infos.len());
        for (name, dims, ty, rel) in infos {
            let ggml_type = GgmlType::from_u32(ty).ok_or_else(|| {
                c.err(format!(
                    "tensor {name}: ggml type {ty} is not supported (supported: {})",
                    GgmlType::supported_list()
                ))
            })?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| n > 0 && n <= 1 << 40)
                .ok_or_else(|| c.err(format!("tensor {name}: dimensions {dims:?} overflow or are zero")))?
                as usize;
            let (block_elems, block_bytes) = ggml_type.block();
            if !(dims[0] as usize).is_multiple_of(block_elems) {
                return Err(c.err(format!(
                    "tensor {name}: row length {} is not a multiple of the {ggml_type:?} block size {block_elems}",
                    dims[0]
                )));
            }
            let n_bytes = n_elements / block_elems * block_bytes;
            let offset = data_start
                .checked_add(rel as usize)
                .filter(|_| (rel as usize).is_multiple_of(alignment))
                .ok_or_else(|| c.err(format!("tensor {name}: offset {rel} is not aligned to {alignment}")))?;
            if offset.checked_add(n_bytes).is_none_or(|end| end > buf.len()) {
                return Err(c.err(format!(
                    "tensor {name}: data {offset}..{} lies outside the file ({} bytes)",
                    offset.saturating_add(n_bytes),
                    buf.len()
                )));
            }
            tensors.push(TensorInfo { name, dims, ggml_type, offset, n_bytes, n_elements });
        }
        Ok(Self { path: path.to_path_buf(), version, metadata, tensors, data })
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Drop the resident pages of `offset..offset + len` of a memory-mapped file (whole pages
    /// inside the range only; a no-op for in-memory files).
    pub fn release_range(&self, offset: usize, len: usize) {
        #[cfg(unix)]
        if let DataSource::Mmap(m) = &self.data {
            const PAGE: usize = 4096;
            let start = offset.div_ceil(PAGE) * PAGE;
            let end = (offset + len) / PAGE * PAGE;
            if end > start {
                // SAFETY: the mapping is read-only and file-backed: dropped pages are re-read
                // from the file if touched again, so no data is lost.
                let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
            }
        }
    }

    /// Raw bytes of a tensor.
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.data.bytes()[info.offset..info.offset + info.n_bytes]
    }

    /// Dequantized f32 values of a tensor (GGUF order: innermost dimension fastest).
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, &TensorInfo)> {
        let info = self.tensor(name).ok_or_else(|| ModelError::Gguf {
            path: self.path.clone(),
            message: format!("tensor {name} is missing"),
        })?;
        let v = crate::ggml::dequantize(info.ggml_type, self.tensor_bytes(info), info.n_elements)
            .map_err(|m| ModelError::Gguf { path: self.path.clone(), message: format!("tensor {name}: {m}") })?;
        Ok((v, info))
    }
}
