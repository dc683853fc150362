//! [`DecodeOps`] for burn-flex: the host kernels of [`super::cpu`] on the tensors' own buffers.
//! Linear layers run on GGUF blocks kept as in the file; attention reads and writes the KV
//! cache in place (no copy of the cached keys per step).
use burn::backend::flex::{Flex, FlexTensor};
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use half::f16;

use super::cpu;
use super::kv::{self, AttnShape, KvRows, KvRowsMut};
use crate::families::Activation;
use crate::kv_cache::CacheType;
use crate::kv_cache::LayerKv;
use crate::ops::{AttnSpec, DecodeOps, Heads, Linear, Matrix, QkNorm, Step};
use crate::rope::RotaryEmbedding;

/// The contiguous f32 buffer of a tensor (copied only when it is a strided view).
fn host<const D: usize>(t: Tensor<Flex, D>) -> FlexTensor {
    let p = t.into_primitive().tensor();
    let p = if p.dtype() != burn::tensor::DType::F32 {
        Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(p))
            .cast(burn::tensor::DType::F32)
            .into_primitive()
            .tensor()
    } else {
        p
    };
    if p.as_slice::<f32>().is_some() {
        p
    } else {
        p.to_contiguous()
    }
}

fn f32s(p: &FlexTensor) -> &[f32] {
    p.as_slice::<f32>().expect("made contiguous f32 by host()")
}

fn wrap<const D: usize>(v: Vec<f32>, shape: [usize; D]) -> Tensor<Flex, D> {
    Tensor::from_primitive(TensorPrimitive::Float(FlexTensor::from_data(TensorData::new(v, shape))))
}

/// Run `f` on the cache buffer `[b, kv, cap, row]` of `t` (rows as `ty` stores them), in place.
fn with_cache<R>(t: &mut Tensor<Flex, 4>, ty: CacheType, f: impl FnOnce(KvRowsMut<'_>) -> R) -> R {
    let mut out = None;
    t.inplace(|t| {
        let p = t.into_primitive().tensor();
        let cont = p.is_contiguous() && p.layout().start_offset() == 0;
        let mut p = if cont { p } else { p.to_contiguous() };
        out = Some(f(match ty {
            CacheType::F32 => KvRowsMut::F32(p.storage_mut::<f32>()),
            CacheType::F16 => KvRowsMut::F16(p.storage_mut::<f16>()),
            CacheType::Q8_0 => {
                let s = p.storage_mut::<f16>();
                // SAFETY: f16 is a plain 2-byte value; the byte view covers exactly its storage.
                KvRowsMut::Q8(unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr().cast::<u8>(), s.len() * 2) })
            }
        }));
        Tensor::from_primitive(TensorPrimitive::Float(p))
    });
    out.expect("inplace ran the closure")
}

/// The rows of a cache buffer that [`with_cache`] left contiguous from offset 0.
fn cache_rows(p: &FlexTensor, ty: CacheType) -> KvRows<'_> {
    match ty {
        CacheType::F32 => KvRows::F32(p.storage::<f32>()),
        CacheType::F16 => KvRows::F16(p.storage::<f16>()),
        CacheType::Q8_0 => {
            let s = p.storage::<f16>();
            // SAFETY: as in `with_cache`, read-only.
            KvRows::Q8(unsafe { std::slice::from_raw_parts(s.as_ptr().cast::<u8>(), s.len() * 2) })
        }
    }
}

impl DecodeOps for Flex {
    fn host_weights() -> bool {
        true
    }

