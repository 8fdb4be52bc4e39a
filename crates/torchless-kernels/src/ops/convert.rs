//! Casts between float dtypes, and copies: whole tensors, or rows written at a row offset of a larger
//! tensor (how the engine appends K/V rows to a `[max_seq, kv_dim]` cache).
//!
//! Casts round to nearest even; NaN stays NaN, ±inf stays ±inf, and an f32 beyond the f16 range
//! becomes ±inf. The GPU converts bit patterns with integer arithmetic, so its results equal the CPU's
//! (the `half` crate) bit for bit, subnormals included.
//!
//! Rows are along the first dimension: `copy_rows_into(src [rows, ..], dst [R, ..], r)` writes the
//! source into rows `r..r + rows` of `dst` (trailing dimensions equal). Any dtype works; for 16-bit
//! dtypes a row may start in the middle of a 32-bit word, which a kernel handles (aligned copies use
//! the device's copy engine). [`copy_rows_into_at`] takes the row from a u32 tensor on the device, so
//! a decode step recorded ahead of time writes at a position only the GPU knows.

use super::{
    common_backend, gpu_buffer, require_float, require_non_empty, require_same_dtype, require_same_shape, to_u32,
};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(CONVERT, "convert", ["bits16", "convert"]);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    threads: u32,
    n_in: u32,
    e0: u32,
    m: u32,
    row_len: u32,
    rows: u32,
    dst_rows: u32,
    _pad: u32,
}

const WORKGROUP: u32 = 256;

/// `x` converted to `dtype` (f32, f16 or bf16), in a new tensor. A cast to `x`'s own dtype is a copy.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if !dtype.is_float() {
        return Err(KernelError::DType { op: "cast", expected: "f32, f16 or bf16".into(), found: dtype });
    }
    let out = Tensor::uninit(&x.backend(), "cast", x.shape(), dtype)?;
    cast_into(x, &out)?;
    Ok(out)
}

/// `x` converted to `out`'s dtype, into `out` (same shape).
pub fn cast_into(x: &Tensor, out: &Tensor) -> Result<()> {
    let op = "cast";
    require_float(op, x)?;
    require_float(op, out)?;
    require_non_empty(op, "x", x)?;
    require_same_shape(op, x, out)?;
    if x.dtype() == out.dtype() {
        return copy_into(x, out);
    }
    match common_backend(op, &[x, out])? {
        Backend::Cpu => {
            cpu::write_f32(out, &cpu::read_f32(x));
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let (xb, ob) = (gpu_buffer(x), gpu_buffer(out));
            ctx.check_binding(op, xb.size())?;
            ctx.check_binding(op, ob.size())?;
            let in_vec4 = to_u32(op, "elements", x.size_bytes().div_ceil(16))?;
            let out_vec4 = to_u32(op, "elements", out.size_bytes().div_ceil(16))?;
            let (entry, threads, n_in) = match (x.dtype(), out.dtype()) {
                (DType::F32, _) => ("cast_narrow", out_vec4, in_vec4),
                (_, DType::F32) => ("cast_widen", in_vec4, out_vec4),
                _ => ("cast_half", out_vec4, in_vec4),
            };
            let params = Params { threads, n_in, ..Params::default() };
            let constants = [("DTYPE", x.dtype().wgsl_code()), ("OUT_DTYPE", out.dtype().wgsl_code())];
            ctx.dispatch(Dispatch {
                kernel: &CONVERT,
                entry,
                constants: &constants,
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[xb, ob],
                workgroups: Workgroups::Linear(threads.div_ceil(WORKGROUP)),
            })
        }
    }
}

/// A copy of `x` (any dtype) in a new tensor, made by a kernel on the GPU.
pub fn copy(x: &Tensor) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), "copy", x.shape(), x.dtype())?;
    copy_into(x, &out)?;
    Ok(out)
}

/// Copies `src` into `dst` (same shape and dtype). Copying a tensor onto its own storage does nothing.
pub fn copy_into(src: &Tensor, dst: &Tensor) -> Result<()> {
    let op = "copy";
    require_non_empty(op, "src", src)?;
    require_same_shape(op, src, dst)?;
    require_same_dtype(op, src, dst)?;
    let backend = common_backend(op, &[src, dst])?;
    if src.same_storage(dst) {
        return Ok(());
    }
    match backend {
        Backend::Cpu => {
            let s = src.cpu_words().expect("CPU tensor");
            let mut d = dst.cpu_words_mut().expect("CPU tensor");
            let words = src.size_bytes().div_ceil(4);
            d[..words].copy_from_slice(&s[..words]);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let (sb, db) = (gpu_buffer(src), gpu_buffer(dst));
            ctx.check_binding(op, sb.size())?;
            ctx.check_binding(op, db.size())?;
            let threads = to_u32(op, "elements", src.size_bytes().div_ceil(16))?;
            let params = Params { threads, ..Params::default() };
            ctx.dispatch(Dispatch {
                kernel: &CONVERT,
                entry: "copy",
                constants: &[],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[sb, db],
                workgroups: Workgroups::Linear(threads.div_ceil(WORKGROUP)),
            })
        }
    }
}

