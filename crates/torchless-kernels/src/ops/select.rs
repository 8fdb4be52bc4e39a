//! Gathers and selections: embedding lookup, argmax and top-k.
//!
//! **Embedding.** `embedding(table [vocab, dim], ids u32 [n] or [b, n])` gathers rows into
//! `[.., dim]`, optionally multiplied by a scale (Gemma multiplies by `sqrt(dim)`; pass the value as
//! the model rounds it) and converted to another float dtype. An id `>= vocab` is a
//! [`KernelError::Argument`] on the CPU. On the GPU the ids live on the device and the host does not
//! read them (a decode step feeds the sampled token straight back), so the kernel checks each id and
//! writes a row of zeros for one out of range; it never reads outside the table.
//!
//! **Order.** argmax and top-k order values as `torch` does: larger first, NaN above everything
//! (so a row with a NaN answers its first NaN), `-0 == +0`, and ties go to the lower index. A row of
//! `-inf` answers index 0. [`order_key`] is that order as an integer.
//!
//! **Long rows.** On the GPU a row is split into chunks of a few thousand elements, one workgroup each,
//! when there are too few rows to fill the device (a single 128k-vocab row uses dozens of workgroups);
//! a second pass merges the chunks' results. With many rows, one workgroup takes a whole row.

use rayon::prelude::*;

use super::{common_backend, gpu_buffer, require_float, require_non_empty, to_u32};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, Workgroups};
use crate::tensor::{Tensor, bytes_to_f32};

crate::kernel_source!(SELECT, "select", ["bits16", "select"]);

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    chunks: u32,
    chunk_len: u32,
    k: u32,
    threads: u32,
    scale: f32,
    scale_neg: f32,
}

/// The largest k of [`topk`].
pub const TOPK_MAX: usize = 64;

const WORKGROUP: usize = 256;
/// Output vec4s a thread of `embedding_vec` writes (`EMB_UNITS` in select.wgsl).
const EMBEDDING_UNITS: u32 = 4;
/// Workgroups to aim for when splitting rows: a row is split only while the rows alone make fewer. On the
/// H200 (132 SMs) every split that a merge pass has to undo cost more than it gained: [523, 128256] f32
/// with one workgroup a row (523) argmax 94.5 % of copy and topk 1.48 TB/s, against 90.9 % and 1.22 TB/s
/// split in two (the target 1024), 89.6 % and 0.87 TB/s in eight
/// (`benchmarks/results/2026-12-04-h200/select_split/`).
const TARGET_WORKGROUPS: usize = 512;
/// The shortest chunk of a split row: argmax reads 8 values per thread at least.
const ARGMAX_MIN_CHUNK: usize = 2048;
/// Top-k chunks are longer, so the merge pass sees fewer candidates (chunks · k); and a workgroup's
/// first tile and merges cost the same however long its chunk, so no chunk is made shorter than the
/// device needs (on the H200, [2092, 128256] f32 at 1.72 TB/s with a row per workgroup, 1.09 TB/s with
/// chunks of at most 32k).
const TOPK_MIN_CHUNK: usize = 4096;

// ---- embedding ---------------------------------------------------------------------------------

/// `table[ids]` as f32: `[.., dim]`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    embedding_scaled(table, ids, 1.0, DType::F32)
}

/// `scale · table[ids]`, in `dtype` (f32, f16 or bf16).
pub fn embedding_scaled(table: &Tensor, ids: &Tensor, scale: f32, dtype: DType) -> Result<Tensor> {
    let shape = embedding_shape(table, ids)?;
    if !dtype.is_float() {
        return Err(KernelError::DType { op: "embedding", expected: "f32, f16 or bf16 output".into(), found: dtype });
    }
    let out = Tensor::uninit(&table.backend(), "embedding", &shape, dtype)?;
    embedding_scaled_into(table, ids, scale, &out)?;
    Ok(out)
}

/// `table[ids]` into `out` (shape `ids.shape + [dim]`, any float dtype).
pub fn embedding_into(table: &Tensor, ids: &Tensor, out: &Tensor) -> Result<()> {
    embedding_scaled_into(table, ids, 1.0, out)
}

