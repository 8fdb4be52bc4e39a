//! Memory-mapped safetensors files of a model directory (single file or sharded with an index).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::SafeTensors;
use torchless_kernels::{Backend, DType, Tensor};

use crate::error::{Error, Result};

struct Entry {
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Every tensor of a model's safetensors files, mapped, not yet read.
pub struct SafetensorsDir {
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
}

fn dtype_of(name: &str, d: safetensors::Dtype) -> Result<DType> {
    match d {
        safetensors::Dtype::F32 => Ok(DType::F32),
        safetensors::Dtype::F16 => Ok(DType::F16),
        safetensors::Dtype::BF16 => Ok(DType::BF16),
        other => Err(Error::TensorDType { name: name.to_string(), found: format!("{other:?}") }),
    }
}

impl SafetensorsDir {
    /// Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<SafetensorsDir> {
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Json { path: index.clone(), source: e })?;
            let map = json
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Safetensors { file: index.clone(), reason: "no weight_map object".into() })?;
            let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(str::to_string)).collect();
            shards.sort();
            shards.dedup();
            shards.into_iter().map(|s| dir.join(s)).collect()
        } else if single.exists() {
            vec![single]
        } else {
            return Err(Error::MissingFile { path: dir.to_path_buf(), what: "model.safetensors" });
        };

        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for (i, path) in paths.into_iter().enumerate() {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the file is opened read-only; torchless never writes it, and a model file changed
            // by another process while mapped is outside what we can guard against.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = SafeTensors::deserialize(&mmap)
                .map_err(|e| Error::Safetensors { file: path.clone(), reason: e.to_string() })?;
            for (name, view) in st.tensors() {
                let dtype = dtype_of(&name, view.dtype())?;
                let data = view.data();
                let start = data.as_ptr() as usize - mmap.as_ptr() as usize;
                entries.insert(
                    name,
                    Entry { file: i, dtype, shape: view.shape().to_vec(), start, end: start + data.len() },
                );
            }
            files.push((path, mmap));
        }
        Ok(SafetensorsDir { files, entries })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// Total bytes of all tensors.
    pub fn total_bytes(&self) -> u64 {
        self.entries.values().map(|e| (e.end - e.start) as u64).sum()
    }

    /// The raw bytes, dtype and shape of a tensor.
    pub fn raw(&self, name: &str) -> Result<(&[u8], DType, &[usize])> {
        let e = self.entries.get(name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        Ok((&self.files[e.file].1[e.start..e.end], e.dtype, &e.shape))
    }

    /// Uploads a tensor in its own dtype, checking its shape.
    pub fn load(&self, backend: &Backend, name: &str, expected: &[usize]) -> Result<Tensor> {
        let (bytes, dtype, shape) = self.raw(name)?;
        if shape != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: shape.to_vec(),
            });
        }
        Ok(Tensor::from_bytes(backend, bytes, shape, dtype)?)
    }

    /// Uploads a tensor if present.
    pub fn load_optional(&self, backend: &Backend, name: &str, expected: &[usize]) -> Result<Option<Tensor>> {
        if self.contains(name) { self.load(backend, name, expected).map(Some) } else { Ok(None) }
    }

    /// The values of a tensor as f32 on the host (small tensors such as norms).
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        let (bytes, dtype, _) = self.raw(name)?;
        Ok(torchless_kernels::tensor::bytes_to_f32(bytes, dtype))
    }

    pub fn file_paths(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }
}
