//! Small tensor helpers shared by processors.
use burn::tensor::{backend::Backend, IndexingUpdateOp, Int, Tensor, TensorData};

/// Per-row lists of token ids (unique within a row) as a padded `[batch, L]` index tensor,
/// a `[batch, L]` validity mask (1.0 / 0.0) and extra per-entry values. Padding entries repeat
/// the row's first id (or 0) with validity 0.
pub(crate) struct RowIndex<B: Backend> {
    pub idx: Tensor<B, 2, Int>,
    pub valid: Tensor<B, 2>,
    pub values: Tensor<B, 2>,
}

pub(crate) fn row_index<B: Backend>(rows: &[Vec<(u32, f32)>], device: &B::Device) -> Option<RowIndex<B>> {
    let l = rows.iter().map(Vec::len).max().unwrap_or(0);
    if l == 0 {
        return None;
    }
    let b = rows.len();
    let mut idx = Vec::with_capacity(b * l);
    let mut valid = Vec::with_capacity(b * l);
    let mut vals = Vec::with_capacity(b * l);
    for r in rows {
        let fill = r.first().map_or(0, |x| x.0);
        for j in 0..l {
            match r.get(j) {
                Some(&(id, v)) => {
                    idx.push(id as i64);
                    valid.push(1.0f32);
                    vals.push(v);
                }
                None => {
                    idx.push(fill as i64);
                    valid.push(0.0);
                    vals.push(0.0);
                }
            }
        }
    }
    Some(RowIndex {
        idx: Tensor::from_data(TensorData::new(idx, [b, l]), device),
        valid: Tensor::from_data(TensorData::new(valid, [b, l]), device),
        values: Tensor::from_data(TensorData::new(vals, [b, l]), device),
    })
}

/// `logits[b, idx[b, j]] = values[b, j]` where `valid[b, j]`; other entries unchanged.
/// Indices must be unique per row among valid entries.
pub(crate) fn scatter_set<B: Backend>(
    logits: Tensor<B, 2>,
    idx: Tensor<B, 2, Int>,
    values: Tensor<B, 2>,
    valid: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let values = values.mask_fill(valid.clone().lower_elem(0.5), 0.0);
    let zeros = logits.zeros_like();
    let placed = zeros.clone().scatter(1, idx.clone(), values, IndexingUpdateOp::Add);
    let present = zeros.scatter(1, idx, valid, IndexingUpdateOp::Add).greater_elem(0.5);
    logits.mask_where(present, placed)
}

/// Scatter a per-sorted-position removal mask (1.0 = remove) back to vocabulary order and fill
/// removed logits with -inf. `sorted_idx` is a permutation per row.
pub(crate) fn remove_sorted<B: Backend>(
    logits: Tensor<B, 2>,
    sorted_idx: Tensor<B, 2, Int>,
    remove_sorted: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let remove = logits.zeros_like().scatter(1, sorted_idx, remove_sorted, IndexingUpdateOp::Add).greater_elem(0.5);
    logits.mask_fill(remove, f32::NEG_INFINITY)
}

/// Unique ids with their counts, in first-seen order.
pub(crate) fn counts(ids: &[u32]) -> Vec<(u32, f32)> {
    let mut out: Vec<(u32, f32)> = Vec::new();
    let mut pos: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for &id in ids {
        match pos.get(&id) {
            Some(&i) => out[i].1 += 1.0,
            None => {
                pos.insert(id, out.len());
                out.push((id, 1.0));
            }
        }
    }
    out
}

/// `logits[.., id] = value` for every id inside the vocabulary (banned / suppressed tokens).
pub(crate) fn fill_columns<B: Backend>(mut logits: Tensor<B, 2>, ids: &[u32], value: f32) -> Tensor<B, 2> {
    let v = logits.dims()[1];
    for &id in ids {
        let i = id as usize;
        if i < v {
            logits = logits.slice_fill(burn::tensor::s![.., i..i + 1], value);
        }
    }
    logits
}

/// The JSON field names of a struct (its serialized object's keys, flattened groups included).
pub(crate) fn json_field_names<T: serde::Serialize>(v: &T) -> Vec<String> {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().map(|(k, _)| k).collect(),
        _ => vec![],
    }
}

/// The rows of `[batch, vocab]` logits on the host, as f32 (one read; the processors that rank a
/// whole row select on the host in O(vocab) instead of sorting on the device).
pub(crate) fn host_rows<B: Backend>(logits: &Tensor<B, 2>) -> Vec<f32> {
    logits.clone().into_data().convert::<f32>().into_vec::<f32>().expect("f32 logits")
}

