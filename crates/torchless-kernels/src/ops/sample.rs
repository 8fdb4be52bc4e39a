//! Drawing the next token on the device, so that a sampled decode runs ahead of the host as a greedy one
//! does: [`sample_top_k`] takes the candidates of [`super::select::topk`] (after
//! [`super::select::repeat_penalty`]) and a uniform draw made by the host's seeded generator, and writes
//! the token where the next decode step reads it, and into a ring of recent tokens for the penalty of
//! the steps after.
//!
//! The rules are those of the host's sampler (`torchless::sampling`): temperature, min-p, top-p, then
//! the candidate the draw lands on. The device computes in f32 where the host uses f64, so the two pick
//! the same token except where the draw falls within rounding of a boundary between two candidates.

use super::{common_backend, gpu_buffer, require_distinct, to_u32};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(SAMPLE, "sample");

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    slot: u32,
    window_len: u32,
    temperature: f32,
    top_p: f32,
    min_p: f32,
    u: f32,
    _pad: u32,
}

/// How [`sample_top_k`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    /// 0 takes the best candidate.
    pub temperature: f32,
    /// In (0, 1]: the shortest best-first prefix whose probability reaches it is kept.
    pub top_p: f32,
    /// In [0, 1): candidates less likely than this times the best one are dropped.
    pub min_p: f32,
    /// The uniform draw, in [0, 1).
    pub u: f32,
}

/// Writes to `token` (u32 `[1]`) the token drawn from `k` candidates, `values` (f32 `[k]` or `[1, k]`, best
/// first as `topk` returns them) and their `ids` (u32, the same shape). With a `window` (u32 `[w]`, the
/// recent tokens that the repeat penalty reads) and a `slot < w`, the token is also written there.
/// NaN candidates are skipped; if every one is NaN the token is 0.
pub fn sample_top_k(
    values: &Tensor,
    ids: &Tensor,
    draw: Draw,
    token: &Tensor,
    window: Option<(&Tensor, usize)>,
) -> Result<()> {
    let op = "sample_top_k";
    let k = values.numel();
    let row = values.shape().len() == 1 || (values.shape().len() == 2 && values.shape()[0] == 1);
    if values.dtype() != DType::F32 || !row || k == 0 || k > super::select::TOPK_MAX {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "values must be f32 [k] with 1 <= k <= {}, found {} {:?}",
                super::select::TOPK_MAX,
                values.dtype(),
                values.shape()
            ),
        });
    }
    if ids.dtype() != DType::U32 || ids.shape() != values.shape() {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "ids must be u32 {:?} like values, found {} {:?}",
                values.shape(),
                ids.dtype(),
                ids.shape()
            ),
        });
    }
    if token.dtype() != DType::U32 || token.numel() != 1 {
        return Err(KernelError::Shape {
            op,
            detail: format!("token must be u32 [1], found {} {:?}", token.dtype(), token.shape()),
        });
    }
    check_draw(op, draw)?;
    require_distinct(op, "token", token, &[values, ids])?;
    if let Some((w, _)) = window {
        require_distinct(op, "window", w, &[values, ids])?;
    }
    let (window_len, slot) = match window {
        Some((w, slot)) => {
            if w.dtype() != DType::U32 || w.shape().len() != 1 || slot >= w.numel() {
                return Err(KernelError::Argument {
                    op,
                    name: "window slot",
                    value: slot.to_string(),
                    reason: format!("needs a u32 [w] window with slot < w, found {} {:?}", w.dtype(), w.shape()),
                });
            }
            (w.numel(), slot)
        }
        None => (0, 0),
    };
    let mut tensors = vec![values, ids, token];
    tensors.extend(window.map(|(w, _)| w));
    match common_backend(op, &tensors)? {
        Backend::Cpu => {
            let picked = draw_top_k(&cpu::read_f32(values), &cpu::read_u32(ids), draw);
            cpu::write_u32(token, &[picked]);
            if let Some((w, slot)) = window {
                let mut ring = cpu::read_u32(w);
                ring[slot] = picked;
                cpu::write_u32(w, &ring);
            }
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let params = Params {
                k: k as u32,
                slot: to_u32(op, "slot", slot)?,
                window_len: to_u32(op, "window", window_len)?,
                temperature: draw.temperature,
                top_p: draw.top_p,
                min_p: draw.min_p,
                u: draw.u,
                _pad: 0,
            };
            // Without a window the token buffer stands in for it (window_len 0: never written).
            let ring = window.map_or(gpu_buffer(token), |(w, _)| gpu_buffer(w));
            ctx.dispatch(Dispatch {
                kernel: &SAMPLE,
                entry: "sample_top_k",
                constants: &[],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[gpu_buffer(values), gpu_buffer(ids), gpu_buffer(token), ring],
                workgroups: Workgroups::Linear(1),
            })
        }
    }
}

fn check_draw(op: &'static str, d: Draw) -> Result<()> {
    let bad = |name, value: f32, reason: &str| {
        Err(KernelError::Argument { op, name, value: value.to_string(), reason: reason.into() })
    };
    if !(d.temperature.is_finite() && d.temperature >= 0.0) {
        return bad("temperature", d.temperature, "must be a finite number >= 0");
    }
    if !(d.top_p > 0.0 && d.top_p <= 1.0) {
        return bad("top_p", d.top_p, "must be in (0, 1]");
    }
    if !(d.min_p >= 0.0 && d.min_p < 1.0) {
        return bad("min_p", d.min_p, "must be in [0, 1)");
    }
    if !(d.u >= 0.0 && d.u < 1.0) {
        return bad("u", d.u, "must be in [0, 1)");
    }
    Ok(())
}

/// The CPU's draw, step for step the kernel's (kernels/sample.wgsl), in f32.
fn draw_top_k(values: &[f32], ids: &[u32], d: Draw) -> u32 {
    let Some(first) = values.iter().position(|v| !v.is_nan()) else {
        return 0;
    };
    let best = values[first];
    if d.temperature == 0.0 || !best.is_finite() {
        return ids[first];
    }
    let weight = |v: f32| if v.is_finite() { ((v - best) / d.temperature).max(-200.0).exp() } else { 0.0 };
    let mut prob: Vec<f32> = values[first..].iter().map(|&v| weight(v)).collect();
    let total: f32 = prob.iter().sum();
    let floor = d.min_p / total;
    let mut end = 0;
    for (i, p) in prob.iter_mut().enumerate() {
        *p /= total;
        if *p >= floor {
            end = i + 1;
        }
    }
    let mut keep = end;
    let mut cum = 0.0f32;
    for (i, p) in prob[..end].iter().enumerate() {
        cum += p;
        if cum >= d.top_p {
            keep = i + 1;
            break;
        }
    }
    let mass: f32 = prob[..keep].iter().sum();
    let mut r = d.u * mass;
    for (i, p) in prob[..keep].iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return ids[first + i];
        }
    }
    ids[first + keep - 1]
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::SAMPLE, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