    fn cache_types() -> &'static [CacheType] {
        &[CacheType::F32, CacheType::F16, CacheType::Q8_0]
    }

    fn run_step<R: Send>(f: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_some() {
            f()
        } else {
            rayon::scope(|_| f())
        }
    }

    fn linear_layer(x: Tensor<Flex, 2>, w: &Linear<Flex>) -> Tensor<Flex, 2> {
        let Matrix::Host(q) = &w.weight else {
            // dense device weights (not what the loaders build for flex): the reference body
            return crate::ops::default_linear(x, w);
        };
        let [m, _] = x.dims();
        let xp = host(x);
        let bias = w.bias.clone().map(host);
        let out = cpu::linear(q, f32s(&xp), m, bias.as_ref().map(f32s));
        wrap(out, [m, q.rows()])
    }

    fn embed(ids: &[u32], table: &Matrix<Flex>, device: &burn::backend::flex::FlexDevice) -> Tensor<Flex, 2> {
        match table {
            Matrix::Host(q) => wrap(cpu::embed(q, ids), [ids.len(), q.cols()]),
            other => crate::ops::default_embed(ids, other, device),
        }
    }

    fn rms_norm(x: Tensor<Flex, 2>, gamma: &Tensor<Flex, 1>, eps: f64) -> Tensor<Flex, 2> {
        let dims = x.dims();
        let xp = host(x);
        let g = host(gamma.clone());
        wrap(cpu::rms_norm(f32s(&xp), f32s(&g), eps), dims)
    }

    fn gated_act(gate_up: Tensor<Flex, 2>, act: Activation) -> Tensor<Flex, 2> {
        let [m, w] = gate_up.dims();
        let p = host(gate_up);
        wrap(cpu::gated_act(f32s(&p), w / 2, act), [m, w / 2])
    }

    fn split_rope(
        qkv: Tensor<Flex, 2>,
        step: &Step<Flex>,
        rope: &RotaryEmbedding<Flex>,
        heads: Heads,
        qk_norm: Option<QkNorm<'_, Flex>>,
    ) -> (Tensor<Flex, 4>, Tensor<Flex, 4>, Tensor<Flex, 4>) {
        let (b, t, d) = (step.batch, step.seq, heads.dim);
        let p = host(qkv);
        let rows = step.host_rope(rope);
        let norms = qk_norm.map(|n| (host(n.q.clone()), host(n.k.clone()), n.eps as f32));
        let norms = norms.as_ref().map(|(q, k, eps)| (f32s(q), f32s(k), *eps));
        let (q, k, v) = cpu::split_rope(f32s(&p), b, t, heads.q, heads.kv, d, &rows.0, &rows.1, norms);
        (wrap(q, [b, heads.q, t, d]), wrap(k, [b, heads.kv, t, d]), wrap(v, [b, heads.kv, t, d]))
    }

    fn cached_attention(
        q: Tensor<Flex, 4>,
        k: Tensor<Flex, 4>,
        v: Tensor<Flex, 4>,
        cache: Option<&mut LayerKv<Flex>>,
        step: &Step<Flex>,
        attn: &AttnSpec,
    ) -> Tensor<Flex, 2> {
        let heads = attn.heads;
        let (b, t, d) = (step.batch, step.seq, heads.dim);
        let (hq, kv) = (heads.q, heads.kv);
        let qp = host(q);
        let (kp, vp) = (host(k), host(v));
        let mask = kv::KeyMask {
            key_valid: step.key_valid.as_deref(),
            window: attn.window,
            scale: attn.scale as f32,
            softcap: attn.softcap.map(|c| c as f32),
        };
        let out = match cache {
            Some(layer) => {
                let (cap, past, ty) = (layer.k.dims()[2], step.past, layer.ty);
                with_cache(&mut layer.k, ty, |kc| kv::cache_write(kc, f32s(&kp), b, kv, cap, t, d, past));
                with_cache(&mut layer.v, ty, |vc| kv::cache_write(vc, f32s(&vp), b, kv, cap, t, d, past));
                let kc = layer.k.clone().into_primitive().tensor();
                let vc = layer.v.clone().into_primitive().tensor();
                let shape = AttnShape { b, h: hq, kv, t, d, cap, past };
                kv::attention(f32s(&qp), cache_rows(&kc, ty), cache_rows(&vc, ty), &shape, &mask)
            }
            None => {
                let shape = AttnShape { b, h: hq, kv, t, d, cap: t, past: 0 };
                kv::attention(f32s(&qp), KvRows::F32(f32s(&kp)), KvRows::F32(f32s(&vp)), &shape, &mask)
            }
        };
        wrap(out, [b * t, hq * d])
    }
}
