//! Choosing a backend: the CPU or a wgpu adapter (Metal, Vulkan, DX12).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::{KernelError, Result};
use crate::gpu::GpuContext;

/// Which backend to run on. `TORCHLESS_BACKEND` overrides the preference given in code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BackendPreference {
    /// The best GPU adapter, or the CPU (saying why) when there is none.
    #[default]
    Auto,
    Cpu,
    /// Any GPU adapter; an error when there is none.
    Gpu,
    Metal,
    Vulkan,
    Dx12,
}

impl BackendPreference {
    pub const NAMES: &'static str = "auto, cpu, gpu, metal, vulkan, dx12";

    /// The wgpu backends this preference may use (empty for the CPU).
    pub fn wgpu_backends(self) -> wgpu::Backends {
        match self {
            BackendPreference::Cpu => wgpu::Backends::empty(),
            BackendPreference::Auto | BackendPreference::Gpu => {
                wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12
            }
            BackendPreference::Metal => wgpu::Backends::METAL,
            BackendPreference::Vulkan => wgpu::Backends::VULKAN,
            BackendPreference::Dx12 => wgpu::Backends::DX12,
        }
    }

    /// The preference after the `TORCHLESS_BACKEND` environment variable, which wins when set.
    pub fn with_env_override(self) -> Result<Self> {
        match std::env::var("TORCHLESS_BACKEND") {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            _ => Ok(self),
        }
    }
}

impl FromStr for BackendPreference {
    type Err = KernelError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "gpu" => Ok(Self::Gpu),
            "metal" => Ok(Self::Metal),
            "vulkan" => Ok(Self::Vulkan),
            "dx12" => Ok(Self::Dx12),
            other => Err(KernelError::UnknownBackend(other.to_string())),
        }
    }
}

impl fmt::Display for BackendPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Auto => "auto",
            Self::Cpu => "cpu",
            Self::Gpu => "gpu",
            Self::Metal => "metal",
            Self::Vulkan => "vulkan",
            Self::Dx12 => "dx12",
        };
        f.write_str(s)
    }
}

/// A device that tensors live on and ops run on. Cheap to clone.
#[derive(Clone)]
pub enum Backend {
    Cpu,
    Gpu(Arc<GpuContext>),
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({}: {})", self.name(), self.device_name())
    }
}

impl PartialEq for Backend {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Backend::Cpu, Backend::Cpu) => true,
            (Backend::Gpu(a), Backend::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Backend {
    /// "cpu", or the wgpu backend: "vulkan", "metal", "dx12".
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu(ctx) => ctx.backend_name(),
        }
    }

    pub fn device_name(&self) -> String {
        match self {
            Backend::Cpu => cpu_name(),
            Backend::Gpu(ctx) => ctx.info().name.clone(),
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self, Backend::Gpu(_))
    }

    pub fn gpu(&self) -> Option<&Arc<GpuContext>> {
        match self {
            Backend::Gpu(ctx) => Some(ctx),
            Backend::Cpu => None,
        }
    }

    /// Waits until every recorded op has finished. Errors the GPU reported are returned here.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Backend::Cpu => Ok(()),
            Backend::Gpu(ctx) => ctx.synchronize(),
        }
    }

    /// Submits recorded work without waiting for it.
    pub fn flush(&self) -> Result<()> {
        match self {
            Backend::Cpu => Ok(()),
            Backend::Gpu(ctx) => ctx.flush(),
        }
    }

    /// Submits recorded work (without waiting) once enough launches are waiting to be worth a submission:
    /// a model calls it after each layer, so that the device starts early without paying a submission
    /// for every few launches.
    pub fn flush_some(&self) -> Result<()> {
        match self {
            Backend::Cpu => Ok(()),
            Backend::Gpu(ctx) => ctx.flush_some(),
        }
    }
}

