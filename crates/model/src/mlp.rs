//! SwiGLU feed-forward block: `down(silu(gate(x)) * up(x))`.
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::silu, backend::Backend, Tensor};

/// Configuration of [`Mlp`].
#[derive(burn::config::Config, Debug)]
pub struct MlpConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    #[config(default = false)]
    pub bias: bool,
}

/// SwiGLU MLP with HF parameter names (`gate_proj`, `up_proj`, `down_proj`).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Linear<B>, // weight [hidden, intermediate]
    pub up_proj: Linear<B>,   // weight [hidden, intermediate]
    pub down_proj: Linear<B>, // weight [intermediate, hidden]
}

impl MlpConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        let lin = |i, o| LinearConfig::new(i, o).with_bias(self.bias).init(device);
        Mlp {
            gate_proj: lin(self.hidden_size, self.intermediate_size),
            up_proj: lin(self.hidden_size, self.intermediate_size),
            down_proj: lin(self.intermediate_size, self.hidden_size),
        }
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - x: `[batch, seq, hidden]`
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let gate = silu(self.gate_proj.forward(x.clone()));
        self.down_proj.forward(gate * self.up_proj.forward(x))
    }
}
