//! WGSL sources. Each op family has one file in `kernels/`, or a body file plus a small file holding the
//! part that differs between variants (`reduce_workgroup.wgsl` / `reduce_subgroup.wgsl` after `gemv.wgsl`
//! or `qgemv.wgsl`); `common.wgsl` is prepended to every module.

/// One shader module: one or more files of `kernels/`, composed in order and compiled once per device
/// and cached under `name`.
#[derive(Debug)]
pub struct KernelSource {
    /// The module's name, unique among kernel sources: it keys the module and pipeline caches.
    pub name: &'static str,
    /// (file stem, text) of each part, in composition order.
    pub parts: &'static [(&'static str, &'static str)],
    /// Whether the compiler clamps every array index (naga's bounds checks; on Vulkan with robust buffer
    /// access the driver bounds storage buffers either way). Off only for a kernel whose every index is in
    /// range by construction, as its declaration argues, and where the clamps were measured to cost.
    pub bounds_checks: bool,
}

pub const COMMON: &str = include_str!("../kernels/common.wgsl");

impl KernelSource {
    /// The module text: the parts' `enable` / `requires` directives (which must come first), then the
    /// common prelude, then the rest of each part in order.
    pub fn compose(&self) -> String {
        compose(&self.parts.iter().map(|&(_, text)| text).collect::<Vec<_>>())
    }
}

/// Composes a module from part texts (see [`KernelSource::compose`]).
pub fn compose(parts: &[&str]) -> String {
    let is_directive = |l: &&str| l.trim_start().starts_with("enable ") || l.trim_start().starts_with("requires ");
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = String::with_capacity(COMMON.len() + len + 64);
    for l in parts.iter().flat_map(|p| p.lines()).filter(is_directive) {
        out.push_str(l);
        out.push('\n');
    }
    out.push_str(COMMON);
    out.push('\n');
    for l in parts.iter().flat_map(|p| p.lines()).filter(|l| !is_directive(l)) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Declares a `KernelSource`: `kernel_source!(IDENT, "name")` for `kernels/<name>.wgsl`, or
/// `kernel_source!(IDENT, "name", ["a", "b"])` for `kernels/a.wgsl` followed by `kernels/b.wgsl`;
/// `kernel_source!(unchecked IDENT, ...)` turns the compiler's index clamps off (see
/// [`KernelSource::bounds_checks`]).
#[macro_export]
macro_rules! kernel_source {
    ($ident:ident, $name:literal) => {
        $crate::kernel_source!($ident, $name, [$name]);
    };
    ($ident:ident, $name:literal, [$($part:literal),+ $(,)?]) => {
        $crate::kernel_source!(@make $ident, $name, true, [$($part),+]);
    };
    (unchecked $ident:ident, $name:literal) => {
        $crate::kernel_source!(@make $ident, $name, false, [$name]);
    };
    (unchecked $ident:ident, $name:literal, [$($part:literal),+ $(,)?]) => {
        $crate::kernel_source!(@make $ident, $name, false, [$($part),+]);
    };
    (@make $ident:ident, $name:literal, $checks:literal, [$($part:literal),+]) => {
        pub static $ident: $crate::kernels::KernelSource = $crate::kernels::KernelSource {
            name: $name,
            parts: &[$(($part, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", $part, ".wgsl")))),+],
            bounds_checks: $checks,
        };
    };
}

/// Every kernel source the crate compiles, for tests that check each composed module.
pub fn all() -> Vec<&'static KernelSource> {
    use crate::ops::*;
    vec![
        &attention::ATTENTION,
        &attention::ATTENTION_SUBGROUP,
        &attention::ATTENTION_COOP,
        &attention::ATTENTION_COOP_SUBGROUP_SYNC,
        &convert::CONVERT,
        &elementwise::ELEMENTWISE,
        &gemm::GEMM,
        &gemm::GEMM_COOP,
        &gemv::GEMV,
        &gemv::GEMV_SUBGROUP,
        &gemv::GEMV6,
        &gemv::GEMV6_SUBGROUP,
        &mlstm::MLSTM,
        &norm::NORM,
        &norm::NORM_SUBGROUP,
        &qmatmul::gpu::QGEMV_X,
        &qmatmul::gpu::QGEMV,
        &qmatmul::gpu::QMATMUL_COOP,
        &qmatmul::gpu::QGEMV_SUBGROUP,
        &qmatmul::gpu::QMATMUL,
        &rope::ROPE,
        &sample::SAMPLE,
        &select::SELECT,
        &softmax::SOFTMAX,
        &softmax::SOFTMAX_SUBGROUP,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = all().iter().map(|k| k.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n, "two kernel sources share a name (and would share a cached module)");
    }

    #[test]
    fn compose_hoists_directives_and_keeps_part_order() {
        let m = compose(&["// a\nfn a() {}\n", "enable f16;\nfn b() {}\n"]);
        assert!(m.starts_with("enable f16;\n"), "{m}");
        let (a, b) = (m.find("fn a()").unwrap(), m.find("fn b()").unwrap());
        assert!(m.find(COMMON).unwrap() < a && a < b, "{m}");
        assert_eq!(m.matches("enable ").count(), 1);
    }
}