/// `logits[b, i] = -inf` wherever `logits[b, i] < threshold[b]` (a threshold of -inf keeps all).
pub(crate) fn mask_below<B: Backend>(logits: Tensor<B, 2>, threshold: Vec<f32>) -> Tensor<B, 2> {
    let [b, v] = logits.dims();
    let t = Tensor::<B, 2>::from_data(TensorData::new(threshold, [b, 1]), &logits.device()).expand([b, v]);
    logits.clone().mask_fill(logits.lower(t), f32::NEG_INFINITY)
}

/// [`mask_below`] on one host row: `x = -inf` wherever `x < threshold`.
pub(crate) fn mask_row_below(row: &mut [f32], threshold: f32) {
    row.iter_mut().for_each(|x| {
        if *x < threshold {
            *x = f32::NEG_INFINITY
        }
    });
}

/// `f32::total_cmp`'s order as an integer key (the same comparison, one `i32` compare).
#[inline(always)]
fn total_key(x: f32) -> i32 {
    let b = x.to_bits() as i32;
    b ^ (((b >> 31) as u32) >> 1) as i32
}

/// The `k`-th largest value of `row` (1-based `k`, `1 ≤ k ≤ row.len()`) in `f32::total_cmp`'s
/// order: for small `k` one pass keeping the `k` largest in a min-heap (most values lose one
/// comparison against the heap's least), else a selection over a copy; O(len) either way.
pub(crate) fn kth_largest(row: &[f32], k: usize) -> f32 {
    assert!((1..=row.len()).contains(&k), "kth_largest: k {k} of {} values", row.len());
    if k > 1024 || k * 16 > row.len() {
        let mut scratch = row.to_vec();
        return *scratch.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1;
    }
    use std::cmp::Reverse;
    let mut heap: std::collections::BinaryHeap<Reverse<i32>> =
        row[..k].iter().map(|&x| Reverse(total_key(x))).collect();
    let mut least = heap.peek().expect("k ≥ 1").0;
    for &x in &row[k..] {
        let key = total_key(x);
        if key > least {
            heap.pop();
            heap.push(Reverse(key));
            least = heap.peek().expect("k ≥ 1").0;
        }
    }
    // the key map flips the low 31 bits of negative values only: it is its own inverse
    f32::from_bits(total_key(f32::from_bits(least as u32)) as u32)
}

