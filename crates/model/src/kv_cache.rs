//! Preallocated key/value cache, written in place; overflow is an error, never a wrap-around.
//! Rows are f32, f16 or q8_0 ([`CacheType`], llama.cpp's `-ctk`/`-ctv`).
use burn::tensor::{backend::Backend, s, DType, Tensor};

use crate::error::{ModelError, Result};
use crate::families::ModelConfig;

/// How the cache stores a key or value row of `head_dim` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheType {
    /// f32 values: exact.
    #[default]
    F32,
    /// f16 values (llama.cpp's default): half the bytes, rounded to 11 significant bits.
    F16,
    /// llama.cpp's q8_0 blocks of 32 values (an f16 scale `max|x|/127`, 32 signed bytes): 34 bytes
    /// per 32 values. Held in an f16 tensor of `17·head_dim/32` elements per row, so every
    /// position-wise tensor op (reorder, shift, grow, prefix copies) moves whole rows unchanged.
    Q8_0,
}

impl CacheType {
    /// Elements of the cache tensor's last dimension for rows of `head_dim` values.
    pub fn row_elems(self, head_dim: usize) -> usize {
        match self {
            Self::F32 | Self::F16 => head_dim,
            Self::Q8_0 => head_dim / 32 * 17,
        }
    }

    /// The cache tensor's element type.
    pub fn dtype(self) -> DType {
        match self {
            Self::F32 => DType::F32,
            Self::F16 | Self::Q8_0 => DType::F16,
        }
    }

    /// Error unless rows of `head_dim` values can be stored this way.
    pub fn check(self, head_dim: usize) -> Result<()> {
        if self == Self::Q8_0 && !head_dim.is_multiple_of(32) {
            return Err(ModelError::Input(format!(
                "--cache-type q8_0 stores blocks of 32 values; this model's head dim {head_dim} is not a multiple of 32 (use f16 or f32)"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for CacheType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Q8_0 => "q8_0",
        })
    }
}

impl std::str::FromStr for CacheType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            o => Err(format!("--cache-type {o:?} is unknown (allowed: f32, f16, q8_0)")),
        }
    }
}

/// Keys and values of one layer.
#[derive(Debug, Clone)]
pub struct LayerKv<B: Backend> {
    pub(crate) k: Tensor<B, 4>, // [batch, kv_heads, max_seq, row_elems]
    pub(crate) v: Tensor<B, 4>, // [batch, kv_heads, max_seq, row_elems]
    pub(crate) ty: CacheType,
}

impl<B: Backend> LayerKv<B> {
    /// Write `k`/`v` at positions `start..start+seq` and return the keys/values of `0..start+seq`.
    ///
    /// # Shapes
    /// - k, v: `[batch, kv_heads, seq, head_dim]`
    /// - output: `[batch, kv_heads, start + seq, head_dim]` each
    ///
    /// The default bodies' path: f32 rows only (f16 and q8_0 rows are written and read by the
    /// backends whose [`DecodeOps::cache_types`](crate::DecodeOps::cache_types) list them).
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, start: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        assert_eq!(self.ty, CacheType::F32, "a {} KV cache reached the f32 default body", self.ty);
        let end = start + k.dims()[2];
        self.k.inplace(|c| c.slice_assign(s![.., .., start..end, ..], k));
        self.v.inplace(|c| c.slice_assign(s![.., .., start..end, ..], v));
        (self.k.clone().slice(s![.., .., 0..end, ..]), self.v.clone().slice(s![.., .., 0..end, ..]))
    }
}

/// One cache per generation: every layer's keys and values plus the filled length.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<LayerKv<B>>,
    len: usize,
    capacity: usize,
    batch: usize,
    ty: CacheType,
}

/// Zeros of `shape` with `like`'s element type and device.
fn zeros_as<B: Backend>(like: &Tensor<B, 4>, shape: [usize; 4]) -> Tensor<B, 4> {
    Tensor::zeros(shape, (&like.device(), like.dtype()))
}

impl<B: Backend> KvCache<B> {
    /// Allocate a cache for `batch` sequences of up to `capacity` positions.
    /// `capacity` may not exceed the model's `max_position_embeddings`.
    pub fn new(config: &ModelConfig, batch: usize, capacity: usize, device: &B::Device) -> Result<Self> {
        Self::with_type(config, batch, capacity, device, CacheType::F32)
    }

