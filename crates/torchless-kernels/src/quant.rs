//! Quantized weights in llama.cpp's (ggml's) block formats: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K
//! and Q6_K. [`dequantize`] and [`quantize`] work on ggml's byte layout (as stored in GGUF files);
//! [`QuantTensor`] holds a `[rows, cols]` matrix of blocks on a backend, repacked for 4-byte loads,
//! and the ops in [`crate::ops::qmatmul`] multiply with it, dequantizing in registers.
//!
//! **Device layout.** WGSL loads whole u32 words, and ggml's blocks of 18, 22, 34 and 210 bytes are not
//! word aligned. Each block is split into its *quants* part (16-byte aligned in every format) and its
//! *scales* part (`d`, `m`, `qh`: the fields that are not), and the tensor holds two regions in one
//! `u32` buffer: every block's quants in row-major block order (rows × blocks-per-row × `quant_bytes`),
//! then every block's scales in the same order (`scale_bytes` each, 2-byte scales packed two to a word),
//! then zeros up to a multiple of 16 bytes.
//!
//! | type | ggml bytes | quants | scales | device bytes/weight |
//! |---|---|---|---|---|
//! | Q8_0 | 34 | qs 32 | d 2 | 8.5 (ggml's) |
//! | Q4_0 | 18 | qs 16 | d 2 | 4.5 |
//! | Q4_1 | 20 | qs 16 | d, m 4 | 5.0 |
//! | Q5_0 | 22 | qs 16 | d, pad 2, qh 4 = 8 | 6.0 (ggml: 5.5, +9 %) |
//! | Q5_1 | 24 | qs 16 | d, m, qh 8 | 6.0 |
//! | Q4_K | 144 | the whole block 144 | none | 4.5 |
//! | Q5_K | 176 | the whole block 176 | none | 5.5 |
//! | Q6_K | 210 | ql, qh, scales 208 | d 2 | 6.5625 |
//!
//! So a GPU thread reads a 32-weight group's quants with aligned `vec4<u32>` loads, neighbouring threads
//! read neighbouring 16-byte chunks, and the scales of 32 consecutive blocks are one 64-byte line.
//!
//! **Quantizers** are round-to-nearest: Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 are bit-identical to ggml's
//! reference quantizers (and gguf-py's `quantize_blocks`); Q4_K, Q5_K and Q6_K use ggml's block
//! structure and scale quantization but take each sub-block's scale from its range directly instead of
//! ggml's iterative search (`make_qkx2_quants`/`make_qx_quants`), so their error is somewhat larger than
//! llama-quantize's.

use half::f16;
use rayon::prelude::*;

use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::tensor::Tensor;

