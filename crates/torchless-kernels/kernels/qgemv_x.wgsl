// x as the quantized GEMV's integers (qgemv_xcore.wgsl) in a launch of its own: for batches of several
// rows of x, and where a workgroup's memory cannot hold a row's integers (the GEMV of one row of x
// quantizes it itself, qgemv.wgsl FUSED). One thread per block of 32; with NORM one workgroup per row of
// x, which first sums the row's squares.

const WG: u32 = 256u;

struct Params {
    // Blocks of 32 values per row of x.
    blocks: u32,
    eps: f32,
    // Blocks in all of x.
    total_blocks: u32,
    // The GEMV's units per row.
    units: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// The norm weight [cols] (a dummy without NORM).
@group(0) @binding(2) var<storage, read> nw: array<u32>;
// Row r of x: the hi bytes of its groups (a vec4 each, in layout order), then the lo bytes.
@group(0) @binding(3) var<storage, read_write> xq: array<vec4<u32>>;
// Row r: (d / 256, Σ of the group's values) per group, in layout order.
@group(0) @binding(4) var<storage, read_write> xs: array<vec2<f32>>;

var<workgroup> red: array<f32, WG>;

fn x_vec(i: u32) -> vec4<f32> {
    return x[i];
}

fn norm_word(i: u32) -> u32 {
    return nw[i];
}

fn store_group(r: u32, xg: u32, g: QGroup) {
    let groups = 2u * p.blocks;
    let at = position(xg);
    xq[2u * r * groups + at] = g.hi;
    xq[(2u * r + 1u) * groups + at] = g.lo;
    xs[r * groups + at] = g.s;
}

// Block blk of x (block b of its row), values v, as bytes, scales and sums.
fn store_block(blk: u32, b: u32, v: Block, w: Block, scale: f32) {
    let q = quantize_block(v, w, scale);
    let r = blk / p.blocks;
    store_group(r, 2u * b, q.g0);
    store_group(r, 2u * b + 1u, q.g1);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    if (NORM == 0u) {
        let blk = linear_group_id(wid, nwg) * WG + li;
        if (blk < p.total_blocks) {
            store_block(blk, blk % p.blocks, load_block(blk), Block(), 1.0);
        }
        return;
    }
    let row = wid.x;
    let nb = p.blocks;
    // Rows of up to WG blocks (8192 values) stay in registers, with their norm weights, from the sum of
    // squares to the quantization: the launch is a chain of latencies on one workgroup, and this removes
    // a read of x from it. Longer rows are read twice.
    let held = nb <= WG;
    var mine: Block;
    var w: Block;
    var ss = 0.0;
    if (held) {
        if (li < nb) {
            mine = load_block(row * nb + li);
            w = load_norm(li);
            ss = sum_squares(mine);
        }
    } else {
        for (var b = li; b < nb; b += WG) {
            ss += sum_squares(load_block(row * nb + b));
        }
    }
    red[li] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(red[0] / f32(32u * nb) + p.eps);
    if (held) {
        if (li < nb) {
            store_block(row * nb + li, li, mine, w, scale);
        }
        return;
    }
    for (var b = li; b < nb; b += WG) {
        store_block(row * nb + b, b, load_block(row * nb + b), load_norm(b), scale);
    }
}
