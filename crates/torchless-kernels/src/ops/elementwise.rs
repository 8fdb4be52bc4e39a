//! Elementwise ops: activations, soft cap, scale, and the two-input add, mul and gated units.

use rayon::prelude::*;

use super::{common_backend, require_float, require_non_empty, require_same_dtype, require_same_shape, to_u32};
use crate::backend::Backend;
use crate::cpu;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(ELEMENTWISE, "elementwise");

/// vec4s one workgroup maps (256 threads of `PER` = 4 in elementwise.wgsl).
const VEC4_PER_GROUP: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_vec4: u32,
    scalar: f32,
    _pad: [u32; 2],
}

/// One-input ops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Silu,
    /// GELU with the tanh approximation (GPT-2, Gemma).
    Gelu,
    /// GELU with the exact erf.
    GeluErf,
    /// cap · tanh(x / cap).
    Softcap {
        cap: f32,
    },
    Scale {
        factor: f32,
    },
}

/// Two-input ops over tensors of one shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binary {
    Add,
    Mul,
    /// silu(a) · b
    SwiGlu,
    /// gelu_tanh(a) · b
    GeGlu,
    /// gelu_erf(a) · b
    GeGluErf,
}

impl Unary {
    pub fn name(self) -> &'static str {
        match self {
            Unary::Silu => "silu",
            Unary::Gelu => "gelu",
            Unary::GeluErf => "gelu_erf",
            Unary::Softcap { .. } => "softcap",
            Unary::Scale { .. } => "scale",
        }
    }

    fn code(self) -> f64 {
        match self {
            Unary::Silu => 0.0,
            Unary::Gelu => 1.0,
            Unary::GeluErf => 2.0,
            Unary::Softcap { .. } => 3.0,
            Unary::Scale { .. } => 4.0,
        }
    }

    fn scalar(self) -> f32 {
        match self {
            Unary::Softcap { cap } => cap,
            Unary::Scale { factor } => factor,
            _ => 0.0,
        }
    }

    fn validate(self) -> Result<()> {
        if let Unary::Softcap { cap } = self
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(KernelError::Argument {
                op: "softcap",
                name: "cap",
                value: cap.to_string(),
                reason: "must be a positive finite number".into(),
            });
        }
        Ok(())
    }

    /// The CPU implementation of one element.
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Silu => silu(x),
            Unary::Gelu => gelu_tanh(x),
            Unary::GeluErf => gelu_erf(x),
            Unary::Softcap { cap } => cap * (x / cap).tanh(),
            Unary::Scale { factor } => factor * x,
        }
    }

    /// The f64 reference of one element.
    pub fn reference(self, x: f64) -> f64 {
        match self {
            Unary::Silu => x / (1.0 + (-x).exp()),
            Unary::Gelu => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
            Unary::GeluErf => 0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2)),
            Unary::Softcap { cap } => cap as f64 * (x / cap as f64).tanh(),
            Unary::Scale { factor } => factor as f64 * x,
        }
    }
}

impl Binary {
    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Mul => "mul",
            Binary::SwiGlu => "swiglu",
            Binary::GeGlu => "geglu",
            Binary::GeGluErf => "geglu_erf",
        }
    }

    fn code(self) -> f64 {
        match self {
            Binary::Add => 0.0,
            Binary::Mul => 1.0,
            Binary::SwiGlu => 2.0,
            Binary::GeGlu => 3.0,
            Binary::GeGluErf => 4.0,
        }
    }

    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Mul => a * b,
            Binary::SwiGlu => silu(a) * b,
            Binary::GeGlu => gelu_tanh(a) * b,
            Binary::GeGluErf => gelu_erf(a) * b,
        }
    }

    pub fn reference(self, a: f64, b: f64) -> f64 {
        match self {
            Binary::Add => a + b,
            Binary::Mul => a * b,
            Binary::SwiGlu => Unary::Silu.reference(a) * b,
            Binary::GeGlu => Unary::Gelu.reference(a) * b,
            Binary::GeGluErf => Unary::GeluErf.reference(a) * b,
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + (C * (x + 0.044715 * x * x * x)).tanh())
}

