//! Backend selection by name among the compiled-in features: the one place backend types appear.
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

/// Work to run on one backend.
pub trait BackendJob {
    fn run<B: Backend>(self, backend: &str, device: B::Device) -> Result<()>;
}

pub const COMPILED: &[&str] = &[
    #[cfg(feature = "flex")]
    "flex",
    #[cfg(feature = "ndarray")]
    "ndarray",
    #[cfg(feature = "wgpu")]
    "wgpu",
    #[cfg(feature = "cuda")]
    "cuda",
];

#[cfg(feature = "flex")]
pub const DEFAULT: &str = "flex";
#[cfg(all(not(feature = "flex"), feature = "ndarray"))]
pub const DEFAULT: &str = "ndarray";
#[cfg(all(not(feature = "flex"), not(feature = "ndarray"), feature = "wgpu"))]
pub const DEFAULT: &str = "wgpu";
#[cfg(all(not(feature = "flex"), not(feature = "ndarray"), not(feature = "wgpu")))]
pub const DEFAULT: &str = "cuda";

/// Run `job` on the backend called `name`.
#[allow(unreachable_patterns)]
pub fn with_backend<J: BackendJob>(name: &str, job: J) -> Result<()> {
    match name {
        #[cfg(feature = "flex")]
        "flex" => job.run::<burn::backend::Flex>(name, Default::default()),
        #[cfg(feature = "ndarray")]
        "ndarray" => job.run::<burn::backend::NdArray>(name, Default::default()),
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            probe_ok(name)?;
            job.run::<burn::backend::Wgpu>(name, Default::default())
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            probe_ok(name)?;
            job.run::<burn::backend::Cuda>(name, Default::default())
        }
        "flex" | "ndarray" | "wgpu" | "cuda" => bail!(
            "--backend {name} is not compiled into this binary (compiled: {}); rebuild with `--features {name}`",
            COMPILED.join(", ")
        ),
        other => bail!("--backend {other:?} is unknown (allowed: flex, ndarray, wgpu, cuda; compiled: {})", COMPILED.join(", ")),
    }
}

#[allow(dead_code)]
fn probe_ok(name: &str) -> Result<()> {
    let s = probe(name);
    if s.starts_with("usable") {
        Ok(())
    } else {
        bail!("--backend {name} is compiled in but not usable here: {s}")
    }
}

/// Whether the backend can run a tiny op here (a missing GPU driver panics inside Burn: caught).
pub fn probe(name: &str) -> String {
    fn try_run<B: Backend>() -> String {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = std::panic::catch_unwind(|| {
            let d = B::Device::default();
            let t = burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], &d);
            t.sum().into_scalar().to_string()
        });
        std::panic::set_hook(prev);
        match r {
            Ok(_) => "usable (device found)".into(),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                format!("no usable device ({})", msg.lines().next().unwrap_or("initialisation failed"))
            }
        }
    }
    match name {
        #[cfg(feature = "flex")]
        "flex" => try_run::<burn::backend::Flex>(),
        #[cfg(feature = "ndarray")]
        "ndarray" => try_run::<burn::backend::NdArray>(),
        #[cfg(feature = "wgpu")]
        "wgpu" => try_run::<burn::backend::Wgpu>(),
        #[cfg(feature = "cuda")]
        "cuda" => try_run::<burn::backend::Cuda>(),
        _ => "not compiled in".into(),
    }
}
