use std::time::Instant;
use torchless_kernels::{BackendPreference, Tensor, init_backend, ops::elementwise};

fn main() {
    let backend = init_backend(BackendPreference::Gpu).unwrap();
    let a = Tensor::from_slice(&backend, &vec![1f32; 64], &[64]).unwrap();
    let b = Tensor::from_slice(&backend, &vec![1f32; 64], &[64]).unwrap();
    for round in 0..5 {
        backend.synchronize().unwrap();
        let n = 20000;
        let t = Instant::now();
        let mut x = a.clone();
        for _ in 0..n {
            x = elementwise::add(&x, &b).unwrap();
        }
        let rec = t.elapsed();
        backend.synchronize().unwrap();
        eprintln!("round {round}: record {:.2} us/dispatch", rec.as_secs_f64() * 1e6 / n as f64);
    }
}
