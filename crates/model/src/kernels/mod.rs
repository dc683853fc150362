//! CPU kernels: GGUF block matrices ([`quant`]), their dot products with runtime instruction-set
//! dispatch ([`dot`]) and the host implementations of the decode ops ([`cpu`]).
pub mod act;
pub mod cpu;
pub mod dot;
#[cfg(feature = "flex")]
mod flex;
pub mod quant;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use quant::{ActQuant, QuantMatrix, RowLayout};
