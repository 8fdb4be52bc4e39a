//! Benchmark cases: each op family describes how to build inputs of a given working-set size, how to
//! run the op, and its f64 reference. `torchless bench` checks every case, then times it.

use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::ops;
use crate::tensor::Tensor;
use crate::testing::{ErrorReport, Tolerance, compare};

type RunFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor> + Send + Sync>;
type ReferenceFn = Box<dyn Fn(&[Tensor]) -> Result<Vec<f64>> + Send + Sync>;

/// One op at one size and dtype.
pub struct BenchCase {
    pub op: &'static str,
    pub dtype: DType,
    pub shape: String,
    /// Bytes one run reads and writes (for GB/s).
    pub bytes: u64,
    /// Floating-point operations of one run (compute-bound ops); 0 when not meaningful.
    pub flops: u64,
    pub tolerance: Tolerance,
    /// The inputs, on the CPU.
    pub inputs: Vec<Tensor>,
    /// Runs the op on inputs that live on any one backend; returns the output to check.
    pub run: RunFn,
    /// The f64 reference of the output, from the CPU inputs.
    pub reference: ReferenceFn,
}

impl BenchCase {
    /// The inputs moved to `backend`.
    pub fn inputs_on(&self, backend: &Backend) -> Result<Vec<Tensor>> {
        self.inputs.iter().map(|t| t.to_backend(backend)).collect()
    }

    /// Runs once on `backend` and compares with the CPU implementation (for a GPU) or with the f64
    /// reference (for the CPU).
    pub fn check(&self, backend: &Backend, inputs: &[Tensor]) -> Result<ErrorReport> {
        let got = (self.run)(inputs)?.to_f32_vec()?;
        let want: Vec<f64> = if backend.is_gpu() {
            (self.run)(&self.inputs)?.to_f32_vec()?.into_iter().map(f64::from).collect()
        } else {
            (self.reference)(&self.inputs)?
        };
        if got.len() != want.len() {
            return Err(KernelError::Shape {
                op: self.op,
                detail: format!("bench output has {} elements, reference {}", got.len(), want.len()),
            });
        }
        Ok(compare(&got, &want, self.tolerance))
    }
}

/// A family's constructor: (op name, working-set bytes) → case, or `None` if the name is not its own.
pub type CaseFn = fn(&str, u64) -> Option<Result<BenchCase>>;

/// Every op family with benchmarks: its op names and its case constructor.
pub const FAMILIES: &[(&[&str], CaseFn)] = &[
    (ops::elementwise::BENCH_OPS, ops::elementwise::bench_case),
    (ops::norm::BENCH_OPS, ops::norm::bench_case),
    (ops::softmax::BENCH_OPS, ops::softmax::bench_case),
    (ops::rope::BENCH_OPS, ops::rope::bench_case),
    (ops::convert::BENCH_OPS, ops::convert::bench_case),
    (ops::select::BENCH_OPS, ops::select::bench_case),
    (ops::gemv::BENCH_OPS, ops::gemv::bench_case),
    (ops::gemm::BENCH_OPS, ops::gemm::bench_case),
    (ops::qmatmul::BENCH_OPS, ops::qmatmul::bench_case),
    (ops::attention::BENCH_OPS, ops::attention::bench_case),
    (ops::mlstm::BENCH_OPS, ops::mlstm::bench_case),
];

/// Every bench op name, in the order they run.
pub fn op_names() -> Vec<&'static str> {
    FAMILIES.iter().flat_map(|(names, _)| names.iter().copied()).collect()
}

/// The case for `op` with about `bytes` bytes of working set.
pub fn case(op: &str, bytes: u64) -> Result<BenchCase> {
    FAMILIES.iter().find_map(|(_, f)| f(op, bytes)).unwrap_or_else(|| {
        Err(KernelError::Argument {
            op: "bench",
            name: "op",
            value: op.to_string(),
            reason: format!("unknown op; known: {}", op_names().join(", ")),
        })
    })
}

/// Random values in [lo, hi) rounded to `dtype`, as a CPU tensor.
pub fn random_tensor(seed: u64, shape: &[usize], dtype: DType, lo: f32, hi: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let values = crate::testing::Rng::new(seed).vec(n, lo, hi);
    Tensor::from_f32(&Backend::Cpu, &values, shape, dtype)
}

/// A GEMV case's row length from the environment variable `var` (`default` when unset): a positive
/// multiple of `multiple`, or an error naming the op and the variable.
pub fn cols_from_env(op: &'static str, var: &'static str, default: usize, multiple: usize) -> Result<usize> {
    match std::env::var(var) {
        Ok(v) => v.parse::<usize>().ok().filter(|c| *c > 0 && c.is_multiple_of(multiple)).ok_or_else(|| {
            KernelError::Argument {
                op,
                name: var,
                value: v.clone(),
                reason: format!("must be a positive multiple of {multiple}"),
            }
        }),
        Err(_) => Ok(default),
    }
}

/// A [rows, cols] shape whose `bytes_per_row`-sized rows fill about `bytes` bytes.
pub fn rows_for(bytes: u64, cols: usize, bytes_per_elem_moved: usize) -> usize {
    ((bytes as usize) / (cols * bytes_per_elem_moved)).max(1)
}
