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
