//! The fixed costs of a kernel launch, measured with tiny kernels (64 values) so that no kernel's own work
//! counts: `cargo run --release --example record_overhead`. Decode of small or quantized models is bound by
//! them.
//! - host time to record one launch (nothing submitted while timing);
//! - host time to finish and submit a batch of launches (wgpu encodes the recorded passes there; the
//!   submission thread does it, timed here from the hand-over until the batch is in the queue);
//! - device time per launch when each depends on the one before (a barrier between them, as in a
//!   forward pass) and when none does.
use std::time::Instant;
use torchless_kernels::{Backend, BackendPreference, Tensor, init_backend, ops::elementwise};

/// Launches per batch: fewer than fill one parameter arena, so nothing is submitted while recording.
const N: usize = 500;

fn main() -> Result<(), torchless_kernels::KernelError> {
    let backend = init_backend(BackendPreference::Gpu)?;
    let Backend::Gpu(ctx) = &backend else { unreachable!("a GPU backend was asked for") };
    println!("{}", backend.device_name());
    let a = Tensor::from_slice(&backend, &[1f32; 64], &[64])?;
    let b = Tensor::from_slice(&backend, &[1f32; 64], &[64])?;
    let outs: Vec<Tensor> = (0..N).map(|_| Tensor::zeros(&backend, &[64], a.dtype())).collect::<Result<_, _>>()?;
    for round in 0..4 {
        // Dependent: each add reads the one before.
        backend.synchronize()?;
        let t = Instant::now();
        let mut x = a.clone();
        for _ in 0..N {
            x = elementwise::add(&x, &b)?;
        }
        let record = t.elapsed();
        let t = Instant::now();
        ctx.flush_to_queue()?;
        let submit = t.elapsed();
        backend.synchronize()?;
        let dependent = t.elapsed();
        // Independent: each add writes its own output from the same inputs.
        let t = Instant::now();
        for out in &outs {
            elementwise::binary_into(&a, &b, elementwise::Binary::Add, out)?;
        }
        backend.synchronize()?;
        let independent = t.elapsed();
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6 / N as f64;
        println!(
            "round {round}: per launch {:.2} us recording, {:.2} us finishing and submitting; device (wall, from \
             the submission) {:.2} us when each waits on the one before",
            us(record),
            us(submit),
            us(dependent)
        );
        println!("         independent launches, recorded and run: {:.2} us each", us(independent));
    }
    Ok(())
}
