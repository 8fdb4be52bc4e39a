//! `torchless bench`: validate each op against the CPU implementation, then time it beside the
//! device's own copy bandwidth measured in the same run.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use torchless_kernels::bench::{self as kbench, BenchCase};
use torchless_kernels::ops::convert;
use torchless_kernels::{Backend, BackendPreference, DType, KernelError, Tensor, init_backend};

#[derive(Args)]
pub struct BenchArgs {
    /// cpu, gpu, auto, metal, vulkan or dx12.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Comma-separated op names (default: all). `--ops list` prints them.
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Working set of each op in MiB (inputs plus outputs).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65536), allow_negative_numbers = true)]
    mib: u64,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Minimum timed seconds per op.
    /// GPU clocks take a while to ramp up, so shorter runs understate the device.
    #[arg(long, default_value_t = Timing::DEFAULT.seconds, allow_negative_numbers = true)]
    seconds: f64,
    /// Seconds each op runs untimed before its timed run, so that it starts at steady clocks: the
    /// correctness check before it leaves the GPU idle while the CPU computes the reference, and an
    /// H200 drops to 345 MHz within a second of idling (1 GiB ops read 10-17 % slower without this).
    #[arg(long, default_value_t = Timing::DEFAULT.warmup, allow_negative_numbers = true)]
    warmup: f64,
}

#[derive(Serialize)]
struct Row {
    op: String,
    dtype: String,
    shape: String,
    ms: f64,
    gbps: f64,
    pct_of_copy: f64,
    max_abs_err: f64,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    tflops: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(args: &BenchArgs) -> Result<bool, KernelError> {
    let all = kbench::op_names();
    if args.ops.iter().any(|o| o == "list") {
        outln!("{}", all.join("\n"));
        return Ok(true);
    }
    let ops: Vec<String> =
        if args.ops.is_empty() { all.iter().map(|s| s.to_string()).collect() } else { args.ops.clone() };
    if let Some(bad) = ops.iter().find(|o| !all.contains(&o.as_str())) {
        return Err(KernelError::Argument {
            op: "bench",
            name: "--ops",
            value: bad.clone(),
            reason: format!("unknown op; known: {}", all.join(", ")),
        });
    }
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err(KernelError::Argument {
            op: "bench",
            name: "--seconds",
            value: args.seconds.to_string(),
            reason: "must be in (0, 60]".into(),
        });
    }
    if !(0.0..=60.0).contains(&args.warmup) {
        return Err(KernelError::Argument {
            op: "bench",
            name: "--warmup",
            value: args.warmup.to_string(),
            reason: "must be in [0, 60]".into(),
        });
    }
    let timing = Timing { warmup: args.warmup, seconds: args.seconds };
    let backend = init_backend(args.backend.parse::<BackendPreference>()?)?;
    let bytes = args.mib << 20;
    eprintln!("bench on {} ({}), {} MiB per op", backend.name(), backend.device_name(), args.mib);

    let copy_gbps = copy_bandwidth(&backend, bytes, timing)?;
    eprintln!("device copy bandwidth: {copy_gbps:.1} GB/s");

