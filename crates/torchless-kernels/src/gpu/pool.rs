//! Recycles op-output buffers by size class, so a decode loop allocates nothing after its first step.

use rustc_hash::FxHashMap;

/// Cached bytes above which released buffers are freed instead of kept.
const MAX_CACHED_BYTES: u64 = 2 << 30;

/// Powers of two up to 64 KiB, then eight classes per octave (at most 12.5 % waste).
pub fn size_class(bytes: u64) -> u64 {
    if bytes <= 64 * 1024 {
        return bytes.next_power_of_two();
    }
    let octave = bytes.next_power_of_two() / 2;
    let step = octave / 8;
    bytes.next_multiple_of(step)
}

#[derive(Default)]
pub struct BufferPool {
    free: FxHashMap<u64, Vec<wgpu::Buffer>>,
    cached_bytes: u64,
}

impl BufferPool {
    pub fn take(&mut self, size: u64) -> Option<wgpu::Buffer> {
        let buffer = self.free.get_mut(&size)?.pop()?;
        self.cached_bytes -= size;
        Some(buffer)
    }

    /// Keeps `buffer` for reuse, or hands it back when the cache is full (the caller frees it).
    pub fn put(&mut self, buffer: wgpu::Buffer) -> Option<wgpu::Buffer> {
        let size = buffer.size();
        if self.cached_bytes + size > MAX_CACHED_BYTES {
            return Some(buffer);
        }
        self.cached_bytes += size;
        self.free.entry(size).or_default().push(buffer);
        None
    }

    pub fn clear(&mut self) {
        self.free.clear();
        self.cached_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_with_bounded_waste() {
        for bytes in [1u64, 4, 16, 17, 1000, 65536, 65537, 100_000, 1 << 20, (1 << 20) + 1, 3 << 30] {
            let class = size_class(bytes);
            assert!(class >= bytes, "class {class} < {bytes}");
            if bytes > 64 * 1024 {
                assert!(class as f64 <= bytes as f64 * 1.125 + 1.0, "class {class} wastes too much for {bytes}");
            }
            assert_eq!(size_class(class), class, "classes are fixed points");
        }
    }
}