/// `scale · table[ids]` into `out` (shape `ids.shape + [dim]`, any float dtype).
pub fn embedding_scaled_into(table: &Tensor, ids: &Tensor, scale: f32, out: &Tensor) -> Result<()> {
    let op = "embedding";
    let shape = embedding_shape(table, ids)?;
    require_float(op, out)?;
    if out.shape() != shape.as_slice() {
        return Err(KernelError::Shape { op, detail: format!("out is {:?}, expected {shape:?}", out.shape()) });
    }
    if !scale.is_finite() {
        return Err(KernelError::Argument {
            op,
            name: "scale",
            value: scale.to_string(),
            reason: "must be finite".into(),
        });
    }
    if out.same_storage(table) {
        return Err(KernelError::Argument {
            op,
            name: "out",
            value: "table".into(),
            reason: "the output must be a separate tensor".into(),
        });
    }
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    to_u32(op, "table elements", table.numel())?;
    to_u32(op, "output elements", out.numel())?;
    match common_backend(op, &[table, ids, out])? {
        Backend::Cpu => cpu_embedding(table, ids, scale, out),
        Backend::Gpu(ctx) => {
            let n = ids.numel();
            let (tb, ib, ob) = (gpu_buffer(table), gpu_buffer(ids), gpu_buffer(out));
            for b in [tb, ib, ob] {
                ctx.check_binding(op, b.size())?;
            }
            let vec_path = dim % 8 == 0;
            // The vec4 path writes EMBEDDING_UNITS output vec4s a thread, the other a word a thread.
            let per_word = 4 / out.dtype().size_bytes();
            let threads = if vec_path { n * dim / (4 * per_word) } else { (n * dim).div_ceil(per_word) };
            let params = Params {
                rows: to_u32(op, "ids", n)?,
                n: to_u32(op, "dim", dim)?,
                k: to_u32(op, "vocab", vocab)?,
                threads: to_u32(op, "elements", threads)?,
                scale,
                ..Params::default()
            };
            let per_group = if vec_path { EMBEDDING_UNITS * WORKGROUP as u32 } else { WORKGROUP as u32 };
            let constants = [
                ("DTYPE", table.dtype().wgsl_code()),
                ("OUT_DTYPE", out.dtype().wgsl_code()),
                ("SCALED", if scale == 1.0 { 0.0 } else { 1.0 }),
            ];
            ctx.dispatch(Dispatch {
                kernel: &SELECT,
                entry: if vec_path { "embedding_vec" } else { "embedding_any" },
                constants: &constants,
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[tb, ib, ob],
                workgroups: Workgroups::Linear(params.threads.div_ceil(per_group)),
            })
        }
    }
}

/// Checks the table and ids; the output shape `ids.shape + [dim]`.
fn embedding_shape(table: &Tensor, ids: &Tensor) -> Result<Vec<usize>> {
    let op = "embedding";
    require_float(op, table)?;
    if table.shape().len() != 2 {
        return Err(KernelError::Shape {
            op,
            detail: format!("table must be [vocab, dim], found {:?}", table.shape()),
        });
    }
    require_non_empty(op, "table", table)?;
    if ids.dtype() != DType::U32 {
        return Err(KernelError::DType { op, expected: "u32 ids".into(), found: ids.dtype() });
    }
    if !(1..=2).contains(&ids.shape().len()) {
        return Err(KernelError::Shape {
            op,
            detail: format!("ids must be [n] or [batch, n], found {:?}", ids.shape()),
        });
    }
    require_non_empty(op, "ids", ids)?;
    let mut shape = ids.shape().to_vec();
    shape.push(table.shape()[1]);
    Ok(shape)
}

fn cpu_embedding(table: &Tensor, ids: &Tensor, scale: f32, out: &Tensor) -> Result<()> {
    let (vocab, dim) = (table.shape()[0], table.shape()[1]);
    let ids = cpu::read_u32(ids);
    if let Some((pos, &bad)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= vocab) {
        return Err(KernelError::Argument {
            op: "embedding",
            name: "ids",
            value: bad.to_string(),
            reason: format!("id at position {pos} is out of range for a vocabulary of {vocab} rows"),
        });
    }
    let words = table.cpu_words().expect("CPU tensor");
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let row_bytes = dim * table.dtype().size_bytes();
    let row = |id: u32| &bytes[id as usize * row_bytes..(id as usize + 1) * row_bytes];
    if table.dtype() == out.dtype() && scale == 1.0 {
        let mut gathered = Vec::with_capacity(ids.len() * row_bytes);
        for &id in &ids {
            gathered.extend_from_slice(row(id));
        }
        cpu::write_bytes(out, 0, &gathered);
        return Ok(());
    }
    let mut values = vec![0f32; ids.len() * dim];
    values.par_chunks_mut(dim).zip(&ids).for_each(|(o, &id)| {
        o.copy_from_slice(&bytes_to_f32(row(id), table.dtype()));
        if scale != 1.0 {
            o.iter_mut().for_each(|v| *v *= scale);
        }
    });
    drop(words);
    cpu::write_f32(out, &values);
    Ok(())
}