/// The nucleus of `row` for mass `p` (transformers' top-p boundary: a token is kept while the
/// probability of the tokens ranked above it is below `p`, so the token that crosses `p` is kept),
/// as the smallest kept logit. The softmax is taken in f64 over the finite logits; only the head
/// of the ranking is sorted (the top 256, more only when their mass stays below `p`).
pub(crate) fn nucleus_threshold(row: &[f32], p: f32) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return f32::NEG_INFINITY;
    }
    let mut cand: Vec<f32> = row.iter().copied().filter(|&x| x > f32::NEG_INFINITY).collect();
    let z: f64 = cand.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let p = p as f64;
    let mut head = 256.min(cand.len());
    loop {
        if head < cand.len() {
            cand.select_nth_unstable_by(head - 1, |a, b| b.total_cmp(a));
        }
        let top = &mut cand[..head];
        top.sort_unstable_by(|a, b| b.total_cmp(a));
        let mut above = 0.0f64;
        let mut kept = top[0];
        for &x in top.iter() {
            if above >= p {
                return kept;
            }
            kept = x;
            above += ((x - max) as f64).exp() / z;
        }
        if head == cand.len() {
            return kept;
        }
        head = (head * 8).min(cand.len());
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{activation::softmax, s, Tensor, TensorData};

    use crate::pipeline::{LogitsProcessor, ProcessorContext};
    use crate::processors::{TopK, TopP};

    type B = NdArray;

    /// Rows of random logits (a SplitMix stream): spread like a model's, with repeated values
    /// (ties) and -inf entries (an earlier truncation).
    fn rows(b: usize, v: usize, seed: u64) -> Vec<f32> {
        let mut r = crate::rng::SeqRng::new(seed, 0);
        (0..b * v)
            .map(|_| {
                let u = r.next_f32();
                match (u * 100.0) as u32 {
                    0..=9 => f32::NEG_INFINITY,
                    10..=19 => 1.5, // ties
                    _ => (r.next_f32() - 0.5) * 16.0,
                }
            })
            .collect()
    }

    fn run(p: &dyn LogitsProcessor<B>, x: &[f32], b: usize, v: usize) -> Vec<f32> {
        let t = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [b, v]), &Default::default());
        let ctx = ProcessorContext { sequences: &[], num_generated: 0, cur_len: 0 };
        p.process(t, &ctx).into_data().into_vec::<f32>().unwrap()
    }

    /// The sort-based top-k these replace (Burn's `topk`, the k-th value's ties kept).
    fn top_k_sorted(x: &[f32], b: usize, v: usize, k: usize) -> Vec<f32> {
        let t = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [b, v]), &Default::default());
        let kth = t.clone().topk(k, 1).slice(s![.., k - 1..k]).expand([b, v]);
        t.clone().mask_fill(t.lower(kth), f32::NEG_INFINITY).into_data().into_vec::<f32>().unwrap()
    }

    /// Every processor with a host body ([`crate::HostRowProcessor`]) gives its tensor body's
    /// values bit for bit (rows with ties, -inf entries and token histories, both penalty scopes),
    /// and so does every preset's whole pipeline through `apply_host`.
    #[test]
    fn host_bodies_are_the_tensor_bodies_bit_for_bit() {
        use crate::processors::{FrequencyPresencePenalty, PenaltyScope, RepetitionPenalty, Temperature};
        let (b, v) = (3, 5_000);
        let x = rows(b, v, 11);
        // histories: the prompt, then generated tokens with repeats (ids within the vocabulary)
        let sequences: Vec<Vec<u32>> =
            (0..b).map(|r| (0..40 + 25 * r).map(|i| ((i * 7919 + r * 13) % 977) as u32 * 5).collect()).collect();
        let ctx = ProcessorContext { sequences: &sequences, num_generated: 20, cur_len: 60 };
        let tensor = |p: &dyn LogitsProcessor<B>, x: &[f32]| {
            let t = Tensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [b, v]), &Default::default());
            p.process(t, &ctx).into_data().into_vec::<f32>().unwrap()
        };
        let procs: Vec<Box<dyn LogitsProcessor<B>>> = vec![
            Box::new(Temperature::new(0.7).unwrap()),
            Box::new(Temperature::new(1.3).unwrap()),
            Box::new(TopK::new(1).unwrap()),
            Box::new(TopK::new(40).unwrap()),
            Box::new(TopK::new(4_000).unwrap()),
            Box::new(TopP::new(0.9).unwrap()),
            Box::new(TopP::new(0.3).unwrap()),
            Box::new(RepetitionPenalty::new(1.1).unwrap()),
            Box::new(RepetitionPenalty::new(0.8).unwrap().with_scope(PenaltyScope::Generated)),
            Box::new(FrequencyPresencePenalty::new(0.2, 0.5).unwrap()),
            Box::new(FrequencyPresencePenalty::new(-0.4, 0.0).unwrap().with_scope(PenaltyScope::PromptAndGenerated)),
        ];
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for p in &procs {
            let h = p.host().unwrap_or_else(|| panic!("{} has a host body", p.name()));
            let mut got = x.clone();
            for (r, row) in got.chunks_mut(v).enumerate() {
                h.process_row(row, r, &ctx);
            }
            assert_eq!(bits(&got), bits(&tensor(p.as_ref(), &x)), "{}", p.name());
        }
        // whole pipelines: every sampling preset has the host path, and it is the tensor path
        let mut pipelines = 0;
        for preset in crate::PRESETS.iter() {
            let cfg = preset.config();
            if !cfg.is_sampling() {
                continue;
            }
            let pipe = crate::LogitsPipeline::<B>::from_config(&cfg, &[2], 60).unwrap();
            assert!(pipe.has_host_path(), "preset {}: {:?}", preset.name, pipe.names());
            let mut got = x.clone();
            assert!(pipe.apply_host(&mut got, v, &ctx));
            let t = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [b, v]), &Default::default());
            assert_eq!(
                bits(&got),
                bits(&pipe.apply(t, &ctx).into_data().into_vec::<f32>().unwrap()),
                "{}",
                preset.name
            );
            pipelines += 1;
        }
        assert!(pipelines >= 3, "{pipelines} sampling presets");
    }

    /// A sampling step on the host path draws the same ids and keeps the same processed logits as
    /// the tensor path (the same pipeline with an identity processor that has no host body).
    #[test]
    fn host_sampling_step_is_the_tensor_step() {
        struct Identity;
        impl LogitsProcessor<B> for Identity {
            fn name(&self) -> &'static str {
                "identity"
            }
            fn process(&self, logits: Tensor<B, 2>, _ctx: &ProcessorContext<'_>) -> Tensor<B, 2> {
                logits
            }
        }
        let (b, v) = (4, 3_000);
        let sequences: Vec<Vec<u32>> = (0..b).map(|r| (0..30).map(|i| ((i * 31 + r) % 400) as u32).collect()).collect();
        let ctx = ProcessorContext { sequences: &sequences, num_generated: 10, cur_len: 30 };
        let mut steps = 0;
        for preset in crate::PRESETS.iter().filter(|p| p.config().is_sampling()) {
            let cfg = preset.config();
            let host = crate::LogitsPipeline::<B>::from_config(&cfg, &[2], 20).unwrap();
            let mut tensor = crate::LogitsPipeline::<B>::from_config(&cfg, &[2], 20).unwrap();
            tensor.push(Box::new(Identity));
            assert!(host.has_host_path() && !tensor.has_host_path(), "{}", preset.name);
            let (mut sh, mut st) = (crate::Sampler::multinomial(5, b), crate::Sampler::multinomial(5, b));
            for step in 0..20u64 {
                let x = rows(b, v, 100 + step);
                let t = || Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [b, v]), &Default::default());
                let (ih, ph) = host.process_and_sample(&mut sh, t(), &ctx, true);
                let (it, pt) = tensor.process_and_sample(&mut st, t(), &ctx, true);
                let ids = |i: Tensor<B, 2, burn::tensor::Int>| i.into_data().iter::<i64>().collect::<Vec<_>>();
                assert_eq!(ids(ih), ids(it), "{} step {step}", preset.name);
                let bits = |p: Option<Tensor<B, 2>>| {
                    p.unwrap().into_data().into_vec::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(bits(ph), bits(pt), "{} step {step}", preset.name);
                steps += 1;
            }
        }
        assert!(steps >= 60, "{steps}");
    }

    /// The heap selection of small k against a full sort, ties and -inf included.
    #[test]
    fn kth_largest_is_the_sorted_kth() {
        let mut cases = 0;
        for (v, seed) in [(1usize, 1u64), (17, 2), (1000, 3), (100_000, 4)] {
            let x = rows(1, v, seed);
            let mut sorted = x.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            for k in [1, 2, 3, 40, 63, 64, 1024, 5000, v].into_iter().filter(|&k| k <= v) {
                assert_eq!(super::kth_largest(&x, k).to_bits(), sorted[k - 1].to_bits(), "v {v} k {k}");
                cases += 1;
            }
        }
        assert!(cases >= 20, "{cases}");
    }

    #[test]
    fn top_k_by_selection_is_the_sorted_top_k() {
        let mut cases = 0;
        for (b, v) in [(1, 7), (3, 100), (2, 4096)] {
            for k in [1, 2, 5, 50, v - 1].into_iter().filter(|&k| k < v) {
                let x = rows(b, v, (b * v + k) as u64);
                assert_eq!(run(&TopK::new(k).unwrap(), &x, b, v), top_k_sorted(&x, b, v, k), "b {b} v {v} k {k}");
                cases += 1;
            }
        }
        assert_eq!(cases, 14);
    }

    /// Top-p against its definition on the sorted row (the previous device code: ascending sort,
    /// softmax, cumsum, remove where the mass at or below a token is ≤ 1 − p): a token may be
    /// decided differently only where the mass above it is within float noise of p, and tied
    /// logits are kept or removed together.
    #[test]
    fn top_p_by_partial_sort_is_the_nucleus() {
        let mut compared = 0;
        // (3,000 with p 0.999 keeps more than the first 256 sorted: the widening path)
        for (b, v) in [(1, 5), (4, 300), (2, 3_000)] {
            for p in [0.05f32, 0.5, 0.9, 0.95, 0.999] {
                let x = rows(b, v, (b * v) as u64 ^ p.to_bits() as u64);
                let got = run(&TopP::new(p).unwrap(), &x, b, v);
                let t = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [b, v]), &Default::default());
                let probs = softmax(t, 1).into_data().into_vec::<f32>().unwrap();
                for r in 0..b {
                    let (row, pr) = (&x[r * v..(r + 1) * v], &probs[r * v..(r + 1) * v]);
                    for i in 0..v {
                        // mass strictly above token i (ties counted by the reference's order: a
                        // tie is kept when the mass above all of its ties is below p)
                        let above: f64 = (0..v).filter(|&j| row[j] > row[i]).map(|j| pr[j] as f64).sum();
                        let keep = row[i] > f32::NEG_INFINITY && above < p as f64;
                        let kept = got[r * v + i] > f32::NEG_INFINITY;
                        if kept != keep {
                            assert!((above - p as f64).abs() < 1e-5, "b {b} v {v} p {p} row {r} token {i}");
                        }
                        if kept {
                            assert_eq!(got[r * v + i], row[i]);
                        }
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 30_000);
    }
}