pub fn gelu_erf(x: f32) -> f32 {
    (0.5 * x as f64 * (1.0 + erf_f64(x as f64 / std::f64::consts::SQRT_2))) as f32
}

/// erf to about 1e-14: its Maclaurin series for |x| < 2.5, a continued fraction for erfc beyond.
pub fn erf_f64(x: f64) -> f64 {
    let a = x.abs();
    if a < 2.5 {
        let (mut term, mut sum, x2) = (x, x, x * x);
        for n in 1..80 {
            term *= -x2 / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // Continued fraction for erfc (modified Lentz).
    let erfc = if a > 27.0 {
        0.0
    } else {
        let (tiny, mut f) = (1e-300, a);
        let (mut c, mut d) = (a, 0.0);
        for n in 1..500 {
            let an = n as f64 / 2.0;
            d = a + an * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = a + an / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
    };
    (1.0 - erfc).copysign(x)
}

fn elementwise_params(op: &'static str, t: &Tensor, scalar: f32) -> Result<Params> {
    let n_vec4 = to_u32(op, "elements", t.size_bytes().div_ceil(16))?;
    Ok(Params { n_vec4, scalar, _pad: [0; 2] })
}

/// `op(x)` into a new tensor.
pub fn unary(x: &Tensor, op: Unary) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), op.name(), x.shape(), x.dtype())?;
    unary_into(x, op, &out)?;
    Ok(out)
}

/// `op(x)` into `out` (same shape and dtype; `out` may be `x` itself).
pub fn unary_into(x: &Tensor, op: Unary, out: &Tensor) -> Result<()> {
    let name = op.name();
    op.validate()?;
    require_float(name, x)?;
    require_non_empty(name, "x", x)?;
    require_same_shape(name, x, out)?;
    require_same_dtype(name, x, out)?;
    match common_backend(name, &[x, out])? {
        Backend::Cpu => {
            let mut v = cpu::read_f32(x);
            v.par_iter_mut().for_each(|e| *e = op.apply(*e));
            cpu::write_f32(out, &v);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let params = elementwise_params(name, x, op.scalar())?;
            let constants = [("DTYPE", x.dtype().wgsl_code()), ("OP", op.code())];
            let (xb, ob) = (x.gpu_buffer().expect("gpu"), out.gpu_buffer().expect("gpu"));
            ctx.check_binding(name, xb.size())?;
            let in_place = x.same_storage(out);
            let buffers: &[&wgpu::Buffer] = if in_place { &[xb.raw()] } else { &[xb.raw(), ob.raw()] };
            ctx.dispatch(Dispatch {
                kernel: &ELEMENTWISE,
                entry: if in_place { "unary_inplace" } else { "unary" },
                constants: &constants,
                params: Some(bytemuck::bytes_of(&params)),
                buffers,
                workgroups: Workgroups::Linear(params.n_vec4.div_ceil(VEC4_PER_GROUP)),
            })
        }
    }
}

/// `op(a, b)` into a new tensor.
pub fn binary(a: &Tensor, b: &Tensor, op: Binary) -> Result<Tensor> {
    let out = Tensor::uninit(&a.backend(), op.name(), a.shape(), a.dtype())?;
    binary_into(a, b, op, &out)?;
    Ok(out)
}