// ---- argmax and top-k --------------------------------------------------------------------------

/// The order of argmax and top-k as an integer: `a` comes before `b` when `order_key(a) >
/// order_key(b)`. Every NaN maps above +inf, and -0 maps to +0. No value maps to 0.
pub fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if v.is_nan() {
        u32::MAX
    } else if b == 0x8000_0000 {
        0x8000_0000
    } else if b & 0x8000_0000 != 0 {
        !b
    } else {
        b ^ 0x8000_0000
    }
}

/// Checks a float `x` of `[n]` or `[rows, n]`; returns (rows, n).
fn rows_of(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    require_float(op, x)?;
    if !(1..=2).contains(&x.shape().len()) {
        return Err(KernelError::Shape { op, detail: format!("x must be [n] or [rows, n], found {:?}", x.shape()) });
    }
    require_non_empty(op, "x", x)?;
    to_u32(op, "elements", x.numel())?;
    Ok(x.rows_cols())
}

fn require_out(op: &'static str, t: &Tensor, dtype: DType, shape: &[usize]) -> Result<()> {
    if t.dtype() != dtype {
        return Err(KernelError::DType { op, expected: format!("{dtype} output"), found: t.dtype() });
    }
    if t.shape() != shape {
        return Err(KernelError::Shape { op, detail: format!("output is {:?}, expected {shape:?}", t.shape()) });
    }
    Ok(())
}

/// How a row is split over workgroups.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    chunks: usize,
    chunk_len: usize,
}

/// Enough chunks per row to reach [`TARGET_WORKGROUPS`], none shorter than `min_chunk` (a row of
/// `min_chunk` or fewer elements, or many rows, gives one chunk per row).
fn split(rows: usize, n: usize, min_chunk: usize) -> Split {
    let chunks = TARGET_WORKGROUPS.div_ceil(rows).min(n.div_ceil(min_chunk)).max(1);
    forced_split(n, chunks)
}

fn forced_split(n: usize, chunks: usize) -> Split {
    let chunk_len = n.div_ceil(chunks.clamp(1, n));
    Split { chunks: n.div_ceil(chunk_len), chunk_len }
}

/// The index of the first maximum of each row of `x [rows, n]` (or `[n]`): u32 `[rows]`.
pub fn argmax(x: &Tensor) -> Result<Tensor> {
    let (rows, _) = rows_of("argmax", x)?;
    let out = Tensor::uninit(&x.backend(), "argmax", &[rows], DType::U32)?;
    argmax_into(x, &out)?;
    Ok(out)
}

/// [`argmax`] into a u32 tensor of `[rows]`.
pub fn argmax_into(x: &Tensor, out: &Tensor) -> Result<()> {
    argmax_with(x, out, None)
}