/// The checked geometry of a row copy: rows of the source, rows of the destination, elements per row.
struct RowCopy {
    rows: usize,
    dst_rows: usize,
    row_len: usize,
}

fn check_row_copy(op: &'static str, src: &Tensor, dst: &Tensor) -> Result<RowCopy> {
    require_non_empty(op, "src", src)?;
    require_same_dtype(op, src, dst)?;
    let (s, d) = (src.shape(), dst.shape());
    if s.is_empty() || d.len() != s.len() || s[1..] != d[1..] {
        return Err(KernelError::Shape {
            op,
            detail: format!("src {s:?} and dst {d:?} must be [rows, ..] and [R, ..] with the same trailing dimensions"),
        });
    }
    if src.same_storage(dst) {
        return Err(KernelError::Argument {
            op,
            name: "dst",
            value: "src".into(),
            reason: "the destination must be a separate tensor".into(),
        });
    }
    let row_len: usize = s[1..].iter().product();
    let geometry = RowCopy { rows: s[0], dst_rows: d[0], row_len };
    if geometry.rows > geometry.dst_rows {
        return Err(KernelError::Shape { op, detail: format!("src has {} rows, dst only {}", s[0], d[0]) });
    }
    to_u32(op, "dst elements", dst.numel())?;
    Ok(geometry)
}

fn check_row_offset(op: &'static str, g: &RowCopy, offset: usize) -> Result<()> {
    if offset > g.dst_rows - g.rows {
        return Err(KernelError::Argument {
            op,
            name: "dst_row_offset",
            value: offset.to_string(),
            reason: format!("{} rows at this offset overrun the destination's {} rows", g.rows, g.dst_rows),
        });
    }
    Ok(())
}

/// Writes the rows of `src [rows, ..]` into rows `dst_row_offset..dst_row_offset + rows` of
/// `dst [R, ..]`, leaving the other rows as they are.
pub fn copy_rows_into(src: &Tensor, dst: &Tensor, dst_row_offset: usize) -> Result<()> {
    let op = "copy_rows";
    let g = check_row_copy(op, src, dst)?;
    check_row_offset(op, &g, dst_row_offset)?;
    let esize = src.dtype().size_bytes();
    match common_backend(op, &[src, dst])? {
        Backend::Cpu => {
            cpu_copy_rows(src, dst, dst_row_offset * g.row_len * esize);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            // A kernel even where a DMA copy would do: it stays inside the open compute pass (a copy
            // ends it), and NVIDIA's Vulkan DMA path moves a third of what shaders do.
            let (sb, db) = (gpu_buffer(src), gpu_buffer(dst));
            ctx.check_binding(op, sb.size())?;
            ctx.check_binding(op, db.size())?;
            let params = row_params(op, src.dtype(), &g, dst_row_offset * g.row_len)?;
            ctx.dispatch(Dispatch {
                kernel: &CONVERT,
                entry: "copy_rows",
                constants: &[("DTYPE", src.dtype().wgsl_code())],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[sb, db],
                workgroups: Workgroups::Linear(params.threads.div_ceil(WORKGROUP)),
            })
        }
    }
}

