//! Per-kernel GPU time from timestamp queries; each submission waits and reads them back, so profiled
//! runs are slower than normal ones (no overlap between submissions), but they say where device time goes.
//!
//! Where the adapter can stamp inside a compute pass (`TIMESTAMP_QUERY_INSIDE_PASSES`), the dispatches run
//! as usual, back to back in one pass, with a stamp after each: a dispatch's time is the gap to the stamp
//! before it, so it includes its wait on the dispatch before (the barrier), and the times add up to the
//! device time of the whole sequence. Elsewhere every dispatch gets its own pass stamped at both ends,
//! which adds a fixed cost per dispatch (several microseconds on an H200) and hides the gaps.

use std::collections::HashMap;

/// Timestamps one submission can hold; a fuller batch is submitted early.
const MAX_STAMPS: u32 = 4096;

pub(super) struct Profiler {
    pub query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Kernel/entry and grid of each dispatch recorded in the open batch, with the timestamps before and
    /// after it.
    labels: Vec<(Launch, u32, u32)>,
    /// Timestamps used in the open batch.
    stamps: u32,
    /// The last timestamp written in the open compute pass, if any (in-pass stamping).
    pub pass_stamp: Option<u32>,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    totals: HashMap<Launch, (f64, u64)>,
}

/// A kernel entry point launched on one grid with its largest operand of one size: the unit the
/// profiler sums over (one model's GEMVs of different matrices come out apart, even where their grids
/// are the same, as those of a model's O and down projections can be).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Launch {
    pub kernel: String,
    pub grid: [u32; 3],
    pub largest_operand: u64,
}

/// GPU time of one kernel entry point on one grid, summed over its launches.
#[derive(Clone, Debug)]
pub struct KernelTime {
    /// `kernel-file/entry`.
    pub kernel: String,
    /// Workgroups in x, y and z.
    pub grid: [u32; 3],
    /// Bytes of the largest buffer bound to the launch (a GEMV's weights, say).
    pub largest_operand: u64,
    pub total_ms: f64,
    pub launches: u64,
}

impl Profiler {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Profiler {
        let count = MAX_STAMPS;
        let query_set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("torchless profile"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let bytes = count as u64 * 8;
        let resolve = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("torchless profile resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("torchless profile readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Profiler {
            query_set,
            resolve,
            readback,
            labels: Vec::new(),
            stamps: 0,
            pass_stamp: None,
            period_ns: f64::from(queue.get_timestamp_period()),
            totals: HashMap::new(),
        }
    }

    /// Whether the open batch has room for `n` more timestamps.
    pub fn has_room(&self, n: u32) -> bool {
        self.stamps + n <= MAX_STAMPS
    }

    /// Reserves the next timestamp index.
    pub fn next_stamp(&mut self) -> u32 {
        self.stamps += 1;
        self.stamps - 1
    }

    /// Names the dispatch timed from stamp `start` to stamp `end`.
    pub fn label(&mut self, launch: Launch, start: u32, end: u32) {
        self.labels.push((launch, start, end));
    }

    /// Records the resolve of this batch's timestamps at the end of `encoder`.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = self.stamps;
        if n > 0 {
            encoder.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        }
    }

    /// After the batch's submission: waits for it, reads the stamps and adds them to the totals.
    pub fn collect(&mut self, device: &wgpu::Device) -> Result<(), String> {
        self.pass_stamp = None;
        if self.labels.is_empty() {
            self.stamps = 0;
            return Ok(());
        }
        let n = u64::from(self.stamps);
        self.stamps = 0;
        let slice = self.readback.slice(0..n * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| format!("waiting for profiled work: {e}"))?;
        {
            let data = slice.get_mapped_range().map_err(|e| format!("reading timestamps: {e}"))?;
            let stamps: &[u64] = bytemuck::cast_slice(&data);
            for (label, start, end) in self.labels.drain(..) {
                let ns = stamps[end as usize].saturating_sub(stamps[start as usize]) as f64 * self.period_ns;
                let entry = self.totals.entry(label).or_insert((0.0, 0));
                entry.0 += ns;
                entry.1 += 1;
            }
        }
        self.readback.unmap();
        Ok(())
    }

    /// The totals so far, one per kernel entry and grid, largest first; clears them.
    pub fn take(&mut self) -> Vec<KernelTime> {
        let mut v: Vec<KernelTime> = self
            .totals
            .drain()
            .map(|(Launch { kernel, grid, largest_operand }, (ns, launches))| KernelTime {
                kernel,
                grid,
                largest_operand,
                total_ms: ns / 1e6,
                launches,
            })
            .collect();
        v.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        v
    }
}