fn argmax_with(x: &Tensor, out: &Tensor, chunks: Option<usize>) -> Result<()> {
    let op = "argmax";
    let (rows, n) = rows_of(op, x)?;
    require_out(op, out, DType::U32, &[rows])?;
    match common_backend(op, &[x, out])? {
        Backend::Cpu => {
            let v = cpu::read_f32(x);
            let idx: Vec<u32> = v.par_chunks(n).map(argmax_row).collect();
            cpu::write_u32(out, &idx);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let s = chunks.map_or_else(|| split(rows, n, ARGMAX_MIN_CHUNK), |c| forced_split(n, c));
            let (xb, ob) = (gpu_buffer(x), gpu_buffer(out));
            ctx.check_binding(op, xb.size())?;
            let params = Params {
                rows: to_u32(op, "rows", rows)?,
                n: to_u32(op, "n", n)?,
                chunks: to_u32(op, "chunks", s.chunks)?,
                chunk_len: to_u32(op, "chunk", s.chunk_len)?,
                ..Params::default()
            };
            let constants = [("DTYPE", x.dtype().wgsl_code())];
            let groups = to_u32(op, "workgroups", rows * s.chunks)?;
            let dispatch = |entry, buffers: &[&wgpu::Buffer], groups| {
                ctx.dispatch(Dispatch {
                    kernel: &SELECT,
                    entry,
                    constants: &constants,
                    params: Some(bytemuck::bytes_of(&params)),
                    buffers,
                    workgroups: Workgroups::Linear(groups),
                })
            };
            if s.chunks == 1 {
                return dispatch("argmax_rows", &[xb, ob], params.rows);
            }
            let partials = ctx.alloc("argmax partials", rows as u64 * s.chunks as u64 * 8)?;
            dispatch("argmax_partial", &[xb, partials.raw()], groups)?;
            dispatch("argmax_merge", &[partials.raw(), ob], params.rows)
        }
    }
}

/// The first maximum of a row in the order of [`order_key`].
pub fn argmax_row(row: &[f32]) -> u32 {
    let (mut best, mut at) = (0u32, 0u32);
    for (i, &v) in row.iter().enumerate() {
        let k = order_key(v);
        if k > best {
            (best, at) = (k, i as u32);
        }
    }
    at
}

// ---- repeat penalty -----------------------------------------------------------------------------

/// The repetition penalty of sampling, in place: each logit of `x` (f32 `[n]` or `[1, n]`) named in
/// `ids` (u32, each `< n`; an id listed twice counts once) is multiplied by `1 / penalty` where positive
/// and by `penalty` otherwise, so that a sampler can take the top-k of penalized logits on the device
/// instead of reading them all back. On the GPU an id `>= n` is skipped (the ids can be the device's ring
/// of recent tokens, which the host does not read); on the CPU it is an error.
pub fn repeat_penalty(x: &Tensor, ids: &Tensor, penalty: f32) -> Result<()> {
    let op = "repeat_penalty";
    let (rows, n) = rows_of(op, x)?;
    if x.dtype() != DType::F32 || rows != 1 {
        return Err(KernelError::Shape {
            op,
            detail: format!("x must be one f32 row, found {} {:?}", x.dtype(), x.shape()),
        });
    }
    if ids.dtype() != DType::U32 || ids.shape().len() != 1 {
        return Err(KernelError::Shape {
            op,
            detail: format!("ids must be u32 [m], found {} {:?}", ids.dtype(), ids.shape()),
        });
    }
    if !(penalty.is_finite() && penalty > 0.0) {
        return Err(KernelError::Argument {
            op,
            name: "penalty",
            value: penalty.to_string(),
            reason: "must be a positive number".into(),
        });
    }
    let m = ids.numel();
    if m == 0 {
        return Ok(());
    }
    let (up, down) = (1.0 / penalty, penalty);
    match common_backend(op, &[x, ids])? {
        Backend::Cpu => {
            let mut v = cpu::read_f32(x);
            let mut ids = cpu::read_u32(ids);
            ids.sort_unstable();
            ids.dedup();
            for &id in &ids {
                let l = v.get_mut(id as usize).ok_or_else(|| KernelError::Argument {
                    op,
                    name: "ids",
                    value: id.to_string(),
                    reason: format!("past the row of {n} logits"),
                })?;
                *l *= if *l > 0.0 { up } else { down };
            }
            cpu::write_f32(x, &v);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let params = Params {
                rows: to_u32(op, "ids", m)?,
                n: to_u32(op, "n", n)?,
                scale: up,
                scale_neg: down,
                ..Params::default()
            };
            ctx.dispatch(Dispatch {
                kernel: &SELECT,
                entry: "repeat_penalty",
                constants: &[],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[gpu_buffer(x), gpu_buffer(ids)],
                workgroups: Workgroups::Linear(params.rows.div_ceil(64)),
            })
        }
    }
}

