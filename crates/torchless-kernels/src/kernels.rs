//! WGSL sources. Each op family has one file in `kernels/`; `common.wgsl` is prepended to every one.

/// One WGSL file, compiled once per device and cached.
#[derive(Debug)]
pub struct KernelSource {
    pub name: &'static str,
    pub source: &'static str,
}

pub const COMMON: &str = include_str!("../kernels/common.wgsl");

impl KernelSource {
    /// The module text: the file's `enable` directives (which must come first), then the common
    /// prelude, then the rest of the file.
    pub fn compose(&self) -> String {
        compose(self.source)
    }
}

pub fn compose(source: &str) -> String {
    let (enables, body): (Vec<&str>, Vec<&str>) =
        source.lines().partition(|l| l.trim_start().starts_with("enable ") || l.trim_start().starts_with("requires "));
    let mut out = String::with_capacity(COMMON.len() + source.len() + 64);
    for e in enables {
        out.push_str(e);
        out.push('\n');
    }
    out.push_str(COMMON);
    out.push('\n');
    for l in body {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Declares a `KernelSource` for `kernels/<name>.wgsl`.
#[macro_export]
macro_rules! kernel_source {
    ($ident:ident, $name:literal) => {
        pub static $ident: $crate::kernels::KernelSource = $crate::kernels::KernelSource {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/kernels/", $name, ".wgsl")),
        };
    };
}