/// A ggml block format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QuantType {
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl QuantType {
    pub const ALL: [QuantType; 8] = [
        QuantType::Q8_0,
        QuantType::Q4_0,
        QuantType::Q4_1,
        QuantType::Q5_0,
        QuantType::Q5_1,
        QuantType::Q4K,
        QuantType::Q5K,
        QuantType::Q6K,
    ];

    pub fn name(self) -> &'static str {
        match self {
            QuantType::Q8_0 => "q8_0",
            QuantType::Q4_0 => "q4_0",
            QuantType::Q4_1 => "q4_1",
            QuantType::Q5_0 => "q5_0",
            QuantType::Q5_1 => "q5_1",
            QuantType::Q4K => "q4_k",
            QuantType::Q5K => "q5_k",
            QuantType::Q6K => "q6_k",
        }
    }

    /// The type named `s` (as [`QuantType::name`] spells it; upper case accepted).
    pub fn parse(s: &str) -> Option<QuantType> {
        let s = s.to_ascii_lowercase();
        QuantType::ALL.into_iter().find(|t| t.name() == s)
    }

    /// The `ggml_type` id stored in GGUF tensor infos.
    pub fn ggml_type_id(self) -> u32 {
        match self {
            QuantType::Q4_0 => 2,
            QuantType::Q4_1 => 3,
            QuantType::Q5_0 => 6,
            QuantType::Q5_1 => 7,
            QuantType::Q8_0 => 8,
            QuantType::Q4K => 12,
            QuantType::Q5K => 13,
            QuantType::Q6K => 14,
        }
    }

    pub fn from_ggml_type_id(id: u32) -> Option<QuantType> {
        QuantType::ALL.into_iter().find(|t| t.ggml_type_id() == id)
    }

    /// Weights per block.
    pub fn block_elems(self) -> usize {
        match self {
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => 256,
            _ => 32,
        }
    }

    /// Bytes per block as stored by ggml (GGUF).
    pub fn block_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 => 34,
            QuantType::Q4_0 => 18,
            QuantType::Q4_1 => 20,
            QuantType::Q5_0 => 22,
            QuantType::Q5_1 => 24,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 210,
        }
    }

    /// Bytes of a block's quants part in the device layout (a multiple of 16).
    pub fn quant_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 => 32,
            QuantType::Q4_0 | QuantType::Q4_1 | QuantType::Q5_0 | QuantType::Q5_1 => 16,
            QuantType::Q4K => 144,
            QuantType::Q5K => 176,
            QuantType::Q6K => 208,
        }
    }

    /// Bytes of a block's scales part in the device layout (0, 2, 4 or 8).
    pub fn scale_bytes(self) -> usize {
        match self {
            QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q6K => 2,
            QuantType::Q4_1 => 4,
            QuantType::Q5_0 | QuantType::Q5_1 => 8,
            QuantType::Q4K | QuantType::Q5K => 0,
        }
    }

    /// The value of the `QTYPE` override constant of the WGSL kernels.
    pub fn wgsl_code(self) -> f64 {
        QuantType::ALL.iter().position(|&t| t == self).unwrap_or(0) as f64
    }

    /// Splits a ggml block into its device quants and scales parts.
    fn split_block(self, block: &[u8], q: &mut [u8], s: &mut [u8]) {
        match self {
            QuantType::Q8_0 | QuantType::Q4_0 => {
                s.copy_from_slice(&block[..2]);
                q.copy_from_slice(&block[2..]);
            }
            QuantType::Q4_1 => {
                s.copy_from_slice(&block[..4]);
                q.copy_from_slice(&block[4..]);
            }
            QuantType::Q5_0 => {
                s[..2].copy_from_slice(&block[..2]);
                s[2..4].fill(0);
                s[4..].copy_from_slice(&block[2..6]);
                q.copy_from_slice(&block[6..]);
            }
            QuantType::Q5_1 => {
                s.copy_from_slice(&block[..8]);
                q.copy_from_slice(&block[8..]);
            }
            QuantType::Q4K | QuantType::Q5K => q.copy_from_slice(block),
            QuantType::Q6K => {
                q.copy_from_slice(&block[..208]);
                s.copy_from_slice(&block[208..]);
            }
        }
    }

    /// The inverse of [`QuantType::split_block`].
    fn join_block(self, q: &[u8], s: &[u8], block: &mut [u8]) {
        match self {
            QuantType::Q8_0 | QuantType::Q4_0 => {
                block[..2].copy_from_slice(s);
                block[2..].copy_from_slice(q);
            }
            QuantType::Q4_1 => {
                block[..4].copy_from_slice(s);
                block[4..].copy_from_slice(q);
            }
            QuantType::Q5_0 => {
                block[..2].copy_from_slice(&s[..2]);
                block[2..6].copy_from_slice(&s[4..]);
                block[6..].copy_from_slice(q);
            }
            QuantType::Q5_1 => {
                block[..8].copy_from_slice(s);
                block[8..].copy_from_slice(q);
            }
            QuantType::Q4K | QuantType::Q5K => block.copy_from_slice(q),
            QuantType::Q6K => {
                block[..208].copy_from_slice(q);
                block[208..].copy_from_slice(s);
            }
        }
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Decodes one block from its device parts into `out` (`block_elems` values). The arithmetic is ggml's
/// (and gguf-py's), operation for operation, so results are bit-identical. One function per format on
/// fixed-size arrays, so the compiler unrolls and vectorizes without bounds checks.
pub(crate) fn decode_block(ty: QuantType, q: &[u8], s: &[u8], out: &mut [f32]) {
    fn arr<const N: usize>(b: &[u8]) -> &[u8; N] {
        b[..N].try_into().expect("block part has its format's size")
    }
    fn out32(o: &mut [f32]) -> &mut [f32; 32] {
        (&mut o[..32]).try_into().expect("32 outputs")
    }
    fn out256(o: &mut [f32]) -> &mut [f32; 256] {
        (&mut o[..256]).try_into().expect("256 outputs")
    }
    match ty {
        QuantType::Q8_0 => decode_q8_0(arr(q), h(s, 0), out32(out)),
        QuantType::Q4_0 => decode_q4_0(arr(q), h(s, 0), out32(out)),
        QuantType::Q4_1 => decode_q4_1(arr(q), h(s, 0), h(s, 2), out32(out)),
        QuantType::Q5_0 => decode_q5_0(arr(q), h(s, 0), u32::from_le_bytes(*arr(&s[4..])), out32(out)),
        QuantType::Q5_1 => decode_q5_1(arr(q), h(s, 0), h(s, 2), u32::from_le_bytes(*arr(&s[4..])), out32(out)),
        QuantType::Q4K => decode_k::<false>(q, out256(out)),
        QuantType::Q5K => decode_k::<true>(q, out256(out)),
        QuantType::Q6K => decode_q6_k(arr(q), h(s, 0), out256(out)),
    }
}

fn decode_q8_0(q: &[u8; 32], d: f32, out: &mut [f32; 32]) {
    for (o, &v) in out.iter_mut().zip(q) {
        *o = v as i8 as f32 * d;
    }
}

fn decode_q4_0(q: &[u8; 16], d: f32, out: &mut [f32; 32]) {
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        lo[j] = d * ((q[j] & 0xF) as i32 - 8) as f32;
        hi[j] = d * ((q[j] >> 4) as i32 - 8) as f32;
    }
}