    /// [`Self::new`] with rows stored as `ty`.
    pub fn with_type(
        config: &ModelConfig,
        batch: usize,
        capacity: usize,
        device: &B::Device,
        ty: CacheType,
    ) -> Result<Self> {
        ty.check(config.head_dim)?;
        if capacity == 0 || capacity > config.max_position_embeddings {
            return Err(ModelError::Input(format!(
                "KV cache size {capacity} must be between 1 and the model's context length {}",
                config.max_position_embeddings
            )));
        }
        if batch == 0 {
            return Err(ModelError::Input("KV cache batch size must be at least 1".into()));
        }
        let shape = [batch, config.num_kv_heads, capacity, ty.row_elems(config.head_dim)];
        let z = || Tensor::zeros(shape, (device, ty.dtype()));
        let layers = (0..config.num_layers).map(|_| LayerKv { k: z(), v: z(), ty }).collect();
        Ok(Self { layers, len: 0, capacity, batch, ty })
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Maximum number of positions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Batch size the cache was allocated for.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// How rows are stored.
    pub fn cache_type(&self) -> CacheType {
        self.ty
    }

    /// Bytes held by keys and values.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| 2 * l.k.shape().num_elements() * l.k.dtype().size()).sum()
    }

    /// Forget every cached position (the buffers are kept and overwritten).
    pub fn reset(&mut self) {
        self.len = 0;
    }

