//! `torchless bench-model`: load time, prefill and decode speed of a model beside its bandwidth roofline
//! (weight bytes per token over the copy bandwidth measured in the same run). Token ids are random, so
//! any weight directory works, tokenizer or not. For an xLSTM the prefill is timed twice: chunkwise (what
//! `generate` does) and with the mLSTM stepped token by token.

use std::time::Instant;

use clap::Args;
use serde::Serialize;
use torchless::generate::{greedy_decode, pick, sampled_decode};
use torchless::model::Logits;
use torchless::sampling::{Sampler, SamplingParams};
use torchless::{BackendPreference, Error, init_backend};
use torchless_kernels::gpu::{GpuContext, KernelTime};
use torchless_kernels::ops::select;
use torchless_kernels::testing::Rng;

use crate::bench::{Timing, copy_bandwidth};

/// Decode steps timed kernel by kernel under `--profile`.
const PROFILE_STEPS: usize = 8;

#[derive(Args)]
pub struct BenchModelArgs {
    /// A model directory, a GGUF file or a built-in model name.
    #[arg(long, default_value = torchless::builtin::DEFAULT_MODEL)]
    model: String,
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Context already in the KV cache when decoding starts.
    #[arg(long, default_value_t = 512, allow_negative_numbers = true)]
    context: usize,
    /// Tokens to decode (greedy, argmax on the device, one read-back per token).
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    decode_tokens: usize,
    /// Decode with `generate`'s default sampling (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05,
    /// repeat penalty 1.1) instead of greedily: drawn on the device where `generate` would (a GPU), on the
    /// host otherwise.
    #[arg(long)]
    sampling: bool,
    /// Length of the timed prefill (0 skips it).
    #[arg(long, default_value_t = 2048, allow_negative_numbers = true)]
    prefill_tokens: usize,
    #[arg(long)]
    json: bool,
    /// Also time every kernel of some decode steps and of one prefill with GPU timestamps and print where
    /// the time goes.
    #[arg(long)]
    profile: bool,
    #[command(flatten)]
    pub load: crate::run::LoadOptions,
}

#[derive(Serialize)]
struct Report {
    model: String,
    device: String,
    /// The KV cache's dtype (`--kv-cache`; absent for an xLSTM, which has none).
    kv_cache: Option<String>,
    weight_gb_per_token: f64,
    load_s: f64,
    copy_gbps: f64,
    context: usize,
    decode_tokens: usize,
    /// "greedy" or "sampling" (`--sampling`).
    decode: &'static str,
    decode_tok_s: f64,
    /// Host time per decode token spent recording the forward pass (and handing its batches over).
    decode_record_ms: f64,
    /// Host time per decode token spent waiting for the device (near 0: bound by the host).
    decode_wait_ms: f64,
    /// GPU: per decode token, kernel launches, bind groups made (cache misses), submissions and the time
    /// the submission thread spent finishing and submitting them (beside the recording, not in it).
    decode_launches: Option<f64>,
    decode_bind_groups_made: Option<f64>,
    decode_buffers_made: Option<f64>,
    decode_submits: Option<f64>,
    decode_submit_ms: Option<f64>,
    roofline_tok_s: f64,
    pct_of_roofline: f64,
    prefill_tokens: usize,
    prefill_tok_s: Option<f64>,
    /// xLSTM: the same prefill with the mLSTM run one recurrent step per token instead of chunkwise.
    prefill_step_tok_s: Option<f64>,
}

fn arg_error(name: &'static str, value: usize, reason: String) -> Error {
    Error::Argument { name, value: value.to_string(), reason }
}

