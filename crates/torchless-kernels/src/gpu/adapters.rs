//! Enumerating and describing wgpu adapters.

pub fn backend_name(backend: wgpu::Backend) -> &'static str {
    match backend {
        wgpu::Backend::Vulkan => "vulkan",
        wgpu::Backend::Metal => "metal",
        wgpu::Backend::Dx12 => "dx12",
        wgpu::Backend::Gl => "gl",
        wgpu::Backend::BrowserWebGpu => "webgpu",
        wgpu::Backend::Noop => "noop",
    }
}

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    // The Vulkan loader complains on headless Linux when XDG_RUNTIME_DIR is unset.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: called before any other thread of ours reads the environment.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn rank(info: &wgpu::AdapterInfo) -> u32 {
    match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

/// Invocations a workgroup that torchless's kernels need (WebGPU's default limit; Vulkan guarantees only
/// 128, so a few compute-capable adapters fall short).
pub const MIN_WORKGROUP_INVOCATIONS: u32 = 256;

/// Why `adapter` cannot run torchless's kernels, or `None` when it can.
pub fn unfit_reason(adapter: &wgpu::Adapter) -> Option<String> {
    let compute = adapter.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS);
    unfit_reason_of(compute, &adapter.limits())
}

fn unfit_reason_of(compute_shaders: bool, l: &wgpu::Limits) -> Option<String> {
    if !compute_shaders {
        return Some("it has no compute shaders".into());
    }
    let most = l.max_compute_invocations_per_workgroup.min(l.max_compute_workgroup_size_x);
    (most < MIN_WORKGROUP_INVOCATIONS).then(|| {
        format!("it runs at most {most} invocations a workgroup and the kernels need {MIN_WORKGROUP_INVOCATIONS}")
    })
}

/// Adapters of the given backends that can run torchless's kernels, best first.
pub fn ranked_adapters(backends: wgpu::Backends) -> Vec<wgpu::Adapter> {
    if backends.is_empty() {
        return Vec::new();
    }
    let instance = instance(backends);
    let mut adapters: Vec<wgpu::Adapter> = pollster::block_on(instance.enumerate_adapters(backends))
        .into_iter()
        .filter(|a| unfit_reason(a).is_none())
        .collect();
    adapters.sort_by_key(|a| rank(&a.get_info()));
    adapters
}

/// What `torchless backends` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: &'static str,
    pub device_type: String,
    pub driver: String,
    pub subgroup_sizes: (u32, u32),
    pub subgroups: bool,
    pub f16: bool,
    /// "MxNxK ab->cr" for each cooperative-matrix configuration.
    pub cooperative_matrices: Vec<String>,
    pub max_storage_binding_bytes: u64,
    pub max_buffer_bytes: u64,
    pub max_storage_buffers_per_stage: u32,
    pub max_workgroup_invocations: u32,
    pub max_workgroup_storage_bytes: u32,
}

impl AdapterSummary {
    pub fn of(adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();
        let coop = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter
                .cooperative_matrix_properties()
                .iter()
                .map(|p| format!("{}x{}x{} {:?}->{:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.cr_type))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            name: info.name.clone(),
            backend: backend_name(info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            subgroup_sizes: (info.subgroup_min_size, info.subgroup_max_size),
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            f16: features.contains(wgpu::Features::SHADER_F16),
            cooperative_matrices: coop,
            max_storage_binding_bytes: limits.max_storage_buffer_binding_size,
            max_buffer_bytes: limits.max_buffer_size,
            max_storage_buffers_per_stage: limits.max_storage_buffers_per_shader_stage,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroup_storage_bytes: limits.max_compute_workgroup_storage_size,
        }
    }
}

/// Every adapter on Vulkan, Metal and DX12 that can run the kernels (`unfit_reason`), best first.
pub fn list_adapters() -> Vec<AdapterSummary> {
    let backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    ranked_adapters(backends).iter().map(AdapterSummary::of).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapters_that_cannot_run_the_kernels_say_why() {
        let default = wgpu::Limits::default();
        assert_eq!(unfit_reason_of(true, &default), None);
        assert_eq!(unfit_reason_of(false, &default).as_deref(), Some("it has no compute shaders"));
        let small = wgpu::Limits { max_compute_invocations_per_workgroup: 128, ..default.clone() };
        let why = unfit_reason_of(true, &small).unwrap();
        assert!(why.contains("at most 128 invocations") && why.contains("need 256"), "{why}");
        let narrow = wgpu::Limits { max_compute_workgroup_size_x: 64, ..default };
        assert!(unfit_reason_of(true, &narrow).unwrap().contains("at most 64"));
    }
}
