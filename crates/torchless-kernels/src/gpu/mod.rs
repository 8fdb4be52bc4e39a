//! The wgpu device: adapter selection, the pipeline cache, the buffer pool and batched submission.
//!
//! Ops record into one open compute pass; nothing is submitted until the host needs a result
//! ([`GpuContext::read_buffer`]), the batch is full, or [`GpuContext::flush`] is called. Small op
//! parameters live in a per-batch uniform arena, written once just before the batch is submitted.
//! Batches are finished and submitted in order on a thread of their own (the `submit` module), so the
//! host records the next batch meanwhile; errors of a batch surface at a later flush or wait.
//!
//! A released buffer may be handed to the next op of the same batch: GPU writes are ordered after the
//! earlier reads by wgpu's barriers. Host writes are the hazard (queue writes land before the whole
//! batch), so `write_buffer` submits first and uploads always get fresh buffers.

mod adapters;
mod pool;
mod profile;
mod submit;

pub use adapters::{AdapterSummary, list_adapters};
pub use profile::KernelTime;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};

use rustc_hash::FxHashMap;

use crate::backend::BackendPreference;
use crate::error::{KernelError, Result};
use crate::kernels::KernelSource;
use pool::{BufferPool, size_class};

/// Every GPU buffer is padded to this many bytes so kernels may load whole `vec4<u32>` words.
pub const BUFFER_ALIGN: u64 = 16;
/// Bytes of the per-batch parameter arena; when it fills, the batch is submitted and a new one begins.
const PARAM_ARENA_BYTES: u64 = 256 * 1024;

/// Launches [`GpuContext::flush_some`] lets wait before it submits (each submission has a fixed host cost).
const SUBMIT_MIN_LAUNCHES: u32 = 64;
/// The largest workgroup count in one dimension that every adapter accepts.
pub const MAX_WORKGROUPS_PER_DIM: u32 = 65535;

/// Features we use when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SUBGROUP
    .union(wgpu::Features::SUBGROUP_BARRIER)
    .union(wgpu::Features::SHADER_F16)
    .union(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES);