pub fn run(args: &BenchModelArgs) -> Result<(), Error> {
    if args.decode_tokens == 0 {
        return Err(arg_error("--decode-tokens", 0, "must be at least 1".into()));
    }
    if args.context == 0 {
        return Err(arg_error("--context", 0, "must be at least 1".into()));
    }
    let backend = init_backend(args.backend.parse::<BackendPreference>()?)?;
    let t0 = Instant::now();
    let mut loaded = args.load.load(&args.model, &backend, !args.json)?;
    backend.synchronize()?;
    let load_s = t0.elapsed().as_secs_f64();
    let model = &loaded.model;
    let limit = model.max_seq_len();
    for (name, n) in
        [("--context + --decode-tokens", args.context + args.decode_tokens), ("--prefill-tokens", args.prefill_tokens)]
    {
        if n > limit {
            return Err(arg_error(name, n, format!("exceeds the model's context of {limit}")));
        }
    }
    let copy_gbps = copy_bandwidth(&backend, 256 << 20, Timing::DEFAULT)?;
    let mut rng = Rng::new(7);
    let vocab = model.vocab_size() as u32;
    let mut random_tokens = |n: usize| (0..n).map(|_| rng.below(vocab)).collect::<Vec<u32>>();

    // Warm-up: compiles the prefill and decode pipelines.
    let warm = random_tokens(16);
    let mut state = model.new_state(warm.len() + 1)?;
    let logits = model.forward(&mut state, &warm, 0, Logits::Last)?;
    let next = select::argmax(&logits)?.to_vec::<u32>()?[0];
    model.forward(&mut state, &[next], warm.len(), Logits::Last)?.to_f32_vec()?;

    // Prefill timed after one untimed run of the same length: which pipelines a prefill takes depends on
    // its length (the dense GEMM rounds bf16 weights to f16 first only for prompts of four or more tile
    // rows), and the driver compiles a pipeline the first time it runs. With only the 16-token warm-up, a
    // fresh H200 timed Llama-3-8B bf16 prefill of 2048 tokens at 1261 tok/s (5102-5129 on machines that
    // had run it before).
    let prefill_prompt = random_tokens(args.prefill_tokens);
    let prefill_tok_s = if args.prefill_tokens > 0 {
        time_prefill(model, &prefill_prompt)?;
        Some(time_prefill(model, &prefill_prompt)?)
    } else {
        None
    };

    let prompt = random_tokens(args.context);
    // Room for the profiled steps too, where the model's context allows.
    let capacity = (args.context + args.decode_tokens + 1 + PROFILE_STEPS).min(limit);
    // Warm-up of the decode at the lengths it will run at: a kernel's pipeline can depend on the context
    // (attention in one launch up to 256 keys, split beyond), and a pipeline made for the first time is
    // compiled by the driver, which on a cold shader cache costs the first timed run ~0.3 s.
    let mut state = model.new_state(capacity)?;
    model.forward(&mut state, &prompt, 0, Logits::Last)?;
    for pos in [args.context, args.context + args.decode_tokens - 1] {
        model.forward(&mut state, &[next], pos, Logits::Last)?.to_f32_vec()?;
    }
    let mut state = model.new_state(capacity)?;
    let logits = model.forward(&mut state, &prompt, 0, Logits::Last)?;
    let first = select::argmax(&logits)?;
    let mut sampler = Sampler::new(SamplingParams::default())?;
    let first_sampled = if args.sampling { pick(&mut sampler, &logits, &prompt)? } else { 0 };
    backend.synchronize()?;
    // The generation loop of `generate` (greedy, token kept on the device): decode_tokens forward passes.
    let stats = || match &backend {
        torchless::Backend::Gpu(ctx) => Some(ctx.host_stats()),
        _ => None,
    };
    let stats_before = stats();
    let t = Instant::now();
    let mut next = 0;
    let on_token = |token| {
        next = token;
        Ok(true)
    };
    let host = if args.sampling {
        let mut history = prompt.clone();
        sampled_decode(
            model,
            &mut state,
            &mut sampler,
            &mut history,
            first_sampled,
            args.context,
            args.decode_tokens,
            on_token,
        )?
    } else {
        greedy_decode(model, &mut state, first, args.context, args.decode_tokens, on_token)?
    };
    let per_token_ms = |d: std::time::Duration| d.as_secs_f64() * 1e3 / args.decode_tokens as f64;
    let decode_s = t.elapsed().as_secs_f64();
    let decode_tok_s = args.decode_tokens as f64 / decode_s;
    // GPU: the host counters of the decode, per token.
    let host_stats = stats_before.zip(stats()).map(|(before, after)| after.since(&before));
    let per_token = |n: u64| n as f64 / args.decode_tokens as f64;

    if args.profile {
        profile_decode(&backend, model, &mut state, next, args.context + args.decode_tokens + 1)?;
        if args.prefill_tokens > 0 {
            profile_prefill(&backend, model, &prefill_prompt)?;
        }
    }

    // xLSTM: the same prefill with the mLSTM stepped token by token (after a short warm-up of that path).
    let prefill_step_tok_s = if args.prefill_tokens > 0 && loaded.model.set_step_prefill(true) {
        time_prefill(&loaded.model, &warm)?;
        let tok_s = time_prefill(&loaded.model, &prefill_prompt);
        loaded.model.set_step_prefill(false);
        Some(tok_s?)
    } else {
        None
    };
    let model = &loaded.model;

    let bytes = model.weight_bytes_per_token() as f64;
    let roofline_tok_s = copy_gbps * 1e9 / bytes;
    let report = Report {
        model: loaded.name.clone(),
        device: backend.device_name(),
        kv_cache: model.kv_dtype().map(|d| d.to_string()),
        weight_gb_per_token: bytes / 1e9,
        load_s,
        copy_gbps,
        context: args.context,
        decode_tokens: args.decode_tokens,
        decode: if args.sampling { "sampling" } else { "greedy" },
        decode_tok_s,
        decode_record_ms: per_token_ms(host.record),
        decode_wait_ms: per_token_ms(host.wait),
        decode_launches: host_stats.map(|s| per_token(s.launches)),
        decode_bind_groups_made: host_stats.map(|s| per_token(s.bind_groups_made)),
        decode_buffers_made: host_stats.map(|s| per_token(s.buffers_made)),
        decode_submits: host_stats.map(|s| per_token(s.submits)),
        decode_submit_ms: host_stats.map(|s| per_token_ms(s.submit_time)),
        roofline_tok_s,
        pct_of_roofline: 100.0 * decode_tok_s / roofline_tok_s,
        prefill_tokens: args.prefill_tokens,
        prefill_tok_s,
        prefill_step_tok_s,
    };
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        match &report.kv_cache {
            Some(kv) => outln!("model {} on {}, {kv} KV cache", report.model, report.device),
            None => outln!("model {} on {}", report.model, report.device),
        }
        outln!("load: {:.2} s", report.load_s);
        outln!(
            "copy bandwidth: {:.1} GB/s; weights read per token: {:.3} GB",
            report.copy_gbps,
            report.weight_gb_per_token
        );
        outln!(
            "decode ({}): {:.1} tok/s at context {} ({} tokens); roofline {:.1} tok/s; {:.1}% of it",
            report.decode,
            report.decode_tok_s,
            report.context,
            report.decode_tokens,
            report.roofline_tok_s,
            report.pct_of_roofline
        );
        outln!(
            "host per decode token: {:.3} ms recording, {:.3} ms waiting for the device",
            report.decode_record_ms,
            report.decode_wait_ms
        );
        if let (Some(launches), Some(made), Some(buffers), Some(submits), Some(submit_ms)) = (
            report.decode_launches,
            report.decode_bind_groups_made,
            report.decode_buffers_made,
            report.decode_submits,
            report.decode_submit_ms,
        ) {
            outln!(
                "  per decode token: {launches:.1} launches, {made:.1} bind groups and {buffers:.1} buffers made, \
                 {submits:.1} submissions finished and submitted in {submit_ms:.3} ms (beside the recording)"
            );
        }
        if let Some(p) = report.prefill_tok_s {
            outln!("prefill: {p:.1} tok/s ({} tokens)", report.prefill_tokens);
        }
        if let Some(p) = report.prefill_step_tok_s {
            outln!("prefill, mLSTM stepped token by token: {p:.1} tok/s ({} tokens)", report.prefill_tokens);
        }
    }
    Ok(())
}

