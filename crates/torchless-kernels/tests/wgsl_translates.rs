//! Every kernel module (each `KernelSource`, composed from its parts as the GPU backend builds it) parses,
//! validates, and translates to MSL (Metal) and SPIR-V (Vulkan) with naga, with no GPU: a kernel that
//! cannot reach Metal fails here, on Linux.

use std::collections::BTreeSet;
use std::path::Path;

use torchless_kernels::kernels;

/// The stems of the .wgsl files in kernels/, common.wgsl aside (it is prepended to every module).
fn kernel_files() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    std::fs::read_dir(&dir)
        .expect("kernels/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .filter(|s| s != "common")
        .collect()
}

#[test]
fn every_kernel_file_is_part_of_a_kernel_source() {
    let used: BTreeSet<String> =
        kernels::all().iter().flat_map(|k| k.parts.iter().map(|&(file, _)| file.to_owned())).collect();
    let files = kernel_files();
    assert!(!files.is_empty(), "no kernels found");
    let unused: Vec<_> = files.difference(&used).collect();
    assert!(unused.is_empty(), "kernel files in no KernelSource (add them to kernels::all()): {unused:?}");
}

fn validate(name: &str, source: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(source)
        .unwrap_or_else(|e| panic!("{name}: WGSL parse error:\n{}", e.emit_to_string(source)));
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: validation error:\n{}", e.emit_to_string(source)));
    (module, info)
}

#[test]
fn every_kernel_validates_and_translates_to_msl_and_spirv() {
    for kernel in kernels::all() {
        let name = kernel.name;
        let source = kernel.compose();
        let (module, info) = validate(name, &source);
        // Overrides keep their defaults here; pipelines set them at creation. naga 30 panics (an assertion
        // in its HandleVec) when a module-scope expression, such as a workgroup array's size, uses an
        // override declared after other overrides whose own declarations come later still: name the kernel.
        let processed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            naga::back::pipeline_constants::process_overrides(&module, &info, None, &Default::default())
                .map(|(m, i)| (m.into_owned(), i))
                .map_err(|e| e.to_string())
        }));
        let (module, info) = match processed {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => panic!("{name}: overrides: {e}"),
            Err(_) => panic!(
                "{name}: naga panicked processing the overrides: declare each `override` before the first \
                 module-scope use of any override declared after it (e.g. with the others at the top of its file)"
            ),
        };

        let msl_options = naga::back::msl::Options { lang_version: (3, 0), ..Default::default() };
        naga::back::msl::write_string(&module, &info, &msl_options, &naga::back::msl::PipelineOptions::default())
            .unwrap_or_else(|e| panic!("{name}: MSL translation failed: {e}"));

        let spv_options = naga::back::spv::Options { lang_version: (1, 3), ..Default::default() };
        for ep in &module.entry_points {
            let pipeline = naga::back::spv::PipelineOptions { shader_stage: ep.stage, entry_point: ep.name.clone() };
            naga::back::spv::write_vec(&module, &info, &spv_options, Some(&pipeline))
                .unwrap_or_else(|e| panic!("{name}::{}: SPIR-V translation failed: {e}", ep.name));
        }
    }
}
