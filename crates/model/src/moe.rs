//! Sparse mixture-of-experts feed-forward block (Qwen3-MoE): a router scores every expert per
//! token, each token runs through its `top_k` best experts, and their outputs are summed weighed
//! by the router's softmax probabilities (renormalised over the chosen ones when
//! `norm_topk_prob`), as transformers' `Qwen3MoeSparseMoeBlock` computes. Tokens are grouped by
//! expert: one batched gated MLP per expert that has tokens (its projections on the backend's
//! kernels, quantized blocks included), never a loop over tokens.
use burn::tensor::activation::softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::mlp::Mlp;
use crate::ops::{DecodeOps, Linear};
use crate::profile::{time, Op};

/// The router and the experts of one layer.
#[derive(Debug, Clone)]
pub struct SparseMoe<B: DecodeOps> {
    /// `[experts, hidden]`.
    pub router: Linear<B>,
    pub experts: Vec<Mlp<B>>,
    pub top_k: usize,
    pub norm_topk_prob: bool,
}

/// The tokens routed to one expert and the weight of its output in each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    pub tokens: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Route `m` tokens given their router probabilities (`[m, experts]`, row-major): per token the
/// `top_k` most probable experts (ties to the lower index), weights renormalised to sum to one
/// when `renormalise`. One [`Route`] per expert, tokens in ascending order.
pub fn route(probs: &[f32], experts: usize, top_k: usize, renormalise: bool) -> Vec<Route> {
    let mut routes = vec![Route::default(); experts];
    let mut order: Vec<usize> = Vec::with_capacity(experts);
    for (t, row) in probs.chunks_exact(experts).enumerate() {
        order.clear();
        order.extend(0..experts);
        // stable: equal probabilities keep the lower expert first
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let chosen = &order[..top_k];
        let sum: f32 = chosen.iter().map(|&e| row[e]).sum();
        for &e in chosen {
            routes[e].tokens.push(t);
            routes[e].weights.push(if renormalise { row[e] / sum } else { row[e] });
        }
    }
    routes
}

impl<B: DecodeOps> SparseMoe<B> {
    /// # Shapes
    /// - x: `[m, hidden]`
    /// - output: `[m, hidden]`
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [m, d] = x.dims();
        let device = x.device();
        let routes = time(Op::Router, || {
            let logits = B::linear_layer(x.clone(), &self.router);
            let probs: Vec<f32> = softmax(logits, 1).into_data().iter::<f32>().collect();
            route(&probs, self.experts.len(), self.top_k, self.norm_topk_prob)
        });
        let mut out = Tensor::<B, 2>::zeros([m, d], &device);
        // experts in ascending order, each adding its weighed rows (transformers' index_add_ order)
        for (expert, r) in self.experts.iter().zip(&routes) {
            if r.tokens.is_empty() {
                continue;
            }
            let n = r.tokens.len();
            let idx = Tensor::<B, 1, Int>::from_data(
                TensorData::new(r.tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [n]),
                &device,
            );
            let xe = if n == m && r.tokens.iter().enumerate().all(|(i, &t)| i == t) {
                x.clone()
            } else {
                x.clone().select(0, idx.clone())
            };
            let w = Tensor::<B, 2>::from_data(TensorData::new(r.weights.clone(), [n, 1]), &device);
            let ye = expert.forward(xe) * w;
            out = out.select_assign(0, idx, ye, IndexingUpdateOp::Add);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_top_k_per_token_with_renormalised_weights() {
        // 2 tokens, 4 experts
        let probs = [0.1, 0.4, 0.2, 0.3, 0.25, 0.25, 0.4, 0.1];
        let r = route(&probs, 4, 2, true);
        // token 0: experts 1 (0.4) and 3 (0.3); token 1: expert 2 (0.4), then the tie 0/1 goes
        // to expert 0
        assert_eq!((r[0].tokens.clone(), r[1].tokens.clone()), (vec![1], vec![0]));
        assert_eq!((r[2].tokens.clone(), r[3].tokens.clone()), (vec![1], vec![0]));
        assert!((r[1].weights[0] - 0.4 / 0.7).abs() < 1e-6);
        assert!((r[0].weights[0] - 0.25 / 0.65).abs() < 1e-6);
        let r = route(&probs[4..], 4, 2, false);
        assert_eq!((r[0].tokens.clone(), r[0].weights.clone()), (vec![0], vec![0.25]));
        assert_eq!(r[1], Route::default());
    }
}