/// A pipeline's identity: kernel, entry point and override constants (as bits).
struct PipelineKey {
    kernel: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

impl PipelineKey {
    /// The cache's key, hashed from borrowed parts (see [`BindKey::hash_of`]).
    fn hash_of(kernel: &'static str, entry: &'static str, constants: &[(&'static str, f64)]) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        (kernel, entry).hash(&mut h);
        for (name, value) in constants {
            (name, value.to_bits()).hash(&mut h);
        }
        h.finish()
    }

    fn matches(&self, kernel: &'static str, entry: &'static str, constants: &[(&'static str, f64)]) -> bool {
        self.kernel == kernel
            && self.entry == entry
            && self.constants.iter().copied().eq(constants.iter().map(|&(k, v)| (k, v.to_bits())))
    }
}

/// A bind group's identity: the pipeline, the parameters' place in the arena and the storage buffers.
/// Decode records the same launches on the same buffers token after token (weights, and activations from
/// the pool, which hands buffers out in the same order), so most bind groups are found here instead of
/// being built again: building one is a large part of a launch's host cost.
struct BindKey {
    pipeline: wgpu::ComputePipeline,
    params: Option<(u64, u64)>,
    buffers: Vec<wgpu::Buffer>,
}

impl BindKey {
    /// The cache's key for a launch, hashed from borrowed parts: a decode step looks up ~200 bind groups,
    /// and cloning a key's buffer handles (and SipHash over them) to look one up was a visible part of
    /// the host's time per launch.
    fn hash_of(pipeline: &wgpu::ComputePipeline, params: Option<(u64, u64)>, buffers: &[&wgpu::Buffer]) -> u64 {
        let mut h = rustc_hash::FxHasher::default();
        pipeline.hash(&mut h);
        params.hash(&mut h);
        for b in buffers {
            b.hash(&mut h);
        }
        h.finish()
    }

    fn matches(&self, pipeline: &wgpu::ComputePipeline, params: Option<(u64, u64)>, buffers: &[&wgpu::Buffer]) -> bool {
        self.pipeline == *pipeline && self.params == params && self.buffers.iter().eq(buffers.iter().copied())
    }
}

/// Bind groups kept at most; past it the cache starts over (it holds its buffers alive).
const MAX_BIND_GROUPS: usize = 8192;

pub struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    cooperative_matrices: Vec<wgpu::CooperativeMatrixProperties>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    /// Pipelines by [`PipelineKey::hash_of`], the key compared on a hit.
    pipelines: Mutex<FxHashMap<u64, (PipelineKey, wgpu::ComputePipeline)>>,
    /// Bind groups by [`BindKey::hash_of`]; the stored key is compared on a hit, so two keys of one hash
    /// only cost a rebuild.
    bind_groups: Mutex<FxHashMap<u64, (BindKey, wgpu::BindGroup)>>,
    pool: Mutex<BufferPool>,
    /// Buffers made by `alloc` because the pool had none of the size (see [`HostStats`]).
    buffers_made: std::sync::atomic::AtomicU64,
    batch: Mutex<Batch>,
    /// The first error wgpu reported outside an error scope; returned by the next flush.
    device_error: Arc<Mutex<Option<String>>>,
    submitter: submit::Submitter,
}

struct Batch {
    encoder: Option<wgpu::CommandEncoder>,
    /// Launches recorded since the last submission.
    launches: u32,
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    arena: wgpu::Buffer,
    /// Present while profiling is on.
    profiler: Option<profile::Profiler>,
    stats: HostStats,
}

/// Counts of the host's recording work since the context was made (see [`GpuContext::host_stats`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostStats {
    pub launches: u64,
    /// Bind groups made (launches whose pipeline and buffers were not in the cache).
    pub bind_groups_made: u64,
    /// Op-output buffers made because the pool had none free of their size.
    pub buffers_made: u64,
    pub submits: u64,
    /// Host time submitting: the parameter upload, finishing the encoder (wgpu encodes the recorded passes
    /// there) and `Queue::submit`, on the submission thread (beside the recording) unless profiling.
    pub submit_time: std::time::Duration,
}

impl HostStats {
    /// The counts since `earlier` (an older snapshot of the same context).
    pub fn since(&self, earlier: &HostStats) -> HostStats {
        HostStats {
            launches: self.launches - earlier.launches,
            bind_groups_made: self.bind_groups_made - earlier.bind_groups_made,
            buffers_made: self.buffers_made - earlier.buffers_made,
            submits: self.submits - earlier.submits,
            submit_time: self.submit_time - earlier.submit_time,
        }
    }
}

/// One kernel launch. Binding 0 is the uniform `params` (when given); the storage buffers follow from
/// binding 1 in order. Kernels launched with [`Workgroups::Linear`] get a 2-D grid when the count
/// exceeds [`MAX_WORKGROUPS_PER_DIM`] and must bound-check the linear id (`common.wgsl: linear_group_id`).
pub struct Dispatch<'a> {
    pub kernel: &'static KernelSource,
    pub entry: &'static str,
    pub constants: &'a [(&'static str, f64)],
    pub params: Option<&'a [u8]>,
    pub buffers: &'a [&'a wgpu::Buffer],
    pub workgroups: Workgroups,
}

#[derive(Clone, Copy, Debug)]
pub enum Workgroups {
    Linear(u32),
    Grid([u32; 3]),
}

impl Workgroups {
    fn grid(self) -> [u32; 3] {
        match self {
            Workgroups::Grid(g) => g,
            Workgroups::Linear(n) if n <= MAX_WORKGROUPS_PER_DIM => [n.max(1), 1, 1],
            Workgroups::Linear(n) => {
                // Fold so that fewer than `y` groups are wasted: idle groups still cost launch time
                // (65k of them cost ~60 µs on an H100).
                let y = n.div_ceil(MAX_WORKGROUPS_PER_DIM);
                [n.div_ceil(y), y, 1]
            }
        }
    }
}

/// A device buffer. Buffers from the pool go back to it when dropped.
pub struct GpuBuffer {
    buffer: Option<wgpu::Buffer>,
    pooled: bool,
    ctx: Arc<GpuContext>,
}

impl GpuBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer is present until drop")
    }
    pub fn size(&self) -> u64 {
        self.raw().size()
    }
    pub fn context(&self) -> &Arc<GpuContext> {
        &self.ctx
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        match self.buffer.take() {
            Some(buffer) if self.pooled => self.ctx.release(buffer),
            // Weights of a model being dropped, for example.
            Some(buffer) => self.ctx.forget(buffer),
            None => {}
        }
    }
}

/// Freeing a buffer at least this large clears the bind-group cache.
const FORGET_BIND_GROUPS_BYTES: u64 = 1 << 20;

impl GpuContext {
    /// Opens the best adapter the preference allows: discrete before integrated before software.
    pub fn new(preference: BackendPreference) -> Result<Self> {
        Self::from_adapter(Self::best_adapter(preference)?)
    }

