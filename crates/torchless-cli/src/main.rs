//! The `torchless` command-line tool.

/// `print!` to standard output through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_stdout(format_args!($($arg)*)) };
}

/// `println!` to standard output through [`write_stdout`].
macro_rules! outln {
    () => { $crate::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

mod bench;
mod bench_model;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "torchless", version, about = "LLM and xLSTM inference and GPU kernels, from Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the CPU and every GPU adapter with its features and limits.
    Backends,
    /// Check every kernel against the CPU implementation, then time it.
    Bench(bench::BenchArgs),
    /// Time a model's load, prefill and decode beside its bandwidth roofline.
    BenchModel(bench_model::BenchModelArgs),
    /// Generate text from a prompt, streaming it as it is produced.
    Generate(run::GenerateArgs),
    /// Print the logits of every position of a forward pass over the given token ids.
    Logits(run::LogitsArgs),
    /// Print the token ids of a text (special tokens in the text are parsed as such; no BOS is added).
    Tokenize(run::TokenizeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Backends => {
            print_backends();
            Ok(true)
        }
        Command::Bench(args) => bench::run(&args).map_err(|e| e.to_string()),
        Command::BenchModel(args) => bench_model::run(&args).map(|()| true).map_err(|e| e.to_string()),
        Command::Generate(args) => run::generate_cmd(&args).map(|()| true).map_err(|e| e.to_string()),
        Command::Logits(args) => run::logits_cmd(&args).map(|()| true).map_err(|e| e.to_string()),
        Command::Tokenize(args) => run::tokenize_cmd(&args).map(|()| true).map_err(|e| e.to_string()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Writes to standard output and flushes (generated text streams). When the reader has gone
/// (`torchless logits ... | head`) the process ends quietly with success, as Unix tools do, instead of
/// panicking as `println!` would; another write error ends it with the error.
fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(2);
    }
}

fn print_backends() {
    let cpu = torchless_kernels::Backend::Cpu;
    outln!("cpu     {}", cpu.device_name());
    let adapters = torchless_kernels::gpu::list_adapters();
    if adapters.is_empty() {
        outln!("gpu     none found (Vulkan, Metal and DX12 were searched; on Linux install a Vulkan driver)");
    }
    for a in adapters {
        outln!("{:<7} {} ({})", a.backend, a.name, a.device_type);
        if !a.driver.is_empty() {
            outln!("        driver: {}", a.driver);
        }
        let subgroups = if a.subgroups {
            format!("{}..{}", a.subgroup_sizes.0, a.subgroup_sizes.1)
        } else {
            "not supported".to_string()
        };
        outln!("        subgroups: {subgroups}; f16: {}", if a.f16 { "yes" } else { "no" });
        let coop =
            if a.cooperative_matrices.is_empty() { "none".to_string() } else { a.cooperative_matrices.join(", ") };
        outln!("        cooperative matrices: {coop}");
        outln!(
            "        max storage binding: {}; max buffer: {}; storage buffers per stage: {}",
            human_bytes(a.max_storage_binding_bytes),
            human_bytes(a.max_buffer_bytes),
            a.max_storage_buffers_per_stage
        );
        outln!(
            "        workgroup: {} invocations, {} of shared memory",
            a.max_workgroup_invocations,
            human_bytes(a.max_workgroup_storage_bytes as u64)
        );
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}
