//! Recorded batches are finished and submitted on a thread of their own. wgpu encodes a batch in
//! `CommandEncoder::finish` (resource tracking, barriers, and the driver's recording of every launch), and
//! in decode that was most of the host's time per launch; on this thread it overlaps the recording of
//! the next batch. One thread and one channel keep the submissions in order. Whatever uses the queue
//! directly (queue writes, waits for the device) first waits for the thread to be idle ([`Submitter::drain`]).

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{KernelError, Result};

/// Batches handed over but not yet submitted, at most: recording waits beyond that.
const QUEUED_BATCHES: usize = 4;

/// A batch to submit: its encoder, the parameter arena's bytes (written to `arena` first), and optionally a
/// read-back buffer to map once submitted and a channel for the submission's index.
pub(super) struct Job {
    pub encoder: wgpu::CommandEncoder,
    pub params: Vec<u8>,
    pub map: Option<MapJob>,
    pub index: Option<mpsc::Sender<wgpu::SubmissionIndex>>,
}

/// A staging buffer the batch copies into, mapped for reading after the submission.
pub(super) struct MapJob {
    pub staging: wgpu::Buffer,
    pub mapped: mpsc::Sender<std::result::Result<(), wgpu::BufferAsyncError>>,
}

impl Job {
    /// Writes the parameter arena, finishes and submits the encoder, then starts the read-back's map and
    /// sends the index. The submission thread runs every job this way (and the recording thread, while
    /// profiling).
    pub fn run(self, queue: &wgpu::Queue, arena: &wgpu::Buffer) {
        if !self.params.is_empty() {
            queue.write_buffer(arena, 0, &self.params);
        }
        let index = queue.submit([self.encoder.finish()]);
        if let Some(map) = self.map {
            map.start();
        }
        if let Some(tx) = self.index {
            let _ = tx.send(index);
        }
    }
}

/// The error of a hand-over or a wait once the submission thread is gone.
pub(super) fn stopped() -> KernelError {
    KernelError::Gpu("the GPU submission thread has stopped".into())
}

impl MapJob {
    fn start(self) {
        let MapJob { staging, mapped } = self;
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = mapped.send(r);
        });
    }
}

#[derive(Default)]
struct Progress {
    sent: u64,
    done: u64,
    /// True once the thread has stopped (it does not while its channel is open, unless wgpu panics).
    stopped: bool,
    submit_time: Duration,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Marks the thread stopped however it ends, so that no `drain` waits for it forever.
struct StopGuard(Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        self.0.lock().stopped = true;
        self.0.changed.notify_all();
    }
}

pub(super) struct Submitter {
    jobs: Option<mpsc::SyncSender<Job>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Submitter {
    pub fn new(queue: wgpu::Queue, arena: wgpu::Buffer) -> Result<Submitter> {
        let (jobs, rx) = mpsc::sync_channel::<Job>(QUEUED_BATCHES);
        let shared = Arc::new(Shared::default());
        let guard = StopGuard(shared.clone());
        let thread = std::thread::Builder::new()
            .name("torchless-submit".into())
            .spawn(move || {
                let shared = guard.0.clone();
                let _stop = guard;
                for job in rx {
                    let t = Instant::now();
                    job.run(&queue, &arena);
                    let mut p = shared.lock();
                    p.done += 1;
                    p.submit_time += t.elapsed();
                    drop(p);
                    shared.changed.notify_all();
                }
            })
            .map_err(|e| KernelError::Gpu(format!("starting the submission thread: {e}")))?;
        Ok(Submitter { jobs: Some(jobs), shared, thread: Some(thread) })
    }

    /// Hands a batch to the thread (waiting while [`QUEUED_BATCHES`] are queued).
    pub fn send(&self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or_else(stopped)?;
        self.shared.lock().sent += 1;
        jobs.send(job).map_err(|_| {
            self.shared.lock().sent -= 1;
            stopped()
        })
    }

    /// Waits until every batch handed over is submitted.
    pub fn drain(&self) -> Result<()> {
        let mut p = self.shared.lock();
        while p.done < p.sent && !p.stopped {
            p = self.shared.changed.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if p.done < p.sent {
            return Err(KernelError::Gpu("the GPU submission thread stopped with batches unsubmitted".into()));
        }
        Ok(())
    }

    /// (submissions made, time spent finishing and submitting them) so far.
    pub fn stats(&self) -> (u64, Duration) {
        let p = self.shared.lock();
        (p.done, p.submit_time)
    }
}

impl Drop for Submitter {
    fn drop(&mut self) {
        // Closing the channel ends the thread once it has submitted what it holds.
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