    /// The best compute-capable adapter for `preference`: discrete GPUs first, software renderers last.
    pub fn best_adapter(preference: BackendPreference) -> Result<wgpu::Adapter> {
        adapters::ranked_adapters(preference.wgpu_backends())
            .into_iter()
            .next()
            .ok_or_else(|| KernelError::NoAdapter { detail: format!(" for backend {preference}") })
    }

    pub fn from_adapter(adapter: wgpu::Adapter) -> Result<Self> {
        let info = adapter.get_info();
        if let Some(reason) = adapters::unfit_reason(&adapter) {
            return Err(KernelError::DeviceRequest {
                adapter: info.name,
                reason: format!("{reason}; use another adapter or the CPU backend (--backend cpu)"),
            });
        }
        let features = adapter.features() & WANTED_FEATURES;
        let adapter_limits = adapter.limits();
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: cooperative matrices are only used by kernels that were validated by naga and are
            // chosen only when the adapter reports a matching configuration.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("torchless"),
            required_features: features,
            required_limits: adapter_limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| KernelError::DeviceRequest { adapter: info.name.clone(), reason: e.to_string() })?;

        let device_error = Arc::new(Mutex::new(None::<String>));
        let sink = device_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_none() {
                *slot = Some(e.to_string());
            }
        }));

        let cooperative_matrices = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            adapter.cooperative_matrix_properties()
        } else {
            Vec::new()
        };
        let arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("torchless params arena"),
            size: PARAM_ARENA_BYTES,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let limits = device.limits();
        let submitter = submit::Submitter::new(queue.clone(), arena.clone())?;
        Ok(Self {
            device,
            queue,
            info,
            features,
            limits,
            cooperative_matrices,
            modules: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(FxHashMap::default()),
            bind_groups: Mutex::new(FxHashMap::default()),
            pool: Mutex::new(BufferPool::default()),
            buffers_made: Default::default(),
            batch: Mutex::new(Batch {
                encoder: None,
                launches: 0,
                stats: HostStats::default(),
                pass: None,
                params: Vec::new(),
                arena,
                profiler: None,
            }),
            device_error,
            submitter,
        })
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// Starts timing every dispatch on the device (see the `profile` module); needs `TIMESTAMP_QUERY`.
    pub fn start_profiling(&self) -> Result<()> {
        if !self.features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            return Err(KernelError::MissingFeature {
                op: "profile",
                feature: "TIMESTAMP_QUERY (GPU timestamps)",
                adapter: self.info.name.clone(),
            });
        }
        let mut batch = self.lock_batch();
        self.submit_locked(&mut batch)?;
        batch.profiler.get_or_insert_with(|| profile::Profiler::new(&self.device, &self.queue));
        Ok(())
    }

    /// What the host has recorded and submitted so far.
    pub fn host_stats(&self) -> HostStats {
        let (submits, submit_time) = self.submitter.stats();
        let stats = self.lock_batch().stats;
        HostStats {
            buffers_made: self.buffers_made.load(std::sync::atomic::Ordering::Relaxed),
            submits: stats.submits + submits,
            submit_time: stats.submit_time + submit_time,
            ..stats
        }
    }

    /// Whether profiled dispatches run back to back in one pass, stamped between (see the `profile` module).
    pub fn profiles_in_pass(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    }

    /// Stops profiling and returns the GPU time per kernel entry point and grid since it started.
    pub fn stop_profiling(&self) -> Result<Vec<KernelTime>> {
        let mut batch = self.lock_batch();
        self.submit_locked(&mut batch)?;
        Ok(batch.profiler.take().map(|mut p| p.take()).unwrap_or_default())
    }

    /// The device queue. Work submitted to it directly must first call [`flush_to_queue`](Self::flush_to_queue)
    /// to run after what was recorded.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }
    pub fn features(&self) -> wgpu::Features {
        self.features
    }
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }
    /// Subgroup operations on subgroups of at least four lanes, which every subgroup kernel assumes
    /// (kernels/reduce_subgroup.wgsl's first two exchanges pair lanes 1 and 2 apart).
    pub fn has_subgroups(&self) -> bool {
        self.features.contains(wgpu::Features::SUBGROUP) && self.info.subgroup_min_size >= 4
    }
    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }
    pub fn cooperative_matrices(&self) -> &[wgpu::CooperativeMatrixProperties] {
        &self.cooperative_matrices
    }
    pub fn backend_name(&self) -> &'static str {
        adapters::backend_name(self.info.backend)
    }
    /// The largest storage binding, in bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.limits.max_storage_buffer_binding_size.min(self.limits.max_buffer_size)
    }

    /// Fails with a typed error when a tensor of `bytes` cannot be bound as one storage buffer.
    pub fn check_binding(&self, op: &'static str, bytes: u64) -> Result<()> {
        let limit = self.max_binding_bytes();
        if bytes > limit { Err(KernelError::BindingTooLarge { op, bytes, limit }) } else { Ok(()) }
    }

    // ---- buffers -------------------------------------------------------------------------------

    fn usage() -> wgpu::BufferUsages {
        wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
    }

    /// A pooled buffer of at least `bytes` bytes, with undefined contents, for op outputs.
    pub fn alloc(self: &Arc<Self>, op: &'static str, bytes: u64) -> Result<GpuBuffer> {
        let size = size_class(bytes.max(1).next_multiple_of(BUFFER_ALIGN));
        self.check_buffer_size(op, size)?;
        let reused = self.pool.lock().unwrap_or_else(|p| p.into_inner()).take(size);
        let buffer = match reused {
            Some(b) => b,
            None => {
                self.buffers_made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(op),
                    size,
                    usage: Self::usage(),
                    mapped_at_creation: false,
                })
            }
        };
        Ok(GpuBuffer { buffer: Some(buffer), pooled: true, ctx: self.clone() })
    }

    /// An exact-size buffer holding `data` (weights and inputs: not pooled, freed on drop).
    pub fn upload(self: &Arc<Self>, label: &str, data: &[u8]) -> Result<GpuBuffer> {
        let size = (data.len() as u64).max(1).next_multiple_of(BUFFER_ALIGN);
        self.check_buffer_size("upload", size)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: Self::usage(),
            mapped_at_creation: true,
        });
        {
            let mut view = buffer
                .slice(..)
                .get_mapped_range_mut()
                .map_err(|e| KernelError::Gpu(format!("mapping a new buffer for upload: {e}")))?;
            view.slice(..data.len()).copy_from_slice(data);
            view.slice(data.len()..).fill(0);
        }
        buffer.unmap();
        Ok(GpuBuffer { buffer: Some(buffer), pooled: false, ctx: self.clone() })
    }

    /// Overwrites the start of `buffer` with `data`, ordered after every op recorded so far.
    pub fn write_buffer(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) -> Result<()> {
        // Queue writes land before the next submission, so recorded work must go first.
        self.flush_to_queue()?;
        let padded = data.len().next_multiple_of(4);
        if padded == data.len() {
            self.queue.write_buffer(buffer, offset, data);
        } else {
            let mut tmp = data.to_vec();
            tmp.resize(padded, 0);
            self.queue.write_buffer(buffer, offset, &tmp);
        }
        Ok(())
    }

    fn check_buffer_size(&self, op: &'static str, size: u64) -> Result<()> {
        if size > self.limits.max_buffer_size {
            return Err(KernelError::BindingTooLarge { op, bytes: size, limit: self.limits.max_buffer_size });
        }
        Ok(())
    }

    fn release(&self, buffer: wgpu::Buffer) {
        let refused = self.pool.lock().unwrap_or_else(|p| p.into_inner()).put(buffer);
        if let Some(buffer) = refused {
            self.forget(buffer);
        }
    }

    /// Frees `buffer`. Cached bind groups hold their buffers, so a large one is freed only once they are
    /// gone: without this, a long prefill whose activations overflow the pool kept every layer's
    /// (a 32768-token Llama-3-8B prefill ran an H200 out of memory). Small ones (token ids) may wait for
    /// the cache to turn over.
    fn forget(&self, buffer: wgpu::Buffer) {
        if buffer.size() >= FORGET_BIND_GROUPS_BYTES {
            drop(buffer);
            self.bind_groups.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    /// Frees every cached buffer of the pool.
    pub fn trim_pool(&self) {
        self.bind_groups.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.pool.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    // ---- pipelines -----------------------------------------------------------------------------

    fn pipeline(
        &self,
        kernel: &'static KernelSource,
        entry: &'static str,
        constants: &[(&'static str, f64)],
    ) -> Result<wgpu::ComputePipeline> {
        let hash = PipelineKey::hash_of(kernel.name, entry, constants);
        match self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).get(&hash) {
            Some((key, p)) if key.matches(kernel.name, entry, constants) => return Ok(p.clone()),
            _ => {}
        }
        let module = self.module(kernel)?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let label = format!("{}::{entry}", kernel.name);
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Gpu(format!("building pipeline {label} {constants:?}: {e}")));
        }
        let key = PipelineKey {
            kernel: kernel.name,
            entry,
            constants: constants.iter().map(|&(k, v)| (k, v.to_bits())).collect(),
        };
        self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, (key, pipeline.clone()));
        Ok(pipeline)
    }

    fn module(&self, kernel: &'static KernelSource) -> Result<wgpu::ShaderModule> {
        if let Some(m) = self.modules.lock().unwrap_or_else(|p| p.into_inner()).get(kernel.name) {
            return Ok(m.clone());
        }
        let source = kernel.compose();
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let desc =
            wgpu::ShaderModuleDescriptor { label: Some(kernel.name), source: wgpu::ShaderSource::Wgsl(source.into()) };
        // Loop bounding (an iteration counter on every loop, added so that an infinite loop cannot be
        // optimised into undefined behaviour) costs the streaming kernels measurably on the H100.
        // Bounds checks stay on unless the kernel source opts out.
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        checks.bounds_checks = kernel.bounds_checks;
        // SAFETY: every loop in kernels/*.wgsl runs a trip count bounded by its uniform parameters
        // (row lengths, chunk counts, tile counts) or, in select.wgsl `consume`, by the 8 pending values
        // each round retires at least one of, so none can run forever. The sources without bounds checks
        // index only in range (each argues so where it is declared).
        let module = unsafe { self.device.create_shader_module_trusted(desc, checks) };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Gpu(format!("compiling kernel {}: {e}", kernel.name)));
        }
        self.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(kernel.name, module.clone());
        Ok(module)
    }

    // ---- recording and submission --------------------------------------------------------------

    fn lock_batch(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one kernel launch into the open batch.
    pub fn dispatch(&self, d: Dispatch<'_>) -> Result<()> {
        let pipeline = self.pipeline(d.kernel, d.entry, d.constants)?;
        let align = self.limits.min_uniform_buffer_offset_alignment as u64;
        let mut batch = self.lock_batch();
        let need = d.params.map_or(0, |p| (p.len() as u64).next_multiple_of(align));
        if batch.params.len() as u64 + need > PARAM_ARENA_BYTES {
            self.submit_locked(&mut batch)?;
        }
        let mut params_at = None;
        if let Some(params) = d.params {
            let offset = batch.params.len() as u64;
            batch.params.extend_from_slice(params);
            batch.params.resize((offset + need) as usize, 0);
            params_at = Some((offset, params.len() as u64));
        }
        let hash = BindKey::hash_of(&pipeline, params_at, d.buffers);
        let mut cache = self.bind_groups.lock().unwrap_or_else(|p| p.into_inner());
        let bind_group = match cache.get(&hash) {
            Some((key, g)) if key.matches(&pipeline, params_at, d.buffers) => g.clone(),
            _ => {
                let layout = pipeline.get_bind_group_layout(0);
                let mut entries = Vec::with_capacity(d.buffers.len() + 1);
                if let Some((offset, size)) = params_at {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &batch.arena,
                            offset,
                            size: wgpu::BufferSize::new(size),
                        }),
                    });
                }
                for (i, b) in d.buffers.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() });
                }
                let g = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(d.entry),
                    layout: &layout,
                    entries: &entries,
                });
                batch.stats.bind_groups_made += 1;
                if cache.len() >= MAX_BIND_GROUPS {
                    cache.clear();
                }
                let key = BindKey {
                    pipeline: pipeline.clone(),
                    params: params_at,
                    buffers: d.buffers.iter().map(|&b| b.clone()).collect(),
                };
                cache.insert(hash, (key, g.clone()));
                g
            }
        };
        drop(cache);
        batch.launches += 1;
        batch.stats.launches += 1;
        let [x, y, z] = d.workgroups.grid();
        let max = self.limits.max_compute_workgroups_per_dimension;
        if x > max || y > max || z > max {
            return Err(KernelError::Argument {
                op: d.entry,
                name: "workgroups",
                value: format!("{x}x{y}x{z}"),
                reason: format!("exceeds the adapter's limit of {max} per dimension"),
            });
        }
        if batch.profiler.as_ref().is_some_and(|p| !p.has_room(2)) {
            self.submit_locked(&mut batch)?;
        }
        if batch.profiler.is_some() {
            self.dispatch_profiled(&mut batch, d, &pipeline, &bind_group, [x, y, z]);
            return Ok(());
        }
        let pass = self.open_pass(&mut batch);
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
        Ok(())
    }

    /// Records a dispatch with timestamps around it (see the `profile` module).
    fn dispatch_profiled(
        &self,
        batch: &mut Batch,
        d: Dispatch<'_>,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        [x, y, z]: [u32; 3],
    ) {
        let label = profile::Launch {
            kernel: format!("{}/{}", d.kernel.name, d.entry),
            grid: [x, y, z],
            largest_operand: d.buffers.iter().map(|b| b.size()).max().unwrap_or(0),
        };
        let profiler = batch.profiler.as_mut().expect("profiling is on");
        let query_set = profiler.query_set.clone();
        if self.features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
            // Back to back in the open pass, a stamp after each dispatch.
            let opened = batch.pass.is_none();
            self.open_pass(batch);
            let profiler = batch.profiler.as_mut().expect("profiling is on");
            let start = match profiler.pass_stamp {
                Some(s) if !opened => s,
                _ => {
                    let s = profiler.next_stamp();
                    batch.pass.as_mut().expect("pass is open").write_timestamp(&query_set, s);
                    s
                }
            };
            let end = profiler.next_stamp();
            profiler.pass_stamp = Some(end);
            profiler.label(label, start, end);
            let pass = batch.pass.as_mut().expect("pass is open");
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(x, y, z);
            pass.write_timestamp(&query_set, end);
            return;
        }
        // Its own pass, stamped at both ends.
        let (start, end) = (profiler.next_stamp(), profiler.next_stamp());
        profiler.label(label, start, end);
        batch.pass = None;
        let encoder = batch.encoder.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("torchless batch") })
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(d.entry),
            timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                query_set: &query_set,
                beginning_of_pass_write_index: Some(start),
                end_of_pass_write_index: Some(end),
            }),
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }

    fn open_pass<'b>(&self, batch: &'b mut Batch) -> &'b mut wgpu::ComputePass<'static> {
        if batch.pass.is_none() {
            let encoder = batch.encoder.get_or_insert_with(|| {
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("torchless batch") })
            });
            let pass = encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("torchless ops"),
                    timestamp_writes: None,
                })
                .forget_lifetime();
            batch.pass = Some(pass);
        }
        batch.pass.as_mut().expect("pass was just opened")
    }

    fn encoder<'b>(&self, batch: &'b mut Batch) -> &'b mut wgpu::CommandEncoder {
        batch.pass = None; // copies happen outside compute passes
        batch.encoder.get_or_insert_with(|| {
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("torchless batch") })
        })
    }

    /// Records a device-to-device copy of `bytes` bytes (a multiple of 4).
    pub fn copy_buffer(
        &self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        let mut batch = self.lock_batch();
        self.encoder(&mut batch).copy_buffer_to_buffer(src, src_offset, dst, dst_offset, bytes);
        Ok(())
    }

    /// [`flush`](Self::flush) once at least `SUBMIT_MIN_LAUNCHES` (64) launches are waiting.
    pub fn flush_some(&self) -> Result<()> {
        let mut batch = self.lock_batch();
        if batch.launches < SUBMIT_MIN_LAUNCHES {
            return Ok(());
        }
        self.submit_locked(&mut batch)
    }

    /// Submits the recorded batch without waiting for it.
    pub fn flush(&self) -> Result<()> {
        let mut batch = self.lock_batch();
        self.submit_locked(&mut batch)
    }

    fn submit_locked(&self, batch: &mut Batch) -> Result<()> {
        self.send_locked(batch, None, false).map(drop)
    }

    /// Hands the recorded batch (if any) to the submission thread, with a read-back buffer to map once it
    /// is submitted; with `want_index`, returns where its submission index will arrive. While profiling,
    /// submits on this thread instead (after the thread's batches), in order with the profiler's reads.
    fn send_locked(
        &self,
        batch: &mut Batch,
        map: Option<submit::MapJob>,
        want_index: bool,
    ) -> Result<Option<std::sync::mpsc::Receiver<wgpu::SubmissionIndex>>> {
        batch.pass = None;
        batch.launches = 0;
        let (index_tx, index_rx) = match want_index {
            true => {
                let (tx, rx) = std::sync::mpsc::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let Some(mut encoder) = batch.encoder.take() else {
            self.take_device_error()?;
            return Ok(None);
        };
        if let Some(p) = &batch.profiler {
            p.resolve(&mut encoder);
        }
        // The next batch's arena bytes start at this one's size, not growing from nothing.
        let next = Vec::with_capacity(batch.params.len());
        let params = std::mem::replace(&mut batch.params, next);
        let job = submit::Job { encoder, params, map, index: index_tx };
        if batch.profiler.is_none() {
            self.submitter.send(job)?;
            self.take_device_error()?;
            return Ok(index_rx);
        }
        self.submitter.drain()?;
        let t = std::time::Instant::now();
        job.run(&self.queue, &batch.arena);
        batch.stats.submits += 1;
        batch.stats.submit_time += t.elapsed();
        if let Some(p) = batch.profiler.as_mut() {
            p.collect(&self.device).map_err(KernelError::Gpu)?;
        }
        self.take_device_error()?;
        Ok(index_rx)
    }

    /// Submits the recorded batch and returns once it is in the device queue: work submitted to
    /// [`queue`](Self::queue) afterwards, and queue writes, run after it.
    pub fn flush_to_queue(&self) -> Result<()> {
        self.flush()?;
        self.drain_submissions()
    }

    /// Returns once every batch handed over so far is in the device queue (the open batch stays open).
    pub(crate) fn drain_submissions(&self) -> Result<()> {
        self.submitter.drain()?;
        self.take_device_error()
    }

    fn take_device_error(&self) -> Result<()> {
        match self.device_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(KernelError::Gpu(e)),
            None => Ok(()),
        }
    }

    /// Submits the recorded batch without waiting for the device; the index (none when nothing was
    /// recorded) lets [`wait_for`](Self::wait_for) wait for this submission alone.
    pub fn submit(&self) -> Result<Option<wgpu::SubmissionIndex>> {
        let rx = {
            let mut batch = self.lock_batch();
            self.send_locked(&mut batch, None, true)?
        };
        rx.map(|rx| rx.recv().map_err(|_| submit::stopped())).transpose()
    }

    /// Waits until the submission `index` (and every one before it) has finished.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| KernelError::Gpu(format!("waiting for the GPU: {e}")))?;
        self.take_device_error()
    }

    /// Submits the batch and waits for the GPU to finish it.
    pub fn synchronize(&self) -> Result<()> {
        self.flush_to_queue()?;
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: None })
            .map_err(|e| KernelError::Gpu(format!("waiting for the GPU: {e}")))?;
        self.take_device_error()
    }

    /// Copies `bytes` bytes from the start of `buffer` to the host, after every recorded op.
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<Vec<u8>> {
        self.start_read(buffer, offset, bytes)?.finish(self)
    }

    /// Submits everything recorded so far plus a copy of `bytes` bytes of `buffer` to the host, without
    /// waiting. Ops recorded after this call do not delay [`PendingRead::wait`], so the host can record
    /// the next step while the device still runs this one (decode with the sampled token kept on the device).
    pub fn read_buffer_later(self: &Arc<Self>, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<PendingRead> {
        Ok(PendingRead { ctx: self.clone(), read: self.start_read(buffer, offset, bytes)? })
    }

    fn start_read(&self, buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Result<StagedRead> {
        let padded = bytes.next_multiple_of(4).max(4);
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("torchless readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let map = submit::MapJob { staging: staging.clone(), mapped: tx };
        let index = {
            let mut batch = self.lock_batch();
            self.encoder(&mut batch).copy_buffer_to_buffer(buffer, offset, &staging, 0, padded);
            self.send_locked(&mut batch, Some(map), true)?.expect("the copy was just recorded")
        };
        Ok(StagedRead { staging, index, bytes, rx })
    }
}

/// A copy to the host, submitted and being mapped.
struct StagedRead {
    staging: wgpu::Buffer,
    /// Where the copy's submission index arrives once the submission thread has submitted it.
    index: std::sync::mpsc::Receiver<wgpu::SubmissionIndex>,
    bytes: u64,
    rx: std::sync::mpsc::Receiver<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl StagedRead {
    /// Waits for the copy's submission (not for anything submitted after it) and returns the bytes.
    fn finish(self, ctx: &GpuContext) -> Result<Vec<u8>> {
        let index = self.index.recv().map_err(|_| submit::stopped())?;
        ctx.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| KernelError::Gpu(format!("waiting for the GPU: {e}")))?;
        ctx.take_device_error()?;
        self.rx
            .recv()
            .map_err(|_| KernelError::Gpu("readback was never completed".into()))?
            .map_err(|e| KernelError::Gpu(format!("mapping the readback buffer: {e}")))?;
        let slice = self.staging.slice(..);
        let view = slice.get_mapped_range().map_err(|e| KernelError::Gpu(format!("reading back: {e}")))?;
        Ok(view[..self.bytes as usize].to_vec())
    }
}

/// A read-back in flight ([`GpuContext::read_buffer_later`]).
pub struct PendingRead {
    ctx: Arc<GpuContext>,
    read: StagedRead,
}

impl PendingRead {
    /// Waits for the copy (and what was submitted before it, nothing after) and returns the bytes.
    pub fn wait(self) -> Result<Vec<u8>> {
        self.read.finish(&self.ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::{GpuContext, MAX_WORKGROUPS_PER_DIM, Workgroups};
    use crate::ops::elementwise::{self, Unary};
    use crate::{Backend, BackendPreference, Tensor};

    /// A context of its own (the shared one records other tests' launches concurrently), or `None`
    /// without an adapter (the test is then skipped, and said so).
    fn own_context() -> Option<(std::sync::Arc<GpuContext>, Backend)> {
        crate::testing::test_gpu()?;
        let ctx = std::sync::Arc::new(GpuContext::new(BackendPreference::Gpu).expect("an adapter is present"));
        Some((ctx.clone(), Backend::Gpu(ctx)))
    }

    /// Batches handed to the submission thread stay in order with what the host does to the queue itself:
    /// a queue write after a flushed op lands after it (without the wait for the thread, the write landed
    /// first on lavapipe in every run), and reads see every batch before them.
    #[test]
    fn queue_writes_and_reads_keep_their_order_with_handed_over_batches() {
        let Some((ctx, backend)) = own_context() else { return };
        let x = Tensor::from_slice(&backend, &[1f32; 64], &[64]).unwrap();
        for round in 0..16 {
            let y = elementwise::add(&x, &x).unwrap();
            ctx.flush().unwrap();
            let v = [round as f32; 64];
            ctx.write_buffer(y.gpu_buffer().unwrap().raw(), 0, bytemuck::cast_slice(&v)).unwrap();
            assert_eq!(y.to_f32_vec().unwrap(), v, "round {round}: the write landed before the add");
        }
        // Many batches in flight (more than the thread queues), then one read.
        let mut y = x.clone();
        for _ in 0..40 {
            for _ in 0..70 {
                y = elementwise::add(&y, &x).unwrap();
            }
            ctx.flush_some().unwrap();
        }
        assert_eq!(y.to_f32_vec().unwrap(), vec![2801f32; 64]);
    }

    #[test]
    fn profiling_times_every_launch_and_host_stats_count_them() {
        let Some((ctx, backend)) = own_context() else { return };
        let x = Tensor::from_slice(&backend, &[0.5f32; 300], &[300]).unwrap();
        // Large enough for more workgroups than `x` takes: the same entry point on another grid.
        let big = Tensor::from_slice(&backend, &vec![0.5f32; 1 << 20], &[1 << 20]).unwrap();
        let before = ctx.host_stats();
        ctx.start_profiling().unwrap();
        let mut y = x.clone();
        for _ in 0..5 {
            y = elementwise::unary(&y, Unary::Silu).unwrap();
            y = elementwise::add(&y, &x).unwrap();
        }
        elementwise::unary(&big, Unary::Silu).unwrap();
        let times = ctx.stop_profiling().unwrap();
        let after = ctx.host_stats();
        let launches: u64 = times.iter().map(|t| t.launches).sum();
        assert_eq!(launches, 11, "{times:?}");
        assert_eq!(times.len(), 3, "one entry per kernel entry point, grid and largest operand: {times:?}");
        let one = times.iter().find(|t| t.launches == 1).expect("the large silu on its own line");
        assert!(times.iter().any(|t| t.launches == 5 && t.kernel == one.kernel && t.grid != one.grid), "{times:?}");
        assert!(one.largest_operand >= 4 << 20, "the large silu's operand is 4 MiB: {times:?}");
        assert!(times.iter().all(|t| t.launches == 1 || t.largest_operand < 4 << 20), "{times:?}");
        assert!(times.iter().all(|t| t.total_ms.is_finite() && t.total_ms >= 0.0), "{times:?}");
        assert_eq!(after.launches - before.launches, 11);
        assert!(after.submits > before.submits);
        // Still correct while profiled: silu(0.5) + 0.5, five times over.
        let mut want = 0.5f32;
        for _ in 0..5 {
            want = want / (1.0 + (-want).exp()) + 0.5;
        }
        let got = y.to_f32_vec().unwrap();
        assert!(got.iter().all(|&v| (v - want).abs() < 1e-5), "{} vs {want}", got[0]);
    }

    #[test]
    fn linear_grids_fold_with_little_waste() {
        for n in [1u32, 255, 65535, 65536, 131071, 262144, 1 << 22, u32::MAX / 256] {
            let [x, y, z] = Workgroups::Linear(n).grid();
            assert!(x <= MAX_WORKGROUPS_PER_DIM && y <= MAX_WORKGROUPS_PER_DIM && z == 1, "{n}: {x}x{y}");
            let total = x as u64 * y as u64;
            assert!(total >= n as u64 && total - (n as u64) < y as u64, "{n}: {x}x{y} wastes too much");
        }
    }
}
