//! Per-kernel GPU time from timestamp queries: while profiling is on, every dispatch runs in its own
//! compute pass whose start and end the device stamps, and each submission waits and reads them back.
//! Slower than normal running (no overlap between submissions), but it says where device time goes.

use std::collections::HashMap;

/// Timestamp pairs one submission can hold; a fuller batch is submitted early.
pub(super) const MAX_PAIRS: u32 = 2048;

pub(super) struct Profiler {
    pub query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Kernel/entry of each pair recorded in the open batch.
    pub labels: Vec<String>,
    /// Nanoseconds per timestamp tick.
    period_ns: f64,
    totals: HashMap<String, (f64, u64)>,
}

/// GPU time of one kernel entry point, summed over its launches.
#[derive(Clone, Debug)]
pub struct KernelTime {
    pub kernel: String,
    pub total_ms: f64,
    pub launches: u64,
}

impl Profiler {
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Profiler {
        let count = 2 * MAX_PAIRS;
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
            period_ns: f64::from(queue.get_timestamp_period()),
            totals: HashMap::new(),
        }
    }

    /// Records the resolve of this batch's timestamps at the end of `encoder`.
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        let n = 2 * self.labels.len() as u32;
        if n > 0 {
            encoder.resolve_query_set(&self.query_set, 0..n, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
        }
    }

    /// After the batch's submission: waits for it, reads the stamps and adds them to the totals.
    pub fn collect(&mut self, device: &wgpu::Device) -> Result<(), String> {
        if self.labels.is_empty() {
            return Ok(());
        }
        let n = 2 * self.labels.len() as u64;
        let slice = self.readback.slice(0..n * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| format!("waiting for profiled work: {e}"))?;
        {
            let data = slice.get_mapped_range().map_err(|e| format!("reading timestamps: {e}"))?;
            let stamps: &[u64] = bytemuck::cast_slice(&data);
            for (i, label) in self.labels.drain(..).enumerate() {
                let ns = stamps[2 * i + 1].saturating_sub(stamps[2 * i]) as f64 * self.period_ns;
                let entry = self.totals.entry(label).or_insert((0.0, 0));
                entry.0 += ns;
                entry.1 += 1;
            }
        }
        self.readback.unmap();
        Ok(())
    }

    /// The totals so far, largest first; clears them.
    pub fn take(&mut self) -> Vec<KernelTime> {
        let mut v: Vec<KernelTime> = self
            .totals
            .drain()
            .map(|(kernel, (ns, launches))| KernelTime { kernel, total_ms: ns / 1e6, launches })
            .collect();
        v.sort_by(|a, b| b.total_ms.total_cmp(&a.total_ms));
        v
    }
}
