//! Optional per-operation timing of forward calls (`demiurgic bench --profile`): wall time and
//! call count per decoder operation, accumulated process-wide while enabled. On backends that
//! run synchronously (flex, ndarray) this is where the time goes; on GPU backends it is the time
//! to enqueue, not to execute.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// The timed operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Embed,
    Norm,
    Qkv,
    Rope,
    Attention,
    AttnOut,
    GateUp,
    GatedAct,
    Down,
    Residual,
    Head,
    Router,
}

pub const OPS: [Op; 12] = [
    Op::Embed,
    Op::Norm,
    Op::Qkv,
    Op::Rope,
    Op::Attention,
    Op::AttnOut,
    Op::GateUp,
    Op::GatedAct,
    Op::Down,
    Op::Residual,
    Op::Head,
    Op::Router,
];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Embed => "embedding",
            Op::Norm => "rms_norm",
            Op::Qkv => "linear qkv",
            Op::Rope => "split + rope",
            Op::Attention => "attention (cache write + read)",
            Op::AttnOut => "linear attn_output",
            Op::GateUp => "linear gate_up",
            Op::GatedAct => "gated activation",
            Op::Down => "linear down",
            Op::Residual => "residual add",
            Op::Head => "linear head (logits)",
            Op::Router => "MoE router + grouping",
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; OPS.len()] = [const { AtomicU64::new(0) }; OPS.len()];
static CALLS: [AtomicU64; OPS.len()] = [const { AtomicU64::new(0) }; OPS.len()];

/// Start (and reset) or stop accumulating.
pub fn enable(on: bool) {
    if on {
        for i in 0..OPS.len() {
            NANOS[i].store(0, Ordering::Relaxed);
            CALLS[i].store(0, Ordering::Relaxed);
        }
    }
    ENABLED.store(on, Ordering::Relaxed);
}

/// Start (and reset) unless already on.
pub fn enable_once() {
    if !ENABLED.load(Ordering::Relaxed) {
        enable(true);
    }
}

/// (operation, total seconds, calls) since [`enable`].
pub fn totals() -> Vec<(Op, f64, u64)> {
    OPS.iter()
        .enumerate()
        .map(|(i, &op)| (op, NANOS[i].load(Ordering::Relaxed) as f64 / 1e9, CALLS[i].load(Ordering::Relaxed)))
        .collect()
}

thread_local! {
    /// Nanoseconds spent in timed operations nested inside the one running on this thread.
    static NESTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Run `f`, timing it as `op` when profiling is on. Time spent in operations timed inside `f`
/// counts for them, not for `op` (a fused default body times its parts).
#[inline]
pub fn time<R>(op: Op, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let outer = NESTED.replace(0);
    let t = Instant::now();
    let r = f();
    let total = t.elapsed().as_nanos() as u64;
    let inner = NESTED.replace(outer + total);
    let i = OPS.iter().position(|&o| o == op).expect("every op is listed");
    NANOS[i].fetch_add(total.saturating_sub(inner), Ordering::Relaxed);
    CALLS[i].fetch_add(1, Ordering::Relaxed);
    r
}