/// `op(a, b)` into `out`, which must not share storage with `a` or `b`.
pub fn binary_into(a: &Tensor, b: &Tensor, op: Binary, out: &Tensor) -> Result<()> {
    let name = op.name();
    require_float(name, a)?;
    require_non_empty(name, "a", a)?;
    require_same_shape(name, a, b)?;
    require_same_shape(name, a, out)?;
    require_same_dtype(name, a, b)?;
    require_same_dtype(name, a, out)?;
    if out.same_storage(a) || out.same_storage(b) {
        return Err(KernelError::Argument {
            op: name,
            name: "out",
            value: "an input".into(),
            reason: "the output must be a separate tensor".into(),
        });
    }
    match common_backend(name, &[a, b, out])? {
        Backend::Cpu => {
            let (x, y) = (cpu::read_f32(a), cpu::read_f32(b));
            let v: Vec<f32> = x.par_iter().zip(&y).map(|(&x, &y)| op.apply(x, y)).collect();
            cpu::write_f32(out, &v);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let params = elementwise_params(name, a, 0.0)?;
            let constants = [("DTYPE", a.dtype().wgsl_code()), ("OP", op.code())];
            let buf = |t: &Tensor| t.gpu_buffer().expect("gpu").raw().clone();
            let (ab, bb, ob) = (buf(a), buf(b), buf(out));
            ctx.check_binding(name, ab.size())?;
            ctx.dispatch(Dispatch {
                kernel: &ELEMENTWISE,
                entry: "binary",
                constants: &constants,
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[&ab, &bb, &ob],
                workgroups: Workgroups::Linear(params.n_vec4.div_ceil(VEC4_PER_GROUP)),
            })
        }
    }
}

pub fn silu_op(x: &Tensor) -> Result<Tensor> {
    unary(x, Unary::Silu)
}
pub fn softcap(x: &Tensor, cap: f32) -> Result<Tensor> {
    unary(x, Unary::Softcap { cap })
}
pub fn scale(x: &Tensor, factor: f32) -> Result<Tensor> {
    unary(x, Unary::Scale { factor })
}
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Add)
}
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    binary(a, b, Binary::Mul)
}

#[cfg(test)]
mod tests;

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["softcap", "silu", "gelu", "swiglu", "geglu", "add", "mul", "scale"];

/// f32 cases of about `bytes` bytes moved (inputs + output) for the ops of this family.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::dtype::DType;
    use crate::testing::Tolerance;

    let unary_op = match op {
        "softcap" => Some(Unary::Softcap { cap: 30.0 }),
        "silu" => Some(Unary::Silu),
        "gelu" => Some(Unary::Gelu),
        "scale" => Some(Unary::Scale { factor: 0.125 }),
        _ => None,
    };
    let binary_op = match op {
        "swiglu" => Some(Binary::SwiGlu),
        "geglu" => Some(Binary::GeGlu),
        "add" => Some(Binary::Add),
        "mul" => Some(Binary::Mul),
        _ => None,
    };
    let dtype = DType::F32;
    let tolerance = Tolerance::for_dtype(dtype).scaled(2.0);
    let build = || -> Result<BenchCase> {
        if let Some(u) = unary_op {
            let n = (bytes / 8).max(1) as usize; // read + write 4 bytes each
            let x = random_tensor(1, &[n], dtype, -8.0, 8.0)?;
            Ok(BenchCase {
                op: u.name(),
                dtype,
                shape: format!("[{n}]"),
                bytes: 8 * n as u64,
                flops: 0,
                tolerance,
                inputs: vec![x],
                run: Box::new(move |i| unary(&i[0], u)),
                reference: Box::new(move |i| Ok(cpu::read_f32(&i[0]).iter().map(|&v| u.reference(v as f64)).collect())),
            })
        } else {
            let b = binary_op.expect("op belongs to this family");
            let n = (bytes / 12).max(1) as usize;
            let x = random_tensor(2, &[n], dtype, -6.0, 6.0)?;
            let y = random_tensor(3, &[n], dtype, -6.0, 6.0)?;
            Ok(BenchCase {
                op: b.name(),
                dtype,
                shape: format!("[{n}]"),
                bytes: 12 * n as u64,
                flops: 0,
                tolerance,
                inputs: vec![x, y],
                run: Box::new(move |i| binary(&i[0], &i[1], b)),
                reference: Box::new(move |i| {
                    let (x, y) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]));
                    Ok(x.iter().zip(&y).map(|(&a, &c)| b.reference(a as f64, c as f64)).collect())
                }),
            })
        }
    };
    (unary_op.is_some() || binary_op.is_some()).then(build)
}

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::ELEMENTWISE, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
