// Workgroup reduction with subgroup operations, and the entry point, for a body file (gemv.wgsl, qgemv.wgsl) that
// provides:
//   WG (threads per team), RED_LEN (>= subgroups per workgroup · n_slots()), n_slots() (accumulator
//   slots), p.n_groups (teams with work), PUT_TRANSPOSED (how `put` reduces, below), and
//   run(g, li): team g's work, which hands slot j's partial sums to put(j, ·) from every thread (in
//   uniform control flow), then after a workgroupBarrier reads the team's sums back with total(j).
// The body may read wli_, the thread's index in the whole workgroup. A workgroup is TEAMS teams of WG
// threads (the host makes WG a multiple of the largest subgroup size when TEAMS > 1, so that no subgroup
// spans two teams).
// reduce_workgroup.wgsl is the same interface built on a workgroup-memory tree.

override TEAMS: u32 = 1u;

// red[k * n_slots() + j]: subgroup k's sum of accumulator slot j.
var<workgroup> red: array<vec4<f32>, RED_LEN>;
var<private> lane_: u32;
var<private> sg_: u32;
var<private> nsg_: u32;
var<private> team_: u32;
var<private> wli_: u32;
var<private> sg_size_: u32;

// Slot j's sum over each subgroup, into `red`. With PUT_TRANSPOSED (declared by the body) a transposing
// reduction: after the xor-1 exchange each lane keeps two of the four sums, after xor-2 one (component
// 2·bit 0 + bit 1 of its lane), and xor 4, 8, ... add up the rest: log2(size) + 1 shuffles where
// subgroupAdd of a vec4 takes 4·log2(size). Lanes past the workgroup's threads (a workgroup smaller than
// its subgroup) are never read: the exchanges stop at the active width.
fn put(j: u32, v: vec4<f32>) {
    if (!PUT_TRANSPOSED) {
        let s = subgroupAdd(v);
        if (lane_ == 0u) {
            red[sg_ * n_slots() + j] = s;
        }
        return;
    }
    let odd = (lane_ & 1u) != 0u;
    let pair = select(v.xy, v.zw, odd) + subgroupShuffleXor(select(v.zw, v.xy, odd), 1u);
    let upper = (lane_ & 2u) != 0u;
    var s = select(pair.x, pair.y, upper) + subgroupShuffleXor(select(pair.y, pair.x, upper), 2u);
    for (var o = 4u; o < min(sg_size_, WG * TEAMS); o <<= 1u) {
        s += subgroupShuffleXor(s, o);
    }
    if (lane_ < 4u) {
        red[sg_ * n_slots() + j][2u * (lane_ & 1u) + (lane_ >> 1u)] = s;
    }
}

fn total(j: u32) -> vec4<f32> {
    let per_team = nsg_ / TEAMS;
    var t = vec4<f32>();
    for (var k = team_ * per_team; k < (team_ + 1u) * per_team; k++) {
        t += red[k * n_slots() + j];
    }
    return t;
}

@compute @workgroup_size(WG * TEAMS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_invocation_id) lane: u32,
        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) nsg: u32, @builtin(subgroup_size) sgs: u32) {
    let g = linear_group_id(wid, nwg);
    if (g * TEAMS >= p.n_groups) {
        return;
    }
    lane_ = lane;
    sg_ = sg;
    nsg_ = nsg;
    sg_size_ = sgs;
    team_ = li / WG;
    wli_ = li;
    run(g * TEAMS + team_, li % WG);
}
