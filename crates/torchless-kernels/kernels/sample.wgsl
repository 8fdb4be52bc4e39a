// Draws the next token from a top-k list on the device, with the host sampler's rules
// (crates/torchless/src/sampling.rs `sample_candidates`; f32 here where the host computes in f64):
// weights exp((v - best) / temperature), min-p, top-p, then the candidate that the uniform draw u (in
// [0, 1), from the host's seeded generator) lands on. The candidates come best first as select.wgsl's
// top-k orders them (NaN first, then larger values, ties to the lower id); NaN candidates are skipped.
//
// One invocation: k is at most 64, and summing in one fixed order keeps a draw reproducible. The token
// goes to token[0], the next decode step's input, which the host reads back only later; with a window
// (p.slot below its length) it is also written into that slot of the ring of recent tokens that the
// repeat penalty of the following steps reads, so a sampled decode never waits for the host.

struct Params {
    k: u32,
    // The window slot of this token; p.window_len or more: no window.
    slot: u32,
    window_len: u32,
    temperature: f32,
    top_p: f32,
    min_p: f32,
    u: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> values: array<f32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> token: array<u32>;
@group(0) @binding(4) var<storage, read_write> window: array<u32>;

fn is_finite(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) < 0x7f800000u;
}

// exp((v - best) / t) for v <= best; -inf (which a GPU need not honour in arithmetic) weighs 0.
fn weight(v: f32, best: f32) -> f32 {
    if (!is_finite(v)) {
        return 0.0;
    }
    return exp(max((v - best) / p.temperature, -200.0));
}

// The candidates' probabilities (unnormalised weights first), from the first that is a number on.
var<private> prob: array<f32, 64>;

// The index of the candidate drawn among those from `first` on (the first that is a number).
fn draw(first: u32) -> u32 {
    let best = values[first];
    var total = 0.0;
    for (var i = first; i < p.k; i++) {
        prob[i] = weight(values[i], best);
        total += prob[i];
    }
    // min-p: candidates below min_p times the best one's probability (1 / total) are never drawn; the
    // weights fall with the order, so those kept are a prefix, [first, end).
    let floor = p.min_p / total;
    var end = first;
    for (var i = first; i < p.k; i++) {
        prob[i] = prob[i] / total;
        if (prob[i] >= floor) {
            end = i + 1u;
        }
    }
    // top-p: the shortest prefix whose probability reaches top_p.
    var keep = end;
    var cum = 0.0;
    for (var i = first; i < end; i++) {
        cum += prob[i];
        if (cum >= p.top_p) {
            keep = i + 1u;
            break;
        }
    }
    var mass = 0.0;
    for (var i = first; i < keep; i++) {
        mass += prob[i];
    }
    var r = p.u * mass;
    for (var i = first; i < keep; i++) {
        r -= prob[i];
        if (r <= 0.0) {
            return i;
        }
    }
    return keep - 1u;
}

@compute @workgroup_size(1)
fn sample_top_k() {
    var first = p.k;
    for (var i = 0u; i < p.k; i++) {
        if (!is_nan(values[i])) {
            first = i;
            break;
        }
    }
    // Every candidate NaN: token 0, as on the host.
    var pick = 0u;
    if (first < p.k) {
        var at = first;
        if (p.temperature > 0.0 && is_finite(values[first])) {
            at = draw(first);
        }
        pick = ids[at];
    }
    token[0] = pick;
    if (p.slot < p.window_len) {
        window[p.slot] = pick;
    }
}