/// The k largest values of each row of `x [rows, n]` (or `[n]`) and their indices, sorted
/// descending, ties to the lower index: (values f32 `[rows, k]`, indices u32 `[rows, k]`).
/// `1 <= k <= min(n, 64)`.
pub fn topk(x: &Tensor, k: usize) -> Result<(Tensor, Tensor)> {
    let (rows, n) = rows_of("topk", x)?;
    check_k(k, n)?;
    let values = Tensor::uninit(&x.backend(), "topk values", &[rows, k], DType::F32)?;
    let indices = Tensor::uninit(&x.backend(), "topk indices", &[rows, k], DType::U32)?;
    topk_into(x, k, &values, &indices)?;
    Ok((values, indices))
}

/// [`topk`] into `values` (f32 `[rows, k]`) and `indices` (u32 `[rows, k]`).
pub fn topk_into(x: &Tensor, k: usize, values: &Tensor, indices: &Tensor) -> Result<()> {
    topk_with(x, k, values, indices, None)
}

fn check_k(k: usize, n: usize) -> Result<()> {
    let reason = if k == 0 {
        "must be at least 1".to_string()
    } else if k > TOPK_MAX {
        format!("at most {TOPK_MAX} is supported")
    } else if k > n {
        format!("larger than the row length {n}")
    } else {
        return Ok(());
    };
    Err(KernelError::Argument { op: "topk", name: "k", value: k.to_string(), reason })
}

fn topk_with(x: &Tensor, k: usize, values: &Tensor, indices: &Tensor, chunks: Option<usize>) -> Result<()> {
    let op = "topk";
    let (rows, n) = rows_of(op, x)?;
    check_k(k, n)?;
    require_out(op, values, DType::F32, &[rows, k])?;
    require_out(op, indices, DType::U32, &[rows, k])?;
    match common_backend(op, &[x, values, indices])? {
        Backend::Cpu => {
            let v = cpu::read_f32(x);
            let picked: Vec<Vec<u32>> = v.par_chunks(n).map(|row| topk_row(row, k)).collect();
            let idx: Vec<u32> = picked.concat();
            let vals: Vec<f32> = idx.iter().enumerate().map(|(j, &i)| v[(j / k) * n + i as usize]).collect();
            cpu::write_f32(values, &vals);
            cpu::write_u32(indices, &idx);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let s = chunks.map_or_else(|| split(rows, n, TOPK_MIN_CHUNK), |c| forced_split(n, c));
            let (xb, vb, ib) = (gpu_buffer(x), gpu_buffer(values), gpu_buffer(indices));
            ctx.check_binding(op, xb.size())?;
            let params = Params {
                rows: to_u32(op, "rows", rows)?,
                n: to_u32(op, "n", n)?,
                chunks: to_u32(op, "chunks", s.chunks)?,
                chunk_len: to_u32(op, "chunk", s.chunk_len)?,
                k: k as u32,
                ..Params::default()
            };
            let groups = to_u32(op, "workgroups", rows * s.chunks)?;
            let dispatch = |entry, buffers: &[&wgpu::Buffer], groups| {
                // topk_merge scans the chunks' (key, index) pairs, the others x's elements.
                let pairs = if entry == "topk_merge" { 1.0 } else { 0.0 };
                ctx.dispatch(Dispatch {
                    kernel: &SELECT,
                    entry,
                    constants: &[("DTYPE", x.dtype().wgsl_code()), ("PAIRS", pairs)],
                    params: Some(bytemuck::bytes_of(&params)),
                    buffers,
                    workgroups: Workgroups::Linear(groups),
                })
            };
            if s.chunks == 1 {
                return dispatch("topk_rows", &[xb, vb, ib], params.rows);
            }
            // Each chunk's k (key, index) pairs, padded to whole vec4s (`pair_units` in select.wgsl).
            let bytes = rows as u64 * s.chunks as u64 * k.div_ceil(2) as u64 * 16;
            let partials = ctx.alloc("topk partials", bytes)?;
            ctx.check_binding(op, partials.size())?;
            dispatch("topk_partial", &[xb, partials.raw()], groups)?;
            dispatch("topk_merge", &[partials.raw(), xb, vb, ib], params.rows)
        }
    }
}

/// The indices of a row's k first elements in the order of [`order_key`] (ties to the lower index).
pub fn topk_row(row: &[f32], k: usize) -> Vec<u32> {
    let mut keyed: Vec<(u32, u32)> = row.iter().enumerate().map(|(i, &v)| (order_key(v), i as u32)).collect();
    let first = |a: &(u32, u32), b: &(u32, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1));
    if k < keyed.len() {
        keyed.select_nth_unstable_by(k - 1, first);
        keyed.truncate(k);
    }
    keyed.sort_unstable_by(first);
    keyed.into_iter().map(|(_, i)| i).collect()
}

