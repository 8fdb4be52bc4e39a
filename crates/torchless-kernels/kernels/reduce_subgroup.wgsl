// Workgroup reduction with subgroupAdd, and the entry point, for a body file (gemv.wgsl, qgemv.wgsl) that
// provides:
//   WG (threads per team), RED_LEN (>= subgroups per workgroup · n_slots()), n_slots() (accumulator
//   slots), p.n_groups (teams with work), and
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

fn put(j: u32, v: vec4<f32>) {
    let s = subgroupAdd(v);
    if (lane_ == 0u) {
        red[sg_ * n_slots() + j] = s;
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
        @builtin(subgroup_id) sg: u32, @builtin(num_subgroups) nsg: u32) {
    let g = linear_group_id(wid, nwg);
    if (g * TEAMS >= p.n_groups) {
        return;
    }
    lane_ = lane;
    sg_ = sg;
    nsg_ = nsg;
    team_ = li / WG;
    wli_ = li;
    run(g * TEAMS + team_, li % WG);
}
