//! Shared by the kernel tests and `torchless bench`: tolerances, error measurement, random inputs and
//! the GPU used by tests.

use std::io::Write;
use std::sync::OnceLock;

use crate::backend::{Backend, BackendPreference};
use crate::dtype::DType;
use crate::gpu::GpuContext;

/// Sizes that are not multiples of 4, of any subgroup size or of the workgroup size.
pub const RAGGED: &[usize] = &[1, 3, 31, 32, 33, 255, 257, 1000, 4099];

/// |got − want| ≤ atol + rtol·|want|.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    /// Elementwise results, rounded once to the output dtype.
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F32 => Tolerance { atol: 1e-5, rtol: 1e-5 },
            DType::F16 => Tolerance { atol: 1e-3, rtol: 2e-3 },
            DType::BF16 => Tolerance { atol: 1e-2, rtol: 1.6e-2 },
            DType::U32 | DType::I32 => Tolerance { atol: 0.0, rtol: 0.0 },
        }
    }

    pub fn scaled(self, factor: f64) -> Tolerance {
        Tolerance { atol: self.atol * factor, rtol: self.rtol * factor }
    }
}

/// The worst difference between two sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorReport {
    pub max_abs_err: f64,
    pub index: usize,
    pub got: f64,
    pub want: f64,
    /// Whether every element is within the tolerance (NaN and ±inf must match exactly).
    pub ok: bool,
}

/// Compares `got` with `want` under `tol`; lengths must match.
pub fn compare(got: &[f32], want: &[f64], tol: Tolerance) -> ErrorReport {
    assert_eq!(got.len(), want.len(), "compared sequences differ in length");
    let (mut max_err, mut max_index) = (0.0f64, 0usize);
    let mut worst_violation: Option<(f64, usize)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let (err, within) = if !w.is_finite() || !g.is_finite() {
            let same = (w.is_nan() && g.is_nan()) || w == g;
            (if same { 0.0 } else { f64::INFINITY }, same)
        } else {
            let err = (g - w).abs();
            (err, err <= tol.atol + tol.rtol * w.abs())
        };
        if err > max_err {
            (max_err, max_index) = (err, i);
        }
        if !within && worst_violation.is_none_or(|(e, _)| err > e) {
            worst_violation = Some((err, i));
        }
    }
    let index = worst_violation.map_or(max_index, |(_, i)| i);
    ErrorReport {
        max_abs_err: max_err,
        index,
        got: got.get(index).map_or(0.0, |&g| g as f64),
        want: want.get(index).copied().unwrap_or(0.0),
        ok: worst_violation.is_none(),
    }
}

/// Panics with the worst error and where it is when `got` is not within `tol` of `want`.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tolerance) {
    let r = compare(got, want, tol);
    assert!(
        r.ok,
        "{what}: max abs error {:.3e} at index {} (got {}, want {}; tolerance atol {:.1e} rtol {:.1e}, {} elements)",
        r.max_abs_err,
        r.index,
        r.got,
        r.want,
        tol.atol,
        tol.rtol,
        got.len()
    );
}

/// A small deterministic generator (SplitMix64) so tests and benches need no extra crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let unit = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * unit
    }
    pub fn below(&mut self, n: u32) -> u32 {
        (((self.next_u64() >> 32) * n as u64) >> 32) as u32
    }
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
}

/// Rounds values through `dtype`, so references see exactly what the kernels see.
pub fn round_to(values: &[f32], dtype: DType) -> Vec<f32> {
    crate::tensor::bytes_to_f32(&crate::tensor::f32_to_bytes(values, dtype), dtype)
}

pub fn to_f64(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| v as f64).collect()
}

/// The GPU shared by the tests of this process. Without an adapter it returns `None` after telling the
/// terminal that GPU tests are skipped, unless `TORCHLESS_REQUIRE_GPU=1` (set by CI), where it panics.
/// Made with subnormals flushed ([`with_flushed_subnormals`]), as GPUs run f32 arithmetic.
pub fn test_gpu() -> Option<Backend> {
    static GPU: OnceLock<Option<Backend>> = OnceLock::new();
    GPU.get_or_init(|| {
        let required = std::env::var("TORCHLESS_REQUIRE_GPU").is_ok_and(|v| v == "1" || v == "true");
        match with_flushed_subnormals(|| GpuContext::new(BackendPreference::Gpu)) {
            Ok(ctx) => Some(Backend::Gpu(std::sync::Arc::new(ctx))),
            Err(e) if required => panic!("TORCHLESS_REQUIRE_GPU is set but no GPU is usable: {e}"),
            Err(e) => {
                // Written past the test harness's capture, so a skip is never silent.
                let _ = writeln!(std::io::stderr(), "torchless: GPU tests SKIPPED: {e}");
                None
            }
        }
    })
    .clone()
}

