//! CPU kernels: GGUF block matrices ([`quant`]), their dot products with runtime instruction-set
//! dispatch ([`dot`]) and the host implementations of the decode ops ([`cpu`]); the cube
//! backends' device blocks ([`blocks`]) and CubeCL kernels (`cube`).
pub mod act;
#[cfg(target_arch = "x86_64")]
pub mod amx;
pub mod blocks;
pub mod cpu;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod cube;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod cube_layers;
pub mod dot;
#[cfg(feature = "flex")]
mod flex;
#[cfg(feature = "wgpu-fusion")]
pub mod fusion;
pub mod igemm;
pub mod kv;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quant::{ActQuant, QuantMatrix, RowLayout};