/// Opens the backend asked for (after the `TORCHLESS_BACKEND` override). `Auto` takes the best GPU and
/// falls back to the CPU, saying why on stderr: when there is no GPU adapter, when it cannot be opened,
/// and when the best one is a software renderer (Mesa's llvmpipe, Microsoft's WARP), which runs the
/// kernels on the CPU far slower than the CPU backend's own code (tiny-llama on an idle 2-core machine:
/// 13-16 tok/s through llvmpipe, 319-339 on the CPU backend). Any explicit GPU preference is an error
/// when no fitting adapter exists, and takes a software renderer when that is all there is (the tests run
/// on one).
pub fn init_backend(preference: BackendPreference) -> Result<Backend> {
    let preference = preference.with_env_override()?;
    match preference {
        BackendPreference::Cpu => Ok(Backend::Cpu),
        BackendPreference::Auto => match auto_adapter().and_then(GpuContext::from_adapter) {
            Ok(ctx) => Ok(Backend::Gpu(Arc::new(ctx))),
            Err(e) => {
                eprintln!("torchless: using the CPU backend ({e})");
                Ok(Backend::Cpu)
            }
        },
        _ => {
            check_platform(preference)?;
            Ok(Backend::Gpu(Arc::new(GpuContext::new(preference)?)))
        }
    }
}

/// The adapter `Auto` opens: the best one, unless it is a software renderer.
fn auto_adapter() -> Result<wgpu::Adapter> {
    let adapter = GpuContext::best_adapter(BackendPreference::Auto)?;
    let info = adapter.get_info();
    if info.device_type == wgpu::DeviceType::Cpu {
        return Err(KernelError::SoftwareAdapter { adapter: info.name });
    }
    Ok(adapter)
}

fn check_platform(preference: BackendPreference) -> Result<()> {
    let (available, platform) = match preference {
        BackendPreference::Metal => (cfg!(any(target_os = "macos", target_os = "ios")), "macOS"),
        BackendPreference::Dx12 => (cfg!(target_os = "windows"), "Windows"),
        BackendPreference::Vulkan => (!cfg!(any(target_os = "macos", target_os = "ios")), "Linux or Windows"),
        _ => (true, ""),
    };
    if available {
        Ok(())
    } else {
        Err(KernelError::BackendUnavailable {
            requested: preference.to_string(),
            reason: format!(
                "it exists only on {platform}; this is {}. Use `gpu` to take any adapter, or `cpu`",
                std::env::consts::OS
            ),
        })
    }
}

fn cpu_name() -> String {
    static MODEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let model = MODEL.get_or_init(|| cpu_model().unwrap_or_else(|| std::env::consts::ARCH.to_string()));
    let threads = rayon::current_num_threads();
    format!("{model} ({threads} thread{})", if threads == 1 { "" } else { "s" })
}

/// The processor's marketing name: macOS's sysctl, elsewhere /proc/cpuinfo (absent on Windows).
fn cpu_model() -> Option<String> {
    if cfg!(target_os = "macos") {
        let out = std::process::Command::new("sysctl").args(["-n", "machdep.cpu.brand_string"]).output().ok()?;
        let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
        return (out.status.success() && !name.is_empty()).then_some(name);
    }
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split(':').nth(1)?.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_never_takes_a_software_renderer() {
        match GpuContext::best_adapter(BackendPreference::Auto) {
            Ok(best) if best.get_info().device_type == wgpu::DeviceType::Cpu => {
                let err = auto_adapter().expect_err("a software renderer must not be Auto's pick");
                assert!(matches!(err, KernelError::SoftwareAdapter { .. }), "{err}");
                assert!(err.to_string().contains(&best.get_info().name), "{err}");
            }
            Ok(best) => assert_eq!(auto_adapter().unwrap().get_info().name, best.get_info().name),
            Err(_) => assert!(matches!(auto_adapter(), Err(KernelError::NoAdapter { .. }))),
        }
    }
}
