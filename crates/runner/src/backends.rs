//! Backend selection by name among the compiled-in features: the one place backend types appear.
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;

/// Work to run on one backend.
pub trait BackendJob {
    fn run<B: demiurgic_model::DecodeOps>(self, backend: &str, device: B::Device) -> Result<()>;
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
            wgpu_memory_setup()?;
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
        other => bail!(
            "--backend {other:?} is unknown (allowed: flex, ndarray, wgpu, cuda; compiled: {})",
            COMPILED.join(", ")
        ),
    }
}

/// `DEMIURGIC_WGPU_MEMORY=subslices|exclusive` picks CubeCL's memory management for wgpu before
/// the device is first used (default: CubeCL's, sub-slices of pages sized by the adapter's
/// `max_storage_buffer_binding_size`). `exclusive` gives every tensor its own buffer: the fix
/// for "No memory pool big enough" when one tensor outgrows the pools' pages.
#[cfg(feature = "wgpu")]
fn wgpu_memory_setup() -> Result<()> {
    use burn::backend::wgpu::{graphics::AutoGraphicsApi, init_setup, MemoryConfiguration, RuntimeOptions, WgpuDevice};
    let memory_config = match std::env::var("DEMIURGIC_WGPU_MEMORY").ok().as_deref() {
        None | Some("") => return Ok(()),
        Some("subslices") => MemoryConfiguration::SubSlices,
        Some("exclusive") => MemoryConfiguration::ExclusivePages,
        Some(other) => bail!("DEMIURGIC_WGPU_MEMORY={other:?} is unknown (allowed: subslices, exclusive)"),
    };
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(|| {
        init_setup::<AutoGraphicsApi>(&WgpuDevice::default(), RuntimeOptions { memory_config, ..Default::default() });
    });
    std::panic::set_hook(prev);
    if r.is_err() {
        bail!("--backend wgpu is compiled in but not usable here: no Vulkan/Metal/DX12 adapter could be set up");
    }
    Ok(())
}

#[allow(dead_code)]
fn probe_ok(name: &str) -> Result<()> {
    let s = probe(name);
    if s.starts_with("usable") {
        Ok(())
    } else {
        let needs = match name {
            "cuda" => "it needs an NVIDIA GPU, its driver (libcuda.so) and NVRTC (libnvrtc.so)",
            "wgpu" => "it needs a Vulkan, Metal or DX12 adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers libvulkan1)",
            _ => "",
        };
        bail!("--backend {name} is compiled in but not usable here ({needs}): {s}")
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