/// Tokens per second of one prefill of `prompt` from a fresh state, logits read back.
fn time_prefill(model: &torchless::model::Model, prompt: &[u32]) -> Result<f64, Error> {
    let mut state = model.new_state(prompt.len())?;
    let t = Instant::now();
    let logits = model.forward(&mut state, prompt, 0, Logits::Last)?;
    select::argmax(&logits)?.to_vec::<u32>()?;
    Ok(prompt.len() as f64 / t.elapsed().as_secs_f64())
}

/// The profiler of a GPU backend; the CPU has none.
fn gpu_profiler(backend: &torchless::Backend) -> Result<&GpuContext, Error> {
    match backend {
        torchless::Backend::Gpu(ctx) => Ok(ctx),
        _ => Err(Error::Argument { name: "--profile", value: "cpu".into(), reason: "needs a GPU backend".into() }),
    }
}

/// Decode steps under GPU timestamps: per-kernel device time per token, on standard error.
fn profile_decode(
    backend: &torchless::Backend,
    model: &torchless::model::Model,
    state: &mut torchless::model::State,
    mut next: u32,
    pos: usize,
) -> Result<(), Error> {
    let ctx = gpu_profiler(backend)?;
    ctx.start_profiling()?;
    let mut steps = 0;
    for i in 0..PROFILE_STEPS {
        if pos + i >= model.max_seq_len() {
            break;
        }
        let logits = match model.forward(state, &[next], pos + i, Logits::Last) {
            Ok(l) => l,
            Err(_) => break, // the cache is full
        };
        next = select::argmax(&logits)?.to_vec::<u32>()?[0];
        steps += 1;
    }
    let times = ctx.stop_profiling()?;
    print_profile(ctx, &times, &format!("per decode token over {steps} steps"), steps);
    Ok(())
}

