//! Host time to record one small kernel launch (no waiting on the device): `cargo run --release --example
//! record_overhead`. Decode of small or quantized models is bound by it.
use std::time::Instant;
use torchless_kernels::{BackendPreference, Tensor, init_backend, ops::elementwise};

fn main() -> Result<(), torchless_kernels::KernelError> {
    let backend = init_backend(BackendPreference::Gpu)?;
    let a = Tensor::from_slice(&backend, &[1f32; 64], &[64])?;
    let b = Tensor::from_slice(&backend, &[1f32; 64], &[64])?;
    for round in 0..5 {
        backend.synchronize()?;
        // Fewer launches than fill one parameter arena, so that nothing is submitted while timing.
        let n = 500;
        let t = Instant::now();
        let mut x = a.clone();
        for _ in 0..n {
            x = elementwise::add(&x, &b)?;
        }
        let per = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        backend.synchronize()?;
        println!("round {round}: {per:.2} us to record one launch");
    }
    Ok(())
}