fn decode_q4_1(q: &[u8; 16], d: f32, m: f32, out: &mut [f32; 32]) {
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        lo[j] = d * (q[j] & 0xF) as f32 + m;
        hi[j] = d * (q[j] >> 4) as f32 + m;
    }
}

fn decode_q5_0(q: &[u8; 16], d: f32, qh: u32, out: &mut [f32; 32]) {
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        let a = (q[j] & 0xF) as u32 | ((qh >> j) & 1) << 4;
        let b = (q[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        lo[j] = d * (a as i32 - 16) as f32;
        hi[j] = d * (b as i32 - 16) as f32;
    }
}

fn decode_q5_1(q: &[u8; 16], d: f32, m: f32, qh: u32, out: &mut [f32; 32]) {
    let (lo, hi) = out.split_at_mut(16);
    for j in 0..16 {
        let a = (q[j] & 0xF) as u32 | ((qh >> j) & 1) << 4;
        let b = (q[j] >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
        lo[j] = d * a as f32 + m;
        hi[j] = d * b as f32 + m;
    }
}

/// Q4_K (`FIVE = false`) and Q5_K blocks.
fn decode_k<const FIVE: bool>(q: &[u8], out: &mut [f32; 256]) {
    let (d, dmin) = (h(q, 0), h(q, 2));
    let scales: &[u8; 12] = q[4..16].try_into().expect("12 scale bytes");
    let (qh, qs): (&[u8; 32], &[u8; 128]) = if FIVE {
        (q[16..48].try_into().expect("qh"), q[48..176].try_into().expect("qs"))
    } else {
        (&[0; 32], q[16..144].try_into().expect("qs"))
    };
    for c in 0..4 {
        let (sc0, m0) = scale_min_k4(2 * c, scales);
        let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
        let (d0, dm0) = (d * sc0 as f32, dmin * m0 as f32);
        let (d1, dm1) = (d * sc1 as f32, dmin * m1 as f32);
        let (lo, hi) = out[64 * c..64 * c + 64].split_at_mut(32);
        let qs: &[u8; 32] = qs[32 * c..32 * c + 32].try_into().expect("32 bytes");
        for l in 0..32 {
            let mut a = (qs[l] & 0xF) as u32;
            let mut b = (qs[l] >> 4) as u32;
            if FIVE {
                a |= ((qh[l] >> (2 * c)) as u32 & 1) << 4;
                b |= ((qh[l] >> (2 * c + 1)) as u32 & 1) << 4;
            }
            lo[l] = d0 * a as f32 - dm0;
            hi[l] = d1 * b as f32 - dm1;
        }
    }
}

fn decode_q6_k(q: &[u8; 208], d: f32, out: &mut [f32; 256]) {
    for half in 0..2 {
        let ql: &[u8; 64] = q[64 * half..64 * half + 64].try_into().expect("ql");
        let qh: &[u8; 32] = q[128 + 32 * half..160 + 32 * half].try_into().expect("qh");
        let sc = &q[192 + 8 * half..200 + 8 * half];
        let y = &mut out[128 * half..128 * half + 128];
        // Sub-blocks of 16: y[16 i..16 i + 16] uses scale i.
        for (i, chunk) in y.chunks_exact_mut(16).enumerate() {
            let s = d * sc[i] as i8 as f32;
            let k = i / 2;
            let l0 = 16 * (i % 2);
            for (t, o) in chunk.iter_mut().enumerate() {
                let l = l0 + t;
                let low = match k {
                    0 => ql[l] & 0xF,
                    1 => ql[l + 32] & 0xF,
                    2 => ql[l] >> 4,
                    _ => ql[l + 32] >> 4,
                };
                let v = (low | ((qh[l] >> (2 * k)) & 3) << 4) as i32 - 32;
                *o = s * v as f32;
            }
        }
    }
}

fn check_blocks(op: &'static str, ty: QuantType, bytes: usize, elems: usize) -> Result<usize> {
    let nb = bytes / ty.block_bytes();
    if !bytes.is_multiple_of(ty.block_bytes()) || nb * ty.block_elems() != elems {
        return Err(KernelError::Argument {
            op,
            name: "blocks",
            value: format!("{bytes} bytes for {elems} values"),
            reason: format!(
                "{ty} stores {} values in {} bytes: expected {} bytes{}",
                ty.block_elems(),
                ty.block_bytes(),
                elems.div_ceil(ty.block_elems()) * ty.block_bytes(),
                if elems.is_multiple_of(ty.block_elems()) { "" } else { " (and a whole number of blocks)" }
            ),
        });
    }
    Ok(nb)
}

/// Decodes ggml blocks of `ty` into `out` (one value per weight; `out.len()` must be the number of
/// weights the blocks hold).
pub fn dequantize(ty: QuantType, blocks: &[u8], out: &mut [f32]) -> Result<()> {
    check_blocks("dequantize", ty, blocks.len(), out.len())?;
    let (mut q, mut s) = (vec![0u8; ty.quant_bytes()], vec![0u8; ty.scale_bytes()]);
    for (block, o) in blocks.chunks_exact(ty.block_bytes()).zip(out.chunks_exact_mut(ty.block_elems())) {
        ty.split_block(block, &mut q, &mut s);
        decode_block(ty, &q, &s, o);
    }
    Ok(())
}

/// Round-to-nearest quantization of `values` (a whole number of blocks) into ggml blocks of `ty`.
pub fn quantize(ty: QuantType, values: &[f32]) -> Result<Vec<u8>> {
    let op = "quantize";
    if !values.len().is_multiple_of(ty.block_elems()) {
        return Err(KernelError::Argument {
            op,
            name: "values",
            value: values.len().to_string(),
            reason: format!("{ty} quantizes whole blocks of {} values", ty.block_elems()),
        });
    }
    // Checked in parallel chunks (rayon's per-element position_first costs more than the quantization).
    const CHECK: usize = 1 << 16;
    let bad = values
        .par_chunks(CHECK)
        .enumerate()
        .find_map_first(|(k, c)| c.iter().position(|v| !v.is_finite()).map(|i| k * CHECK + i));
    if let Some(i) = bad {
        return Err(KernelError::Argument {
            op,
            name: "values",
            value: format!("{} at index {i}", values[i]),
            reason: "only finite values can be quantized".into(),
        });
    }
    let mut out = vec![0u8; values.len() / ty.block_elems() * ty.block_bytes()];
    // Blocks are independent: quantizing an 8B model's matrices on one core took ~100 s.
    let per_task = 256;
    let tasks = values.par_chunks(ty.block_elems() * per_task).zip(out.par_chunks_mut(ty.block_bytes() * per_task));
    tasks.for_each(|(xs, bs)| quantize_blocks(ty, xs, bs));
    Ok(out)
}

/// Quantizes whole blocks `values` into `out` (ggml layout).
fn quantize_blocks(ty: QuantType, values: &[f32], out: &mut [u8]) {
    for (x, b) in values.chunks_exact(ty.block_elems()).zip(out.chunks_exact_mut(ty.block_bytes())) {
        match ty {
            QuantType::Q8_0 => quantize_q8_0(x, b),
            QuantType::Q4_0 | QuantType::Q5_0 => quantize_sym(ty, x, b),
            QuantType::Q4_1 | QuantType::Q5_1 => quantize_affine(ty, x, b),
            QuantType::Q4K | QuantType::Q5K => quantize_k(ty, x, b),
            QuantType::Q6K => quantize_q6_k(x, b),
        }
    }
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

fn inverse(d: f32) -> f32 {
    if d == 0.0 { 0.0 } else { 1.0 / d }
}

/// ggml's `quantize_row_q8_0_ref`.
fn quantize_q8_0(x: &[f32], b: &mut [u8]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = inverse(d);
    put_f16(b, 0, d);
    for (o, &v) in b[2..].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// The value of largest magnitude (the first one on ties), with its sign.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// ggml's `quantize_row_q4_0_ref` / `quantize_row_q5_0_ref`.
fn quantize_sym(ty: QuantType, x: &[f32], b: &mut [u8]) {
    let five = ty == QuantType::Q5_0;
    let (half, top) = if five { (16.0f32, 31) } else { (8.0f32, 15) };
    let d = signed_absmax(x) / -half;
    let id = inverse(d);
    let q: Vec<u8> = x.iter().map(|&v| ((v * id + (half + 0.5)).trunc() as i32).clamp(0, top) as u8).collect();
    put_f16(b, 0, d);
    let qs_at = if five { 6 } else { 2 };
    let mut qh = 0u32;
    for j in 0..16 {
        b[qs_at + j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
        qh |= ((q[j] as u32 >> 4) & 1) << j | ((q[j + 16] as u32 >> 4) & 1) << (j + 16);
    }
    if five {
        b[2..6].copy_from_slice(&qh.to_le_bytes());
    }
}

/// ggml's `quantize_row_q4_1_ref` / `quantize_row_q5_1_ref`.
fn quantize_affine(ty: QuantType, x: &[f32], b: &mut [u8]) {
    let five = ty == QuantType::Q5_1;
    let top = if five { 31 } else { 15 };
    let (min, max) = x.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let d = (max - min) / top as f32;
    let id = inverse(d);
    let q: Vec<u8> = x.iter().map(|&v| (((v - min) * id + 0.5).trunc() as i32).clamp(0, top) as u8).collect();
    put_f16(b, 0, d);
    put_f16(b, 2, min);
    let qs_at = if five { 8 } else { 4 };
    let mut qh = 0u32;
    for j in 0..16 {
        b[qs_at + j] = (q[j] & 0xF) | ((q[j + 16] & 0xF) << 4);
        qh |= ((q[j] as u32 >> 4) & 1) << j | ((q[j + 16] as u32 >> 4) & 1) << (j + 16);
    }
    if five {
        b[4..8].copy_from_slice(&qh.to_le_bytes());
    }
}

/// Q4_K / Q5_K: each sub-block of 32 takes scale (max − min)/levels and min −min(min, 0); the scales and
/// mins are quantized to 6 bits against the block's largest ones, as ggml does after its search.
fn quantize_k(ty: QuantType, x: &[f32], b: &mut [u8]) {
    let five = ty == QuantType::Q5K;
    let top: i32 = if five { 31 } else { 15 };
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    for j in 0..8 {
        let sub = &x[32 * j..32 * j + 32];
        let (lo, hi) = sub.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let lo = lo.min(0.0);
        scales[j] = (hi - lo) / top as f32;
        mins[j] = -lo;
    }
    let max_scale = scales.iter().fold(0f32, |m, &v| m.max(v));
    let max_min = mins.iter().fold(0f32, |m, &v| m.max(v));
    let inv_scale = if max_scale > 0.0 { 63.0 / max_scale } else { 0.0 };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let ls: [u8; 8] = std::array::from_fn(|j| (inv_scale * scales[j]).round().min(63.0) as u8);
    let lm: [u8; 8] = std::array::from_fn(|j| (inv_min * mins[j]).round().min(63.0) as u8);
    put_f16(b, 0, max_scale / 63.0);
    put_f16(b, 2, max_min / 63.0);
    let sc = &mut b[4..16];
    for j in 0..8 {
        if j < 4 {
            sc[j] = ls[j];
            sc[j + 4] = lm[j];
        } else {
            sc[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            sc[j - 4] |= (ls[j] >> 4) << 6;
            sc[j] |= (lm[j] >> 4) << 6;
        }
    }
    let (d, dmin) = (h(b, 0), h(b, 2));
    let mut q = [0u8; 256];
    for j in 0..8 {
        let (s, m) = scale_min_k4(j, &b[4..16]);
        let dl = d * s as f32;
        if dl == 0.0 {
            continue;
        }
        let dm = dmin * m as f32;
        for i in 32 * j..32 * j + 32 {
            q[i] = (((x[i] + dm) / dl).round() as i32).clamp(0, top) as u8;
        }
    }
    let qs_at = if five { 48 } else { 16 };
    if five {
        b[16..48].fill(0);
    }
    for c in 0..4 {
        for l in 0..32 {
            let (lo, hi) = (q[64 * c + l], q[64 * c + 32 + l]);
            b[qs_at + 32 * c + l] = (lo & 0xF) | ((hi & 0xF) << 4);
            if five {
                b[16 + l] |= ((lo >> 4) & 1) << (2 * c) | ((hi >> 4) & 1) << (2 * c + 1);
            }
        }
    }
}

/// Q6_K: each sub-block of 16 takes scale max/−32 (its value of largest magnitude maps to −32); the
/// scales are quantized to 8 bits against the block's largest, as ggml does after its search.
fn quantize_q6_k(x: &[f32], b: &mut [u8]) {
    let scales: [f32; 16] = std::array::from_fn(|i| signed_absmax(&x[16 * i..16 * i + 16]) / -32.0);
    let max_scale = signed_absmax(&scales);
    b.fill(0);
    if max_scale == 0.0 {
        return;
    }
    let iscale = -128.0 / max_scale;
    put_f16(b, 208, 1.0 / iscale);
    for i in 0..16 {
        b[192 + i] = ((iscale * scales[i]).round().min(127.0) as i8) as u8;
    }
    let d = h(b, 208);
    let mut q = [0u8; 256];
    for i in 0..16 {
        let dl = d * b[192 + i] as i8 as f32;
        if dl == 0.0 {
            q[16 * i..16 * i + 16].fill(32);
            continue;
        }
        for k in 16 * i..16 * i + 16 {
            q[k] = ((x[k] / dl).round() as i32).clamp(-32, 31).wrapping_add(32) as u8;
        }
    }
    for half in 0..2 {
        for l in 0..32 {
            let v = |k: usize| q[128 * half + l + 32 * k];
            b[64 * half + l] = (v(0) & 0xF) | ((v(2) & 0xF) << 4);
            b[64 * half + l + 32] = (v(1) & 0xF) | ((v(3) & 0xF) << 4);
            b[128 + 32 * half + l] = (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
        }
    }
}

/// A `[rows, cols]` matrix of ggml blocks (each row `cols / block_elems` blocks) on a backend, in the
/// device layout of this module's documentation. Clones share storage.
#[derive(Clone, Debug)]
pub struct QuantTensor {
    ty: QuantType,
    rows: usize,
    cols: usize,
    /// u32 words: the quants region, then the scales region.
    data: Tensor,
}

impl QuantTensor {
    /// The matrix stored in ggml's layout (`bytes`: rows × cols/block_elems blocks, row-major), repacked
    /// and uploaded to `backend`.
    pub fn from_ggml_bytes(backend: &Backend, ty: QuantType, rows: usize, cols: usize, bytes: &[u8]) -> Result<Self> {
        let op = "QuantTensor::from_ggml_bytes";
        check_shape(op, ty, rows, cols)?;
        let nb = rows * (cols / ty.block_elems());
        if bytes.len() != nb * ty.block_bytes() {
            return Err(KernelError::Argument {
                op,
                name: "bytes",
                value: bytes.len().to_string(),
                reason: format!(
                    "a {ty} matrix [{rows}, {cols}] is {nb} blocks of {} bytes = {} bytes",
                    ty.block_bytes(),
                    nb * ty.block_bytes()
                ),
            });
        }
        let (qb, sb) = (ty.quant_bytes(), ty.scale_bytes());
        let q_len = nb * qb;
        let total = device_bytes(ty, nb);
        let mut dev = vec![0u8; total];
        let (qs, ss) = dev.split_at_mut(q_len);
        // Blocks are independent; repacking an 8B model's matrices on one core took ~15 s.
        const PER_TASK: usize = 1024;
        let repack = |blocks: &[u8], q: &mut [u8], s: &mut [u8]| {
            for (i, block) in blocks.chunks_exact(ty.block_bytes()).enumerate() {
                ty.split_block(block, &mut q[i * qb..][..qb], &mut s[i * sb..][..sb]);
            }
        };
        let tasks = bytes.par_chunks(ty.block_bytes() * PER_TASK).zip(qs.par_chunks_mut(qb * PER_TASK));
        if sb == 0 {
            // The K-quants keep their scales inside the quant vectors.
            tasks.for_each(|(blocks, q)| repack(blocks, q, &mut []));
        } else {
            tasks.zip(ss.par_chunks_mut(sb * PER_TASK)).for_each(|((blocks, q), s)| repack(blocks, q, s));
        }
        let data = Tensor::from_bytes(backend, &dev, &[total / 4], DType::U32)?;
        Ok(QuantTensor { ty, rows, cols, data })
    }

    /// Quantizes `values` (`[rows, cols]`, row-major) with [`quantize`] and uploads the result.
    pub fn quantize(backend: &Backend, ty: QuantType, values: &[f32], rows: usize, cols: usize) -> Result<Self> {
        let op = "QuantTensor::quantize";
        check_shape(op, ty, rows, cols)?;
        if values.len() != rows * cols {
            return Err(KernelError::DataLength {
                shape: vec![rows, cols],
                expected: rows * cols,
                found: values.len(),
            });
        }
        let bytes = quantize(ty, values)?;
        Self::from_ggml_bytes(backend, ty, rows, cols, &bytes)
    }

    /// A tensor around device data in this module's layout (as [`QuantTensor::data`] returns it), e.g. moved
    /// to another backend; its length must match the shape.
    pub fn from_device_data(ty: QuantType, rows: usize, cols: usize, data: Tensor) -> Result<Self> {
        let op = "QuantTensor::from_device_data";
        check_shape(op, ty, rows, cols)?;
        let nb = rows * (cols / ty.block_elems());
        let bytes = device_bytes(ty, nb);
        if data.dtype() != DType::U32 || data.size_bytes() != bytes {
            return Err(KernelError::Argument {
                op,
                name: "data",
                value: format!("{:?} {}", data.shape(), data.dtype()),
                reason: format!("a {ty} matrix [{rows}, {cols}] is {} u32 words", bytes / 4),
            });
        }
        Ok(QuantTensor { ty, rows, cols, data })
    }

    pub fn quant_type(&self) -> QuantType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Blocks per row.
    pub fn row_blocks(&self) -> usize {
        self.cols / self.ty.block_elems()
    }
    /// Bytes of the device data (quants and scales).
    pub fn size_bytes(&self) -> usize {
        self.data.size_bytes()
    }
    pub fn backend(&self) -> Backend {
        self.data.backend()
    }
    /// The device words (quants region, then scales region).
    pub fn data(&self) -> &Tensor {
        &self.data
    }
    /// Byte offset of the scales region.
    pub fn scales_offset(&self) -> usize {
        self.rows * self.row_blocks() * self.ty.quant_bytes()
    }

    /// The same data on another backend.
    pub fn to_backend(&self, backend: &Backend) -> Result<QuantTensor> {
        Ok(QuantTensor { data: self.data.to_backend(backend)?, ..self.clone() })
    }

    /// The matrix back in ggml's layout.
    pub fn to_ggml_bytes(&self) -> Result<Vec<u8>> {
        let dev = self.data.to_bytes()?;
        let ty = self.ty;
        let (qb, sb, bb) = (ty.quant_bytes(), ty.scale_bytes(), ty.block_bytes());
        let nb = self.rows * self.row_blocks();
        let (qs, ss) = dev.split_at(self.scales_offset());
        let mut out = vec![0u8; nb * bb];
        for (i, block) in out.chunks_exact_mut(bb).enumerate() {
            ty.join_block(&qs[i * qb..][..qb], &ss[i * sb..][..sb], block);
        }
        Ok(out)
    }

    /// All weights dequantized, `[rows, cols]` row-major (for tests).
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let dev = self.data.to_bytes()?;
        let view = BlockView::new(self, &dev);
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            view.decode_row(r, row);
        }
        Ok(out)
    }
}

/// Bytes of the device data of `nb` blocks: the quants, the scales, zeros up to a multiple of 16 (kernels
/// bind the data as `array<vec4<u32>>`).
fn device_bytes(ty: QuantType, nb: usize) -> usize {
    (nb * ty.quant_bytes() + nb * ty.scale_bytes()).next_multiple_of(16)
}

fn check_shape(op: &'static str, ty: QuantType, rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 {
        return Err(KernelError::Empty { op, what: "matrix" });
    }
    if !cols.is_multiple_of(ty.block_elems()) {
        return Err(KernelError::Shape {
            op,
            detail: format!("{ty} rows are whole blocks of {} values; cols = {cols} is not", ty.block_elems()),
        });
    }
    // Element and byte counts must fit (shapes come from files).
    let fits = rows.checked_mul(cols).and_then(|n| (n / ty.block_elems()).checked_mul(ty.block_bytes() + 16));
    if fits.is_none_or(|b| b > isize::MAX as usize) {
        return Err(KernelError::Shape {
            op,
            detail: format!("a {ty} matrix [{rows}, {cols}] is too large to address"),
        });
    }
    Ok(())
}

/// Host bytes of a [`QuantTensor`] in the device layout, decoded a block at a time.
pub(crate) struct BlockView<'a> {
    pub ty: QuantType,
    pub row_blocks: usize,
    quants: &'a [u8],
    scales: &'a [u8],
}

impl<'a> BlockView<'a> {
    pub fn new(t: &QuantTensor, dev: &'a [u8]) -> BlockView<'a> {
        let (quants, scales) = dev.split_at(t.scales_offset());
        BlockView { ty: t.ty, row_blocks: t.row_blocks(), quants, scales }
    }

    /// Decodes block `b` of row `r` into `out` (`block_elems` values).
    pub fn decode(&self, r: usize, b: usize, out: &mut [f32]) {
        let i = r * self.row_blocks + b;
        let (qb, sb) = (self.ty.quant_bytes(), self.ty.scale_bytes());
        decode_block(self.ty, &self.quants[i * qb..][..qb], &self.scales[i * sb..][..sb], out);
    }

    /// Row `r`'s quants and scales parts.
    pub fn row(&self, r: usize) -> (&'a [u8], &'a [u8]) {
        let (qb, sb) = (self.row_blocks * self.ty.quant_bytes(), self.row_blocks * self.ty.scale_bytes());
        (&self.quants[r * qb..][..qb], &self.scales[r * sb..][..sb])
    }

    /// Decodes row `r` into `out` (`cols` values).
    pub fn decode_row(&self, r: usize, out: &mut [f32]) {
        for (b, o) in out.chunks_exact_mut(self.ty.block_elems()).enumerate() {
            self.decode(r, b, o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn names_ids_and_sizes_round_trip() {
        for ty in QuantType::ALL {
            assert_eq!(QuantType::parse(ty.name()), Some(ty));
            assert_eq!(QuantType::parse(&ty.name().to_uppercase()), Some(ty));
            assert_eq!(QuantType::from_ggml_type_id(ty.ggml_type_id()), Some(ty));
            let split = ty.quant_bytes() + ty.scale_bytes();
            assert!(split >= ty.block_bytes() && split <= ty.block_bytes() + 2, "{ty}");
            assert!(ty.quant_bytes().is_multiple_of(16), "{ty}");
        }
        assert_eq!(QuantType::parse("q4_2"), None);
        assert_eq!(QuantType::from_ggml_type_id(15), None);
    }

    #[test]
    fn repacking_round_trips_the_ggml_bytes() {
        let mut rng = Rng::new(3);
        for ty in QuantType::ALL {
            let (rows, cols) = (3, 2 * ty.block_elems());
            let mut bytes: Vec<u8> =
                (0..rows * cols / ty.block_elems() * ty.block_bytes()).map(|_| rng.below(256) as u8).collect();
            // Keep f16 fields finite: clear their exponent's top bit.
            for block in bytes.chunks_exact_mut(ty.block_bytes()) {
                for at in f16_offsets(ty) {
                    block[at + 1] &= 0x3f;
                }
            }
            let t = QuantTensor::from_ggml_bytes(&Backend::Cpu, ty, rows, cols, &bytes).unwrap();
            assert_eq!(t.to_ggml_bytes().unwrap(), bytes, "{ty}");
            let mut want = vec![0f32; rows * cols];
            dequantize(ty, &bytes, &mut want).unwrap();
            assert_eq!(t.to_f32_vec().unwrap(), want, "{ty}");
        }
    }

    fn f16_offsets(ty: QuantType) -> Vec<usize> {
        match ty {
            QuantType::Q4_1 | QuantType::Q5_1 | QuantType::Q4K | QuantType::Q5K => vec![0, 2],
            QuantType::Q6K => vec![208],
            _ => vec![0],
        }
    }

    /// Quantize → dequantize stays within each format's step: half a step for Q8_0, Q4_1 and Q5_1 (plus the
    /// f16 rounding of the scale), one for Q4_0 and Q5_0 (the far end of their range is clamped), one and a
    /// half for the K-quants (their scales are quantized too).
    #[test]
    fn quantization_error_is_within_the_format_bound() {
        let mut rng = Rng::new(5);
        for ty in QuantType::ALL {
            let n = 4 * 256;
            let mut x = rng.vec(n, -1.0, 1.0);
            // Some blocks with an offset, one all zero, one constant.
            x[256..512].iter_mut().for_each(|v| *v = *v * 0.1 + 0.5);
            x[512..544].fill(0.0);
            x[576..608].fill(0.25);
            let bytes = quantize(ty, &x).unwrap();
            let mut y = vec![0f32; n];
            dequantize(ty, &bytes, &mut y).unwrap();
            let group = if matches!(ty, QuantType::Q4K | QuantType::Q5K | QuantType::Q6K) { 256 } else { 32 };
            for (g, (xs, ys)) in x.chunks(group).zip(y.chunks(group)).enumerate() {
                let lo = xs.iter().fold(f32::INFINITY, |m, &v| m.min(v));
                let hi = xs.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let amax = hi.abs().max(lo.abs());
                let f16_slack = 1e-3 * amax;
                let bound = match ty {
                    QuantType::Q8_0 => 0.5 * amax / 127.0 * 1.01 + f16_slack,
                    // q = x/d + 8 rounds up to 16 and is clamped to 15 near −8d: up to one step there.
                    QuantType::Q4_0 => amax / 8.0 * 1.01 + f16_slack,
                    QuantType::Q5_0 => amax / 16.0 * 1.01 + f16_slack,
                    QuantType::Q4_1 => 0.5 * (hi - lo) / 15.0 * 1.01 + f16_slack,
                    QuantType::Q5_1 => 0.5 * (hi - lo) / 31.0 * 1.01 + f16_slack,
                    // Sub-block scales and mins are themselves quantized: 1.5 steps of the block's range.
                    QuantType::Q4K => 1.5 * (hi.max(0.0) - lo.min(0.0)) / 15.0,
                    QuantType::Q5K => 1.5 * (hi.max(0.0) - lo.min(0.0)) / 31.0,
                    QuantType::Q6K => 1.5 * amax / 32.0,
                };
                for (i, (a, b)) in xs.iter().zip(ys).enumerate() {
                    assert!(
                        (a - b).abs() <= bound + 1e-7,
                        "{ty}: group {g} index {i}: {a} became {b} (error {:.3e} > bound {bound:.3e})",
                        (a - b).abs()
                    );
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_typed_errors() {
        let ty = QuantType::Q4_0;
        assert!(matches!(
            QuantTensor::from_ggml_bytes(&Backend::Cpu, ty, 2, 48, &[0; 36]),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(
            QuantTensor::from_ggml_bytes(&Backend::Cpu, ty, 2, 64, &[0; 70]),
            Err(KernelError::Argument { .. })
        ));
        assert!(matches!(
            QuantTensor::from_ggml_bytes(&Backend::Cpu, ty, usize::MAX / 2, 64, &[]),
            Err(KernelError::Shape { .. })
        ));
        assert!(matches!(quantize(ty, &[0.0; 33]), Err(KernelError::Argument { .. })));
        assert!(matches!(quantize(ty, &[f32::NAN; 32]), Err(KernelError::Argument { .. })));
        // The first non-finite value is named, past the check's first parallel chunk too.
        let mut values = vec![0.5f32; 4 << 16];
        values[(3 << 16) + 5] = f32::INFINITY;
        values[(1 << 16) + 7] = f32::NAN;
        match quantize(QuantType::Q8_0, &values) {
            Err(KernelError::Argument { value, .. }) => assert_eq!(value, format!("NaN at index {}", (1 << 16) + 7)),
            other => panic!("expected an argument error, got {other:?}"),
        }
        assert!(matches!(dequantize(ty, &[0; 18], &mut [0.0; 31]), Err(KernelError::Argument { .. })));
        assert!(matches!(dequantize(ty, &[0; 17], &mut [0.0; 32]), Err(KernelError::Argument { .. })));
    }
}