/// One prefill of `prompt` under GPU timestamps: per-kernel device time, on standard error.
fn profile_prefill(backend: &torchless::Backend, model: &torchless::model::Model, prompt: &[u32]) -> Result<(), Error> {
    let ctx = gpu_profiler(backend)?;
    let mut state = model.new_state(prompt.len())?;
    ctx.start_profiling()?;
    let logits = model.forward(&mut state, prompt, 0, Logits::Last)?;
    select::argmax(&logits)?.to_vec::<u32>()?;
    let times = ctx.stop_profiling()?;
    print_profile(ctx, &times, &format!("of one prefill of {} tokens", prompt.len()), 1);
    Ok(())
}

/// The kernels' device times divided by `runs`: per kernel entry point, then per entry point, grid and
/// largest operand (one line per weight matrix shape of a model's GEMVs, say), largest first, with the
/// time of one launch.
fn print_profile(ctx: &GpuContext, times: &[KernelTime], what: &str, runs: usize) {
    let total: f64 = times.iter().map(|t| t.total_ms).sum();
    let runs = runs.max(1);
    let per = |ms: f64| ms / runs as f64;
    let how = if ctx.profiles_in_pass() {
        "dispatches back to back, each with its wait on the one before"
    } else {
        "each dispatch timed alone, in its own pass"
    };
    eprintln!("GPU time {what} ({how}): {:.3} ms", per(total));
    let mut by_kernel: Vec<(&str, f64, u64)> = Vec::new();
    for t in times {
        match by_kernel.iter_mut().find(|(k, ..)| *k == t.kernel) {
            Some((_, ms, n)) => (*ms, *n) = (*ms + t.total_ms, *n + t.launches),
            None => by_kernel.push((&t.kernel, t.total_ms, t.launches)),
        }
    }
    by_kernel.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!("{:<36} {:>10} {:>9} {:>7}", "kernel/entry", "ms", "launches", "share");
    for (kernel, ms, launches) in by_kernel {
        eprintln!("{kernel:<36} {:>10.4} {:>9} {:>6.1}%", per(ms), launches / runs as u64, 100.0 * ms / total);
    }
    eprintln!(
        "{:<36} {:>16} {:>12} {:>10} {:>9} {:>10}",
        "by grid and largest operand", "workgroups", "operand MiB", "ms", "launches", "us/launch"
    );
    for t in times {
        let [x, y, z] = t.grid;
        eprintln!(
            "{:<36} {:>16} {:>12.2} {:>10.4} {:>9} {:>10.2}",
            t.kernel,
            format!("{x}x{y}x{z}"),
            t.largest_operand as f64 / (1 << 20) as f64,
            per(t.total_ms),
            t.launches / runs as u64,
            1e3 * t.total_ms / t.launches.max(1) as f64
        );
    }
}