    let bar = ProgressBar::new(ops.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Vec::new();
    for op in &ops {
        bar.set_message(op.clone());
        let row = kbench::case(op, bytes).and_then(|case| bench_case(&backend, &case, copy_gbps, timing));
        rows.push(row.unwrap_or_else(|e| Row {
            op: op.clone(),
            dtype: String::new(),
            shape: String::new(),
            ms: f64::NAN,
            gbps: f64::NAN,
            pct_of_copy: f64::NAN,
            max_abs_err: f64::NAN,
            ok: false,
            tflops: None,
            error: Some(e.to_string()),
        }));
        bar.inc(1);
    }
    bar.finish_and_clear();

    if args.json {
        outln!("{}", serde_json::to_string_pretty(&rows).expect("rows serialize"));
    } else {
        print_table(&rows, copy_gbps);
    }
    Ok(rows.iter().all(|r| r.ok))
}

fn bench_case(backend: &Backend, case: &BenchCase, copy_gbps: f64, timing: Timing) -> Result<Row, KernelError> {
    // The buffers earlier ops left in the pool count against its cap: at a 1 GiB working set they would
    // leave no room for this op's output, which would then be freed and created anew every call, and a
    // new buffer costs wgpu a zero-fill of its whole size before the op writes it.
    if let Backend::Gpu(ctx) = backend {
        ctx.trim_pool();
    }
    let inputs = case.inputs_on(backend)?;
    let report = case.check(backend, &inputs)?;
    let per_run = time_it(backend, timing, || (case.run)(&inputs).map(drop))?;
    let secs = per_run.as_secs_f64();
    let gbps = case.bytes as f64 / secs / 1e9;
    Ok(Row {
        op: case.op.to_string(),
        dtype: case.dtype.to_string(),
        shape: case.shape.clone(),
        ms: secs * 1e3,
        gbps,
        pct_of_copy: 100.0 * gbps / copy_gbps,
        max_abs_err: report.max_abs_err,
        ok: report.ok,
        tflops: (case.flops > 0).then(|| case.flops as f64 / secs / 1e12),
        error: (!report.ok).then(|| {
            format!(
                "max abs error {:.3e} at index {} (got {}, want {})",
                report.max_abs_err, report.index, report.got, report.want
            )
        }),
    })
}

/// How long to run an op untimed, then timed.
#[derive(Clone, Copy)]
pub struct Timing {
    pub warmup: f64,
    pub seconds: f64,
}

impl Timing {
    /// `torchless bench`'s defaults, also used by `bench-model` for its copy bandwidth.
    pub const DEFAULT: Timing = Timing { warmup: 0.5, seconds: 1.0 };
}

/// Mean time of one call: untimed calls for `warmup` seconds (at least one), then batches of calls
/// until `seconds` pass. On a GPU the host records each batch while the device runs the one before (two
/// in flight at most), as a model's decode loop does: the figure is the device's time per call, where
/// recording and running in series would add the host's recording time to every small op.
pub fn time_it(
    backend: &Backend,
    timing: Timing,
    mut f: impl FnMut() -> Result<(), KernelError>,
) -> Result<Duration, KernelError> {
    let warmup = Duration::from_secs_f64(timing.warmup);
    let start = Instant::now();
    loop {
        f()?;
        backend.synchronize()?;
        if start.elapsed() >= warmup {
            break;
        }
    }
    let budget = Duration::from_secs_f64(timing.seconds);
    let start = Instant::now();
    let mut runs = 0u32;
    let mut batch = 1u32;
    let mut in_flight = None;
    while start.elapsed() < budget || runs < 3 {
        for _ in 0..batch {
            f()?;
        }
        if let Some(ctx) = backend.gpu() {
            let submitted = ctx.submit()?;
            if let Some(previous) = std::mem::replace(&mut in_flight, submitted) {
                ctx.wait_for(previous)?;
            }
        }
        runs += batch;
        batch = (batch * 2).min(64);
    }
    backend.synchronize()?;
    Ok(start.elapsed() / runs)
}

/// Bytes moved per second by the device's own copy (read + write) of half the working set.
pub fn copy_bandwidth(backend: &Backend, bytes: u64, timing: Timing) -> Result<f64, KernelError> {
    let half = (bytes / 2).max(16) & !15;
    match backend {
        Backend::Cpu => {
            let src = vec![1u8; half as usize];
            let mut dst = vec![0u8; half as usize];
            let t = time_it(backend, timing, || {
                dst.copy_from_slice(std::hint::black_box(&src));
                Ok(())
            })?;
            std::hint::black_box(&dst);
            Ok(2.0 * half as f64 / t.as_secs_f64() / 1e9)
        }
        Backend::Gpu(ctx) => {
            // The better of the DMA copy and a copy kernel: on some drivers (NVIDIA through Vulkan) the
            // DMA engine reaches only a third of what shader loads and stores do.
            let src = Tensor::zeros(backend, &[half as usize / 4], DType::F32)?;
            let dst = Tensor::zeros(backend, &[half as usize / 4], DType::F32)?;
            let (s, d) = (src.gpu_buffer().expect("gpu").raw(), dst.gpu_buffer().expect("gpu").raw());
            let dma = time_it(backend, timing, || ctx.copy_buffer(s, 0, d, 0, half))?;
            let kernel = time_it(backend, timing, || convert::copy_into(&src, &dst))?;
            let gbps = |t: Duration| 2.0 * half as f64 / t.as_secs_f64() / 1e9;
            // The same kernel and buffers on random data, for comparison only (not the denominator): if
            // it is slower than on zeros, the device compresses zero-filled memory, and the ops (which all
            // move random data) cannot reach the zeros' figure. The bench's `copy` op is this kernel on
            // random data into a pooled output buffer.
            let random = kbench::random_tensor(7, &[half as usize / 4], DType::F32, -1.0, 1.0)?.to_backend(backend)?;
            let kernel_random = time_it(backend, timing, || convert::copy_into(&random, &dst))?;
            eprintln!(
                "copy: DMA {:.1} GB/s, copy kernel {:.1} GB/s (on random data {:.1} GB/s)",
                gbps(dma),
                gbps(kernel),
                gbps(kernel_random)
            );
            Ok(gbps(dma.min(kernel)))
        }
    }
}

fn print_table(rows: &[Row], copy_gbps: f64) {
    outln!(
        "{:<16} {:<5} {:<22} {:>10} {:>9} {:>7} {:>10} {:>8} {:>4}",
        "op",
        "dtype",
        "shape",
        "time ms",
        "GB/s",
        "% copy",
        "max err",
        "TFLOP/s",
        "ok"
    );
    for r in rows {
        if let Some(e) = &r.error
            && r.dtype.is_empty()
        {
            outln!("{:<16} error: {e}", r.op);
            continue;
        }
        outln!(
            "{:<16} {:<5} {:<22} {:>10.4} {:>9.1} {:>6.1}% {:>10.2e} {:>8} {:>4}",
            r.op,
            r.dtype,
            r.shape,
            r.ms,
            r.gbps,
            r.pct_of_copy,
            r.max_abs_err,
            r.tflops.map_or("-".to_string(), |t| format!("{t:.2}")),
            if r.ok { "yes" } else { "NO" }
        );
        if let Some(e) = &r.error {
            outln!("    {e}");
        }
    }
    outln!("device copy bandwidth: {copy_gbps:.1} GB/s (read + write)");
}