/// f64 references, written independently of [`order_key`]: for the tests and the bench.
mod reference {
    use std::cmp::Ordering;

    /// NaN first, then larger values; equal values (and -0, +0) compare equal.
    fn descending(a: f32, b: f32) -> Ordering {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => (b as f64).partial_cmp(&(a as f64)).expect("not NaN"),
        }
    }

    pub fn topk(row: &[f32], k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..row.len()).collect();
        idx.sort_by(|&a, &b| descending(row[a], row[b]).then(a.cmp(&b)));
        idx.truncate(k);
        idx
    }

    pub fn argmax(row: &[f32]) -> usize {
        if let Some(i) = row.iter().position(|v| v.is_nan()) {
            return i;
        }
        let mut best = 0;
        for (i, &v) in row.iter().enumerate() {
            if (v as f64) > (row[best] as f64) {
                best = i;
            }
        }
        best
    }
}

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["embedding", "argmax", "topk"];

/// Vocabulary rows of the argmax and top-k benches (Llama 3).
const BENCH_VOCAB: usize = 128_256;
const BENCH_DIM: usize = 4096;
const BENCH_K: usize = 64;

/// `embedding` of 4096-dim f32 rows at random ids; `argmax` and `topk` (k = 64) on `[rows, 128256]`
/// f32; each moving about `bytes` bytes.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::testing::{Rng, Tolerance};

    let exact = Tolerance { atol: 0.0, rtol: 0.0 };
    let build = |op: &'static str| -> Result<BenchCase> {
        match op {
            "embedding" => {
                let dim = BENCH_DIM;
                let n = (bytes as usize / (8 * dim)).max(1); // each row read once and written once
                let vocab = 2 * n;
                let table = random_tensor(31, &[vocab, dim], DType::F32, -1.0, 1.0)?;
                let mut rng = Rng::new(32);
                let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u32)).collect();
                let ids = Tensor::from_slice(&Backend::Cpu, &ids, &[n])?;
                Ok(BenchCase {
                    op,
                    dtype: DType::F32,
                    shape: format!("[{vocab}, {dim}][{n}]"),
                    bytes: (n * dim * 8 + n * 4) as u64,
                    flops: 0,
                    tolerance: exact,
                    inputs: vec![table, ids],
                    run: Box::new(|i| embedding(&i[0], &i[1])),
                    reference: Box::new(move |i| {
                        let (t, ids) = (cpu::read_f32(&i[0]), cpu::read_u32(&i[1]));
                        Ok(ids
                            .iter()
                            .flat_map(|&id| t[id as usize * dim..(id as usize + 1) * dim].iter().map(|&v| v as f64))
                            .collect())
                    }),
                })
            }
            _ => {
                let n = BENCH_VOCAB;
                let rows = (bytes as usize / (4 * n)).max(1);
                let x = random_tensor(33, &[rows, n], DType::F32, -20.0, 20.0)?;
                let is_argmax = op == "argmax";
                let out_bytes = if is_argmax { 4 * rows } else { 8 * rows * BENCH_K };
                Ok(BenchCase {
                    op,
                    dtype: DType::F32,
                    shape: if is_argmax { format!("[{rows}, {n}]") } else { format!("[{rows}, {n}] k={BENCH_K}") },
                    bytes: (rows * n * 4 + out_bytes) as u64,
                    flops: 0,
                    tolerance: exact,
                    inputs: vec![x],
                    run: Box::new(move |i| if is_argmax { argmax(&i[0]) } else { topk(&i[0], BENCH_K).map(|r| r.1) }),
                    reference: Box::new(move |i| {
                        let v = cpu::read_f32(&i[0]);
                        Ok(v.chunks(n)
                            .flat_map(|row| {
                                if is_argmax { vec![reference::argmax(row)] } else { reference::topk(row, BENCH_K) }
                            })
                            .map(|i| i as f64)
                            .collect())
                    }),
                })
            }
        }
    };
    match op {
        "embedding" => Some(build("embedding")),
        "argmax" => Some(build("argmax")),
        "topk" => Some(build("topk")),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::SELECT, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
