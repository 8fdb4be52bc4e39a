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
mod tests {
    use super::*;
    use crate::testing::{RAGGED, Rng, test_backends};

    /// Values that exercise rounding, overflow, subnormals and specials in every format.
    fn special_values() -> Vec<f32> {
        let mut v = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7fa0_0001), // signalling NaN
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40, // f32 subnormal
            -1e-45,
            65504.0,   // largest f16
            65519.0,   // rounds down to 65504
            65520.0,   // halfway: to even = 65536 = inf in f16
            -70000.0,  // f16 overflow
            1e10,      // f16 overflow, bf16 fine
            6.1035e-5, // near the smallest normal f16
            5.96e-8,   // the smallest subnormal f16
            2.98e-8,   // half the smallest subnormal
            4.5e-8,    // rounds up to the smallest subnormal
            3.0e-8,
            1.0 + 1.0 / 256.0,  // bf16 tie → 1.0 (even)
            1.0 + 3.0 / 256.0,  // bf16 tie → up
            1.0 + 1.0 / 2048.0, // f16 tie → 1.0
            1.0 + 3.0 / 2048.0, // f16 tie → up
            2049.0,
            2051.0,
            0.1,
            -3.3333333,
            f32::from_bits(0x7f7f_8000), // bf16 rounds to inf
        ];
        // Every f16 subnormal boundary region and a spread of magnitudes.
        for e in -30..20 {
            let b = 2f32.powi(e);
            v.extend([b, b * 1.5, -b * 1.25, b * (1.0 + 1.0 / 1024.0), b * (1.0 + 1.0 / 4096.0)]);
        }
        v
    }

    fn bits_of(t: &Tensor) -> Vec<u32> {
        let bytes = t.to_bytes().unwrap();
        match t.dtype().size_bytes() {
            4 => bytemuck::pod_collect_to_vec(&bytes),
            _ => bytemuck::pod_collect_to_vec::<u8, u16>(&bytes).into_iter().map(u32::from).collect(),
        }
    }

    /// `x` cast to `dtype` by the `half` crate, as bits.
    fn host_bits(x: &[f32], from: DType, to: DType) -> Vec<u32> {
        let t = Tensor::from_f32(&Backend::Cpu, x, &[x.len()], from).unwrap();
        let v = t.to_f32_vec().unwrap();
        let bytes = crate::tensor::f32_to_bytes(&v, to);
        match to.size_bytes() {
            4 => bytemuck::pod_collect_to_vec(&bytes),
            _ => bytemuck::pod_collect_to_vec::<u8, u16>(&bytes).into_iter().map(u32::from).collect(),
        }
    }

    #[test]
    fn casts_match_the_f64_reference_and_the_cpu_bit_for_bit() {
        let mut rng = Rng::new(21);
        for backend in test_backends() {
            for &n in RAGGED {
                // Magnitudes from 1e-9 to 1e6, both signs.
                let x: Vec<f32> = (0..n)
                    .map(|_| {
                        let m = 10f32.powf(rng.uniform(-9.0, 6.0));
                        if rng.below(2) == 0 { m } else { -m }
                    })
                    .collect();
                for from in DType::FLOATS {
                    let xin = crate::testing::round_to(&x, from);
                    let xt = Tensor::from_f32(&backend, &xin, &[n], from).unwrap();
                    for to in DType::FLOATS {
                        let what = format!("cast {from}->{to} n={n} on {}", backend.name());
                        let out = cast(&xt, to).unwrap();
                        assert_eq!(out.dtype(), to);
                        assert_eq!(out.shape(), &[n]);
                        let got = out.to_f32_vec().unwrap();
                        for (i, (&g, &v)) in got.iter().zip(&xin).enumerate() {
                            let want = reference::round(v as f64, to);
                            assert!(g as f64 == want, "{what}: element {i} = {v:e}: got {g:e}, want {want:e}");
                        }
                        assert_eq!(bits_of(&out), host_bits(&xin, from, to), "{what}: bits differ from the CPU");
                    }
                }
            }
        }
    }

    #[test]
    fn special_values_cast_exactly() {
        let x = special_values();
        for backend in test_backends() {
            for from in DType::FLOATS {
                let xt = Tensor::from_f32(&backend, &x, &[x.len()], from).unwrap();
                let xin = xt.to_f32_vec().unwrap();
                for to in DType::FLOATS {
                    let what = format!("special cast {from}->{to} on {}", backend.name());
                    let out = cast(&xt, to).unwrap();
                    let got = out.to_f32_vec().unwrap();
                    for (i, (&g, &v)) in got.iter().zip(&xin).enumerate() {
                        let want = reference::round(v as f64, to);
                        let same = (g.is_nan() && want.is_nan()) || g as f64 == want;
                        let sign_ok = g.is_nan() || g.is_sign_negative() == v.is_sign_negative();
                        assert!(same && sign_ok, "{what}: element {i} = {v:e}: got {g:e}, want {want:e}");
                    }
                    assert_eq!(bits_of(&out), host_bits(&xin, from, to), "{what}: bits differ from the CPU");
                }
            }
            // A few by hand.
            let f = |v: f32, to: DType| cast(&Tensor::from_slice(&backend, &[v], &[1]).unwrap(), to).unwrap();
            assert_eq!(f(65520.0, DType::F16).to_f32_vec().unwrap()[0], f32::INFINITY);
            assert_eq!(f(65519.0, DType::F16).to_f32_vec().unwrap()[0], 65504.0);
            assert_eq!(f(-1e6, DType::F16).to_f32_vec().unwrap()[0], f32::NEG_INFINITY);
            assert_eq!(f(1.0 + 1.0 / 256.0, DType::BF16).to_f32_vec().unwrap()[0], 1.0);
            assert_eq!(f(1.0 + 3.0 / 256.0, DType::BF16).to_f32_vec().unwrap()[0], 1.0 + 4.0 / 256.0);
            assert_eq!(bits_of(&f(2f32.powi(-25), DType::F16)), [0x0000]);
            assert_eq!(bits_of(&f(1.5 * 2f32.powi(-25), DType::F16)), [0x0001]);
            assert!(f(f32::NAN, DType::F16).to_f32_vec().unwrap()[0].is_nan());
            assert!(f(f32::NAN, DType::BF16).to_f32_vec().unwrap()[0].is_nan());
            assert_eq!(bits_of(&f(-0.0, DType::BF16)), [0x8000]);
        }
    }

    #[test]
    fn cast_keeps_shape_and_same_dtype_is_a_copy() {
        for backend in test_backends() {
            let x: Vec<f32> = (0..35).map(|i| i as f32 * 0.25 - 3.0).collect();
            let xt = Tensor::from_slice(&backend, &x, &[5, 7]).unwrap();
            let y = cast(&xt, DType::F32).unwrap();
            assert!(!y.same_storage(&xt));
            assert_eq!(y.shape(), &[5, 7]);
            assert_eq!(y.to_vec::<f32>().unwrap(), x);
            let h = cast(&xt, DType::F16).unwrap();
            let out = Tensor::zeros(&backend, &[5, 7], DType::BF16).unwrap();
            cast_into(&h, &out).unwrap();
            assert_eq!(out.to_f32_vec().unwrap(), x); // these values are exact in every format
        }
    }

    #[test]
    fn copy_is_exact_for_every_dtype() {
        let mut rng = Rng::new(22);
        for backend in test_backends() {
            for dtype in DType::ALL {
                for &n in RAGGED {
                    let bytes: Vec<u8> = (0..n * dtype.size_bytes()).map(|_| rng.below(256) as u8).collect();
                    let xt = Tensor::from_bytes(&backend, &bytes, &[n], dtype).unwrap();
                    let y = copy(&xt).unwrap();
                    assert_eq!(y.to_bytes().unwrap(), bytes, "copy {dtype} n={n} on {}", backend.name());
                    let z = Tensor::zeros(&backend, &[n], dtype).unwrap();
                    copy_into(&xt, &z).unwrap();
                    assert_eq!(z.to_bytes().unwrap(), bytes, "copy_into {dtype} n={n} on {}", backend.name());
                }
            }
            // Onto itself: nothing to do.
            let x = Tensor::from_slice(&backend, &[1.0f32, 2.0], &[2]).unwrap();
            copy_into(&x, &x).unwrap();
            assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0]);
        }
    }

    /// The bytes of `dst` after writing `src` at row `offset` (host model).
    fn expected_rows(dst: &[u8], src: &[u8], offset: usize, row_bytes: usize) -> Vec<u8> {
        let mut e = dst.to_vec();
        e[offset * row_bytes..offset * row_bytes + src.len()].copy_from_slice(src);
        e
    }

    #[test]
    fn copy_rows_writes_at_any_offset_for_every_dtype() {
        let mut rng = Rng::new(23);
        for backend in test_backends() {
            for dtype in [DType::F32, DType::F16, DType::BF16, DType::U32] {
                for n in [1usize, 3, 31, 32, 33, 257] {
                    let dst_rows = 7;
                    for rows in [1usize, 2, 3] {
                        for offset in [0, 1, 2, dst_rows - rows] {
                            let es = dtype.size_bytes();
                            let init: Vec<u8> = (0..dst_rows * n * es).map(|_| rng.below(256) as u8).collect();
                            let src: Vec<u8> = (0..rows * n * es).map(|_| rng.below(256) as u8).collect();
                            let want = expected_rows(&init, &src, offset, n * es);
                            let st = Tensor::from_bytes(&backend, &src, &[rows, n], dtype).unwrap();
                            let what = format!("{dtype} n={n} rows={rows} offset={offset} on {}", backend.name());

                            let dt = Tensor::from_bytes(&backend, &init, &[dst_rows, n], dtype).unwrap();
                            copy_rows_into(&st, &dt, offset).unwrap();
                            assert_eq!(dt.to_bytes().unwrap(), want, "copy_rows_into {what}");

                            let dt = Tensor::from_bytes(&backend, &init, &[dst_rows, n], dtype).unwrap();
                            let pos = Tensor::from_slice(&backend, &[offset as u32], &[1]).unwrap();
                            copy_rows_into_at(&st, &dt, &pos).unwrap();
                            assert_eq!(dt.to_bytes().unwrap(), want, "copy_rows_into_at {what}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn appending_rows_one_by_one_fills_a_cache() {
        // A KV cache of 5 rows of 3 bf16 values (rows split words), appended a row at a time, with the
        // position on the device, recorded without reading anything back in between.
        for backend in test_backends() {
            let (rows, n) = (5usize, 3usize);
            let cache = Tensor::zeros(&backend, &[rows, n], DType::BF16).unwrap();
            let cache2 = Tensor::zeros(&backend, &[rows, n], DType::BF16).unwrap();
            let mut want = Vec::new();
            for r in 0..rows {
                let row: Vec<f32> = (0..n).map(|c| (r * 10 + c) as f32).collect();
                want.extend(&row);
                let t = Tensor::from_f32(&backend, &row, &[1, n], DType::BF16).unwrap();
                copy_rows_into(&t, &cache, r).unwrap();
                let pos = Tensor::from_slice(&backend, &[r as u32], &[1]).unwrap();
                copy_rows_into_at(&t, &cache2, &pos).unwrap();
            }
            assert_eq!(cache.to_f32_vec().unwrap(), want, "host offsets on {}", backend.name());
            assert_eq!(cache2.to_f32_vec().unwrap(), want, "device offsets on {}", backend.name());
        }
    }

    #[test]
    fn copy_rows_handles_higher_rank_rows() {
        for backend in test_backends() {
            let dst = Tensor::zeros(&backend, &[4, 2, 3], DType::F16).unwrap();
            let src: Vec<f32> = (1..=12).map(|v| v as f32).collect();
            let st = Tensor::from_f32(&backend, &src, &[2, 2, 3], DType::F16).unwrap();
            copy_rows_into(&st, &dst, 1).unwrap();
            let got = dst.to_f32_vec().unwrap();
            assert_eq!(&got[..6], &[0.0; 6]);
            assert_eq!(&got[6..18], &src[..]);
            assert_eq!(&got[18..], &[0.0; 6]);
        }
    }

    #[test]
    fn device_offset_out_of_range_is_an_error_on_the_cpu_and_writes_nothing_on_the_gpu() {
        for backend in test_backends() {
            let init: Vec<f32> = (0..12).map(|v| v as f32).collect();
            let dst = Tensor::from_slice(&backend, &init, &[4, 3]).unwrap();
            let src = Tensor::from_slice(&backend, &[-1.0f32; 6], &[2, 3]).unwrap();
            for bad in [3u32, 4, 1000, u32::MAX] {
                let pos = Tensor::from_slice(&backend, &[bad], &[1]).unwrap();
                let r = copy_rows_into_at(&src, &dst, &pos);
                if backend.is_gpu() {
                    r.unwrap();
                } else {
                    assert!(matches!(r, Err(KernelError::Argument { name: "dst_row_offset", .. })), "{r:?}");
                }
                assert_eq!(dst.to_vec::<f32>().unwrap(), init, "offset {bad} on {}", backend.name());
            }
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for backend in test_backends() {
            let f = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
            let x = f(&[4, 3], DType::F32);
            let ids = f(&[4], DType::U32);
            assert!(matches!(cast(&x, DType::U32), Err(KernelError::DType { op: "cast", .. })));
            assert!(matches!(cast(&ids, DType::F32), Err(KernelError::DType { op: "cast", .. })));
            assert!(matches!(cast_into(&x, &f(&[3, 4], DType::F16)), Err(KernelError::Shape { op: "cast", .. })));
            assert!(matches!(cast(&f(&[0], DType::F32), DType::F16), Err(KernelError::Empty { .. })));
            assert!(matches!(copy_into(&x, &f(&[4, 3], DType::F16)), Err(KernelError::DType { op: "copy", .. })));
            assert!(matches!(copy_into(&x, &f(&[12], DType::F32)), Err(KernelError::Shape { op: "copy", .. })));
            assert!(matches!(copy(&f(&[0, 3], DType::F32)), Err(KernelError::Empty { .. })));

            let cache = f(&[8, 3], DType::F32);
            assert!(matches!(
                copy_rows_into(&x, &cache, 5),
                Err(KernelError::Argument { op: "copy_rows", name: "dst_row_offset", .. })
            ));
            assert!(matches!(copy_rows_into(&f(&[2, 4], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
            assert!(matches!(copy_rows_into(&f(&[9, 3], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
            assert!(matches!(copy_rows_into(&f(&[3], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
            assert!(matches!(copy_rows_into(&f(&[1, 3], DType::F16), &cache, 0), Err(KernelError::DType { .. })));
            assert!(matches!(copy_rows_into(&cache, &cache, 0), Err(KernelError::Argument { name: "dst", .. })));
            let pos_f = f(&[1], DType::F32);
            let pos_2 = f(&[2], DType::U32);
            assert!(matches!(copy_rows_into_at(&x, &cache, &pos_f), Err(KernelError::DType { .. })));
            assert!(matches!(copy_rows_into_at(&x, &cache, &pos_2), Err(KernelError::Shape { .. })));
        }
    }

    #[test]
    fn the_f64_reference_rounds_correctly() {
        use reference::round;
        assert_eq!(round(65520.0, DType::F16), f64::INFINITY);
        assert_eq!(round(65519.0, DType::F16), 65504.0);
        assert_eq!(round(2f64.powi(-25), DType::F16), 0.0);
        assert_eq!(round(1.5 * 2f64.powi(-25), DType::F16), 2f64.powi(-24));
        assert_eq!(round(1.0 + 1.0 / 256.0, DType::BF16), 1.0);
        assert_eq!(round(1.0 + 3.0 / 256.0, DType::BF16), 1.0 + 4.0 / 256.0);
        assert_eq!(round(0.1, DType::F32), 0.1f32 as f64);
        for v in [1.0f64, 2.0, 0.5, 1024.0, 2f64.powi(-14), 2f64.powi(-24)] {
            assert_eq!(round(v, DType::F16), v);
        }
    }
}

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::CONVERT, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