/// [`copy_rows_into`] at the row held by `dst_row_offset`, a u32 tensor of one element that may live
/// on the device (the GPU reads it when the copy runs; the host never waits for it).
///
/// On the CPU an offset whose rows do not fit is a [`KernelError::Argument`]. On the GPU the offset is
/// not known to the host, so such a copy writes nothing and `dst` keeps its contents.
pub fn copy_rows_into_at(src: &Tensor, dst: &Tensor, dst_row_offset: &Tensor) -> Result<()> {
    let op = "copy_rows_at";
    let g = check_row_copy(op, src, dst)?;
    if dst_row_offset.dtype() != DType::U32 {
        return Err(KernelError::DType { op, expected: "u32 (dst_row_offset)".into(), found: dst_row_offset.dtype() });
    }
    if dst_row_offset.numel() != 1 {
        return Err(KernelError::Shape {
            op,
            detail: format!("dst_row_offset must hold one element, found shape {:?}", dst_row_offset.shape()),
        });
    }
    match common_backend(op, &[src, dst, dst_row_offset])? {
        Backend::Cpu => {
            let offset = cpu::read_u32(dst_row_offset)[0] as usize;
            check_row_offset(op, &g, offset)?;
            cpu_copy_rows(src, dst, offset * g.row_len * src.dtype().size_bytes());
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let (sb, db, pb) = (gpu_buffer(src), gpu_buffer(dst), gpu_buffer(dst_row_offset));
            ctx.check_binding(op, sb.size())?;
            ctx.check_binding(op, db.size())?;
            let params = row_params(op, src.dtype(), &g, 0)?;
            ctx.dispatch(Dispatch {
                kernel: &CONVERT,
                entry: "copy_rows_at",
                constants: &[("DTYPE", src.dtype().wgsl_code())],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[sb, db, pb],
                workgroups: Workgroups::Linear(params.threads.div_ceil(WORKGROUP)),
            })
        }
    }
}

fn row_params(op: &'static str, dtype: DType, g: &RowCopy, e0: usize) -> Result<Params> {
    let m = g.rows * g.row_len;
    // A 16-bit copy touches at most m/2 + 1 words (one more when it starts mid-word).
    let threads = if dtype.size_bytes() == 4 { m } else { m / 2 + 1 };
    Ok(Params {
        threads: to_u32(op, "elements", threads)?,
        n_in: 0,
        e0: to_u32(op, "dst_row_offset", e0)?,
        m: to_u32(op, "elements", m)?,
        row_len: to_u32(op, "row length", g.row_len)?,
        rows: to_u32(op, "rows", g.rows)?,
        dst_rows: to_u32(op, "rows", g.dst_rows)?,
        _pad: 0,
    })
}

fn cpu_copy_rows(src: &Tensor, dst: &Tensor, offset_bytes: usize) {
    let words = src.cpu_words().expect("CPU tensor");
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    cpu::write_bytes(dst, offset_bytes, &bytes[..src.size_bytes()]);
}

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["cast", "copy"];

/// `cast` (f32 → bf16) and `copy` (f32, by a kernel) moving about `bytes` bytes.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::testing::Tolerance;

    let build = |op: &'static str| -> Result<BenchCase> {
        let out_dtype = if op == "cast" { DType::BF16 } else { DType::F32 };
        let per_elem = 4 + out_dtype.size_bytes() as u64;
        let n = (bytes / per_elem).max(1) as usize;
        let x = random_tensor(11, &[n], DType::F32, -100.0, 100.0)?;
        Ok(BenchCase {
            op,
            dtype: DType::F32,
            shape: format!("[{n}] -> {out_dtype}"),
            bytes: per_elem * n as u64,
            flops: 0,
            tolerance: Tolerance { atol: 0.0, rtol: 0.0 },
            inputs: vec![x],
            run: Box::new(move |i| if op == "cast" { cast(&i[0], out_dtype) } else { copy(&i[0]) }),
            reference: Box::new(move |i| {
                Ok(cpu::read_f32(&i[0]).iter().map(|&v| reference::round(v as f64, out_dtype)).collect())
            }),
        })
    };
    match op {
        "cast" => Some(build("cast")),
        "copy" => Some(build("copy")),
        _ => None,
    }
}

/// Correctly rounded conversion computed in f64, independent of the `half` crate: the reference of
/// the tests and of the bench.
mod reference {
    use crate::dtype::DType;

    /// `x` rounded to nearest even in `dtype`'s format (NaN stays NaN, overflow → ±inf).
    pub fn round(x: f64, dtype: DType) -> f64 {
        // (mantissa bits, smallest normal exponent, largest finite value)
        let (mant, emin, max) = match dtype {
            DType::F16 => (10, -14, 65504.0),
            DType::BF16 => (7, -126, f64::from(f32::from_bits(0x7f7f_0000))),
            _ => (23, -126, f64::from(f32::MAX)),
        };
        if !x.is_finite() || x == 0.0 {
            return x;
        }
        let e = (x.abs().log2().floor() as i32).max(emin);
        // log2 can be off by one near powers of two; fix the exponent so that 2^e ≤ |x| < 2^(e+1).
        let e = if e > emin && 2f64.powi(e) > x.abs() { e - 1 } else { e };
        let e = if 2f64.powi(e + 1) <= x.abs() { e + 1 } else { e };
        let quantum = 2f64.powi(e - mant);
        let r = (x / quantum).round_ties_even() * quantum;
        if r.abs() > max { f64::INFINITY.copysign(x) } else { r }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::CONVERT, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