    /// Roll back to the first `len` positions (speculative decoding drops rejected tokens).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(ModelError::Input(format!("cannot truncate a cache of {} positions to {len}", self.len)));
        }
        self.len = len;
        Ok(())
    }

    /// Reorder (and possibly repeat) the batch rows: row `i` becomes old row `rows[i]` (beam
    /// search). The batch size may change.
    pub fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch) {
            return Err(ModelError::Input(format!("cache row {bad} does not exist (batch {})", self.batch)));
        }
        if rows.is_empty() {
            return Err(ModelError::Input("cache reorder needs at least one row".into()));
        }
        let identity = rows.len() == self.batch && rows.iter().enumerate().all(|(i, &r)| i == r);
        if identity {
            return Ok(());
        }
        for l in &mut self.layers {
            let device = l.k.device();
            let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let idx =
                Tensor::<B, 1, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(idx, [rows.len()]), &device);
            l.k = l.k.clone().select(0, idx.clone());
            l.v = l.v.clone().select(0, idx);
        }
        self.batch = rows.len();
        Ok(())
    }

    /// Error unless `adding` more positions fit.
    pub fn check_room(&self, adding: usize) -> Result<()> {
        if self.len + adding > self.capacity {
            return Err(ModelError::CacheOverflow { have: self.len, adding, capacity: self.capacity });
        }
        Ok(())
    }

    /// Every layer's keys and values at positions `from..from + n` (all rows), copied: a slice
    /// is a view on some backends (flex), which would keep the whole cache's buffer alive.
    pub(crate) fn positions(&self, from: usize, n: usize) -> Vec<(Tensor<B, 4>, Tensor<B, 4>)> {
        let copy = |t: &Tensor<B, 4>| {
            let part = t.clone().slice(s![.., .., from..from + n, ..]);
            zeros_as(&part, part.dims()).slice_assign(s![.., .., 0..n, ..], part)
        };
        self.layers.iter().map(|l| (copy(&l.k), copy(&l.v))).collect()
    }

    /// Write every layer's keys and values (as [`Self::positions`] gives them) at position `at`;
    /// the filled length is not changed.
    pub(crate) fn write_positions(&mut self, at: usize, kv: &[(Tensor<B, 4>, Tensor<B, 4>)]) -> Result<()> {
        let n = kv.first().map_or(0, |(k, _)| k.dims()[2]);
        if at + n > self.capacity || kv.len() != self.layers.len() {
            return Err(ModelError::Input(format!(
                "cannot write {n} positions at {at} into a cache of {}",
                self.capacity
            )));
        }
        for (l, (k, v)) in self.layers.iter_mut().zip(kv) {
            l.k.inplace(|t| t.slice_assign(s![.., .., at..at + n, ..], k.clone()));
            l.v.inplace(|t| t.slice_assign(s![.., .., at..at + n, ..], v.clone()));
        }
        Ok(())
    }

    /// Say that the first `n` positions are filled (written with [`Self::write_positions`]).
    pub(crate) fn set_len(&mut self, n: usize) -> Result<()> {
        self.check_room(n.saturating_sub(self.len))?;
        self.len = n;
        Ok(())
    }

    /// The keys/values of layer `i`.
    pub fn layer_mut(&mut self, i: usize) -> &mut LayerKv<B> {
        &mut self.layers[i]
    }

    /// A cache of `capacity` positions holding `src`'s first `n` positions (all its rows).
    pub fn from_prefix(config: &ModelConfig, src: &KvCache<B>, n: usize, capacity: usize) -> Result<Self> {
        if n > src.len {
            return Err(ModelError::Input(format!("the source cache holds {} positions, not {n}", src.len)));
        }
        let device = src.layers[0].k.device();
        let mut c = Self::with_type(config, src.batch, capacity, &device, src.ty)?;
        c.check_room(n)?;
        for (l, s) in c.layers.iter_mut().zip(&src.layers) {
            l.k.inplace(|t| t.slice_assign(s![.., .., 0..n, ..], s.k.clone().slice(s![.., .., 0..n, ..])));
            l.v.inplace(|t| t.slice_assign(s![.., .., 0..n, ..], s.v.clone().slice(s![.., .., 0..n, ..])));
        }
        c.len = n;
        Ok(c)
    }

    /// Grow to `capacity` positions (the held positions are kept; continuous batching sizes the
    /// shared cache to what its rows need).
    pub fn grow(&mut self, capacity: usize) -> Result<()> {
        if capacity <= self.capacity {
            return Ok(());
        }
        let n = self.len;
        for l in &mut self.layers {
            for t in [&mut l.k, &mut l.v] {
                let [b, h, _, d] = t.dims();
                let part = t.clone().slice(s![.., .., 0..n, ..]);
                *t = zeros_as(t, [b, h, capacity, d]).slice_assign(s![.., .., 0..n, ..], part);
            }
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Move positions `from..len` of every row to start at `to` (continuous batching: make room
    /// at the end, or right-align rows so a longer prompt fits); the cache then holds
    /// `to + len - from` positions. What lies outside the moved range is zero.
    pub fn shift(&mut self, from: usize, to: usize) -> Result<()> {
        if from > self.len {
            return Err(ModelError::Input(format!("cannot shift from {from}: the cache holds {}", self.len)));
        }
        let n = self.len - from;
        if to + n > self.capacity {
            return Err(ModelError::CacheOverflow { have: to, adding: n, capacity: self.capacity });
        }
        if from != to {
            for l in &mut self.layers {
                for t in [&mut l.k, &mut l.v] {
                    let part = t.clone().slice(s![.., .., from..from + n, ..]);
                    *t = zeros_as(t, t.dims()).slice_assign(s![.., .., to..to + n, ..], part);
                }
            }
        }
        self.len = to + n;
        Ok(())
    }

    /// Add `src`'s rows (its first `n` positions) as new rows whose positions end where this
    /// cache's end: they land at `len - n..len`. Needs `n ≤ len` (shift first).
    pub fn append_rows(&mut self, src: &KvCache<B>, n: usize) -> Result<()> {
        if src.ty != self.ty {
            return Err(ModelError::Input(format!("cannot append {} cache rows to a {} cache", src.ty, self.ty)));
        }
        if n > self.len || n > src.len {
            return Err(ModelError::Input(format!(
                "cannot append {n} positions to a cache of {} from one of {}",
                self.len, src.len
            )));
        }
        let (a, b) = (self.len - n, self.len);
        for (l, sl) in self.layers.iter_mut().zip(&src.layers) {
            for (t, st) in [(&mut l.k, &sl.k), (&mut l.v, &sl.v)] {
                let [_, h, cap, d] = t.dims();
                let rows = st.dims()[0];
                let add = zeros_as(t, [rows, h, cap, d])
                    .slice_assign(s![.., .., a..b, ..], st.clone().slice(s![.., .., 0..n, ..]));
                *t = Tensor::cat(vec![t.clone(), add], 0);
            }
        }
        self.batch += src.batch;
        Ok(())
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    fn cfg() -> ModelConfig {
        ModelConfig::llama(crate::families::llama(), 10, 8, 8, 1, 2, 1, 4, 6)
    }

    #[test]
    fn writes_in_place_and_reads_back() {
        let d = Default::default();
        let mut c = KvCache::<NdArray>::new(&cfg(), 1, 6, &d).unwrap();
        let a = Tensor::<NdArray, 4>::from_data(TensorData::new((0..8).map(|x| x as f32).collect(), [1, 1, 2, 4]), &d);
        let (k, _) = c.layer_mut(0).append(a.clone(), a.clone(), 0);
        c.advance(2);
        assert_eq!(k.dims(), [1, 1, 2, 4]);
        let b = Tensor::<NdArray, 4>::from_data(TensorData::new(vec![9f32; 4], [1, 1, 1, 4]), &d);
        let (k, v) = c.layer_mut(0).append(b.clone(), b, 2);
        c.advance(1);
        let k: Vec<f32> = k.into_data().to_vec().unwrap();
        assert_eq!(k, vec![0., 1., 2., 3., 4., 5., 6., 7., 9., 9., 9., 9.]);
        assert_eq!(v.dims(), [1, 1, 3, 4]);
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn overflow_is_an_error_with_numbers() {
        let d = Default::default();
        let mut c = KvCache::<NdArray>::new(&cfg(), 1, 4, &d).unwrap();
        c.advance(3);
        assert!(c.check_room(1).is_ok());
        let e = c.check_room(2).unwrap_err().to_string();
        assert!(e.contains('3') && e.contains('2') && e.contains('4'), "{e}");
        c.reset();
        assert!(c.check_room(4).is_ok());
        assert!(KvCache::<NdArray>::new(&cfg(), 1, 7, &d).is_err());
    }
}