/// Runs `f` with this thread's x86 floating-point control set to flush subnormal results to zero and read
/// subnormal inputs as zero (MXCSR FTZ and DAZ), then restores it. Threads started meanwhile inherit the
/// setting: a software Vulkan driver's (lavapipe's) workers, started with the device, then run kernels
/// as NVIDIA's driver does, which flushes f32 subnormals. Lavapipe keeps them otherwise, and tests passed
/// there that failed on an H100 (the norms' rows near f32's largest, whose 1/rms is subnormal). Other
/// architectures run `f` as it is.
pub fn with_flushed_subnormals<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(target_arch = "x86_64")]
    {
        const FTZ_DAZ: u32 = 0x8040;
        let mut saved = 0u32;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register through a valid u32;
        // only its FTZ and DAZ bits change, and they are restored before returning.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &mut saved, options(nostack)) };
        let flushed = saved | FTZ_DAZ;
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &flushed, options(nostack)) };
        let out = f();
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &saved, options(nostack)) };
        out
    }
    #[cfg(not(target_arch = "x86_64"))]
    f()
}

/// Every bench case of `ops` at about `bytes` bytes checks out on every test backend (the CPU against its
/// f64 reference, a GPU against the CPU).
#[cfg(test)]
pub fn assert_bench_cases_validate(ops: &[&str], bytes: u64) {
    for op in ops {
        let case = crate::bench::case(op, bytes).unwrap();
        for backend in test_backends() {
            let inputs = case.inputs_on(&backend).unwrap();
            let r = case.check(&backend, &inputs).unwrap();
            assert!(r.ok, "bench {op} on {}: {r:?}", backend.name());
        }
    }
}

/// The backends a test runs on: the CPU, and the GPU when there is one.
pub fn test_backends() -> Vec<Backend> {
    let mut v = vec![Backend::Cpu];
    v.extend(test_gpu());
    v
}

/// A kernel's composed module, parsed by naga, with its type layouts.
#[cfg(test)]
fn wgsl_layout(kernel: &crate::kernels::KernelSource) -> (naga::Module, naga::proc::Layouter) {
    let module = naga::front::wgsl::parse_str(&kernel.compose()).expect("kernel parses");
    let mut layouter = naga::proc::Layouter::default();
    layouter.update(module.to_ctx()).expect("layout");
    (module, layouter)
}

/// The byte size naga computes for the WGSL struct `name` of `kernel`, to check that a Rust parameter
/// struct matches its WGSL twin.
#[cfg(test)]
pub fn wgsl_struct_size(kernel: &crate::kernels::KernelSource, name: &str) -> u32 {
    let (module, layouter) = wgsl_layout(kernel);
    let (handle, _) = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("struct {name} not found in {}", kernel.name));
    layouter[handle].size
}

/// The value of `kernel`'s module-scope `const name: u32`, to check a host-side twin of it.
#[cfg(test)]
pub fn wgsl_const_u32(kernel: &crate::kernels::KernelSource, name: &str) -> u32 {
    let module = naga::front::wgsl::parse_str(&kernel.compose()).expect("kernel parses");
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("const {name} not found in {}", kernel.name));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("const {name} of {} is not a u32 literal: {e:?}", kernel.name),
    }
}

/// The bytes of workgroup memory that entry point `entry` of `kernel` uses (its `var<workgroup>`s as
/// naga lays them out), to check a host-side figure of it.
#[cfg(test)]
pub fn wgsl_workgroup_bytes(kernel: &crate::kernels::KernelSource, entry: &str) -> u32 {
    let (module, layouter) = wgsl_layout(kernel);
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .expect("kernel validates");
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .unwrap_or_else(|| panic!("entry point {entry} not found in {}", kernel.name));
    let uses = info.get_entry_point(index);
    module
        .global_variables
        .iter()
        .filter(|&(h, g)| g.space == naga::AddressSpace::WorkGroup && !uses[h].is_empty())
        .map(|(_, g)| layouter[g.ty].size)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards [`with_flushed_subnormals`]: on lavapipe (x86_64, where CI runs the GPU tests) a kernel's
    /// subnormal result comes back as 0, as on NVIDIA. Other adapters flush or not as their hardware does.
    #[test]
    fn lavapipe_flushes_subnormals_as_gpus_do() {
        let Some(gpu) = test_gpu() else { return };
        if !cfg!(target_arch = "x86_64") || !gpu.device_name().contains("llvmpipe") {
            eprintln!("torchless: subnormal flush check skipped: the adapter is {}", gpu.device_name());
            return;
        }
        let tiny = f32::MIN_POSITIVE; // 2^-126, the smallest normal
        let x = crate::Tensor::from_slice(&gpu, &[tiny, 1.0], &[2]).unwrap();
        let half = crate::ops::elementwise::scale(&x, 0.5).unwrap().to_f32_vec().unwrap();
        assert_eq!(half, [0.0, 0.5], "2^-127 (subnormal) must be flushed to 0 on the test GPU");
    }
}
