//! A strict reader of GGUF v3 files (llama.cpp's model format), memory-mapped.
//!
//! Layout (little-endian): magic "GGUF", version u32 (2 or 3), tensor_count u64, kv_count u64, the
//! key/value metadata, the tensor infos (name, n_dims, dims innermost-first, ggml type, offset), zero
//! padding to `general.alignment` (default 32), then the tensor data. Every tensor's offset must equal
//! the padded running sum of the sizes before it (as llama.cpp requires), so tensors neither overlap
//! nor leave gaps, and each must lie inside the file.
//!
//! Nothing in a file can make the reader panic or allocate more than the file could describe: every
//! read is bounds-checked, every size is computed with checked arithmetic, and counts are checked
//! against the bytes left before anything is reserved. Errors name the key or tensor at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

/// `general.alignment` when the file does not set it.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// llama.cpp's GGML_MAX_NAME: tensor names are shorter than this.
pub const MAX_NAME_LEN: usize = 64;
/// llama.cpp's GGML_MAX_DIMS.
pub const MAX_DIMS: usize = 4;

/// What went wrong in a GGUF file; every variant names the key, tensor or byte offset concerned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("truncated: {what} at byte {offset} needs {needed} bytes, but the file has {len}")]
    Truncated { what: String, offset: u64, needed: u64, len: u64 },
    #[error("not a GGUF file: magic {found:02x?} (expected \"GGUF\")")]
    BadMagic { found: [u8; 4] },
    #[error("GGUF version {found} is not supported (2 and 3 are){hint}")]
    BadVersion { found: u32, hint: &'static str },
    #[error("metadata key {key:?}: unknown value type {id}")]
    BadValueType { key: String, id: u32 },
    #[error("metadata key {key:?}: arrays of arrays are not supported")]
    NestedArray { key: String },
    #[error("{what}: not valid UTF-8")]
    InvalidUtf8 { what: String },
    #[error("metadata key #{index} is empty")]
    EmptyKey { index: u64 },
    #[error("metadata key {key:?} appears twice")]
    DuplicateKey { key: String },
    #[error("metadata key {key:?}: expected {expected}, found {found}")]
    KeyType { key: String, expected: &'static str, found: String },
    #[error("metadata key {key:?} is missing")]
    MissingKey { key: String },
    #[error("general.alignment = {value}: must be a power of two")]
    BadAlignment { value: u64 },
    #[error("tensor #{index} {name:?}: {reason}")]
    TensorName { index: u64, name: String, reason: String },
    #[error("tensor {name:?} appears twice")]
    DuplicateTensor { name: String },
    #[error("tensor {name:?}: {n_dims} dimensions (at most {MAX_DIMS})")]
    TooManyDims { name: String, n_dims: u32 },
    #[error("tensor {name:?}: unknown ggml type id {id}")]
    UnknownType { name: String, id: u32 },
    #[error("tensor {name:?}: row length {row} is not a multiple of the {ty} block size {block}")]
    RowNotBlocks { name: String, ty: GgmlType, row: u64, block: u64 },
    #[error("tensor {name:?}: size of dims {dims:?} overflows")]
    SizeOverflow { name: String, dims: Vec<u64> },
    #[error("tensor {name:?}: offset {found} overlaps the tensor before it (expected offset {expected})")]
    TensorOverlap { name: String, expected: u64, found: u64 },
    #[error("tensor {name:?}: offset {found} leaves a gap or is misaligned (expected offset {expected})")]
    TensorOffset { name: String, expected: u64, found: u64 },
    #[error("tensor {name:?}: data ends at byte {end}, past the end of the file ({len} bytes)")]
    TensorOutOfRange { name: String, end: u64, len: u64 },
}

/// ggml tensor types (ids from ggml.h). Ids not listed here are rejected.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

impl GgmlType {
    /// (id, type, elements per block, bytes per block), from ggml's type traits.
    const TABLE: [(u32, GgmlType, u64, u64); 34] = [
        (0, GgmlType::F32, 1, 4),
        (1, GgmlType::F16, 1, 2),
        (2, GgmlType::Q4_0, 32, 18),
        (3, GgmlType::Q4_1, 32, 20),
        (6, GgmlType::Q5_0, 32, 22),
        (7, GgmlType::Q5_1, 32, 24),
        (8, GgmlType::Q8_0, 32, 34),
        (9, GgmlType::Q8_1, 32, 36),
        (10, GgmlType::Q2_K, 256, 84),
        (11, GgmlType::Q3_K, 256, 110),
        (12, GgmlType::Q4_K, 256, 144),
        (13, GgmlType::Q5_K, 256, 176),
        (14, GgmlType::Q6_K, 256, 210),
        (15, GgmlType::Q8_K, 256, 292),
        (16, GgmlType::IQ2_XXS, 256, 66),
        (17, GgmlType::IQ2_XS, 256, 74),
        (18, GgmlType::IQ3_XXS, 256, 98),
        (19, GgmlType::IQ1_S, 256, 50),
        (20, GgmlType::IQ4_NL, 32, 18),
        (21, GgmlType::IQ3_S, 256, 110),
        (22, GgmlType::IQ2_S, 256, 82),
        (23, GgmlType::IQ4_XS, 256, 136),
        (24, GgmlType::I8, 1, 1),
        (25, GgmlType::I16, 1, 2),
        (26, GgmlType::I32, 1, 4),
        (27, GgmlType::I64, 1, 8),
        (28, GgmlType::F64, 1, 8),
        (29, GgmlType::IQ1_M, 256, 56),
        (30, GgmlType::BF16, 1, 2),
        (34, GgmlType::TQ1_0, 256, 54),
        (35, GgmlType::TQ2_0, 256, 66),
        (39, GgmlType::MXFP4, 32, 17),
        (40, GgmlType::NVFP4, 64, 36),
        (41, GgmlType::Q1_0, 128, 18),
    ];

    pub fn from_id(id: u32) -> Option<GgmlType> {
        Self::TABLE.iter().find(|e| e.0 == id).map(|e| e.1)
    }
    fn entry(self) -> (u32, GgmlType, u64, u64) {
        *Self::TABLE.iter().find(|e| e.1 == self).expect("every type is in the table")
    }
    pub fn id(self) -> u32 {
        self.entry().0
    }
    /// Elements per block (1 for plain types).
    pub fn block_elems(self) -> u64 {
        self.entry().2
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> u64 {
        self.entry().3
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// A metadata array: elements of one type, stored packed.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Integer elements as i128 (any integer type); `None` for other element types.
    pub fn as_ints(&self) -> Option<Vec<i128>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I8(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U16(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I16(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U32(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I32(v) => v.iter().map(|&x| x as i128).collect(),
            Array::U64(v) => v.iter().map(|&x| x as i128).collect(),
            Array::I64(v) => v.iter().map(|&x| x as i128).collect(),
            _ => return None,
        })
    }
    /// Float (or integer) elements as f32.
    pub fn as_f32s(&self) -> Option<Vec<f32>> {
        match self {
            Array::F32(v) => Some(v.clone()),
            Array::F64(v) => Some(v.iter().map(|&x| x as f32).collect()),
            other => other.as_ints().map(|v| v.into_iter().map(|x| x as f32).collect()),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "u8",
            Array::I8(_) => "i8",
            Array::U16(_) => "u16",
            Array::I16(_) => "i16",
            Array::U32(_) => "u32",
            Array::I32(_) => "i32",
            Array::F32(_) => "f32",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::U64(_) => "u64",
            Array::I64(_) => "i64",
            Array::F64(_) => "f64",
        }
    }
}

impl Value {
    /// The value as an integer of any integer type.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            Value::U8(x) => x as i128,
            Value::I8(x) => x as i128,
            Value::U16(x) => x as i128,
            Value::I16(x) => x as i128,
            Value::U32(x) => x as i128,
            Value::I32(x) => x as i128,
            Value::U64(x) => x as i128,
            Value::I64(x) => x as i128,
            _ => return None,
        })
    }
    /// The value as f32 (floats, and integers converted).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(x) => Some(x),
            Value::F64(x) => Some(x as f32),
            _ => self.as_int().map(|x| x as f32),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        if let Value::String(s) = self { Some(s) } else { None }
    }
    pub fn as_bool(&self) -> Option<bool> {
        if let Value::Bool(b) = self { Some(*b) } else { None }
    }
    pub fn as_array(&self) -> Option<&Array> {
        if let Value::Array(a) = self { Some(a) } else { None }
    }
    /// The value's type, for error messages ("u32", "array of string", ...).
    pub fn type_name(&self) -> String {
        match self {
            Value::U8(_) => "u8".into(),
            Value::I8(_) => "i8".into(),
            Value::U16(_) => "u16".into(),
            Value::I16(_) => "i16".into(),
            Value::U32(_) => "u32".into(),
            Value::I32(_) => "i32".into(),
            Value::F32(_) => "f32".into(),
            Value::Bool(_) => "bool".into(),
            Value::String(_) => "string".into(),
            Value::Array(a) => format!("array of {}", a.type_name()),
            Value::U64(_) => "u64".into(),
            Value::I64(_) => "i64".into(),
            Value::F64(_) => "f64".into(),
        }
    }
}

/// One tensor's description; `start..end` are absolute byte positions in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the contiguous row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the data section, as stored.
    pub offset: u64,
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    /// The shape in row-major (numpy / Hugging Face) order: dims reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    pub fn numel(&self) -> u64 {
        self.dims.iter().product()
    }
    pub fn size_bytes(&self) -> usize {
        self.end - self.start
    }
}

/// The parsed header of a GGUF file: metadata and tensor infos (the data stays in the file's bytes).
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    /// Keys in file order.
    pub metadata: Vec<(String, Value)>,
    index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Absolute position of the data section.
    pub data_start: usize,
}

/// A little-endian cursor over the file that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let len = self.bytes.len();
        let end = usize::try_from(n).ok().and_then(|n| self.pos.checked_add(n)).filter(|&e| e <= len);
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(GgufError::Truncated { what: what(), offset: self.pos as u64, needed: n, len: len as u64 }),
        }
    }
    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array::<4>(what).map(u32::from_le_bytes)
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array::<8>(what).map(u64::from_le_bytes)
    }
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let n = self.u64(&|| format!("{} (length)", what()))?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { what: what() })
    }
    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }
    /// Fails unless `count` elements of at least `min_size` bytes each can still follow.
    fn check_count(&self, count: u64, min_size: u64, what: &dyn Fn() -> String) -> Result<usize, GgufError> {
        let needed = count.checked_mul(min_size);
        match needed {
            Some(n) if n <= self.remaining() => Ok(count as usize),
            _ => Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                needed: needed.unwrap_or(u64::MAX),
                len: self.bytes.len() as u64,
            }),
        }
    }
}

const TYPE_ARRAY: u32 = 9;
const TYPE_STRING: u32 = 8;

/// Bytes of one scalar of a value type (strings: the length prefix), or None for an unknown id.
fn scalar_size(id: u32) -> Option<u64> {
    Some(match id {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        TYPE_STRING => 8,
        10..=12 => 8,
        _ => return None,
    })
}

fn read_scalar(r: &mut Reader, id: u32, key: &str) -> Result<Value, GgufError> {
    let what = || format!("the value of metadata key {key:?}");
    Ok(match id {
        0 => Value::U8(r.array::<1>(&what)?[0]),
        1 => Value::I8(r.array::<1>(&what)?[0] as i8),
        2 => Value::U16(u16::from_le_bytes(r.array(&what)?)),
        3 => Value::I16(i16::from_le_bytes(r.array(&what)?)),
        4 => Value::U32(u32::from_le_bytes(r.array(&what)?)),
        5 => Value::I32(i32::from_le_bytes(r.array(&what)?)),
        6 => Value::F32(f32::from_le_bytes(r.array(&what)?)),
        7 => match r.array::<1>(&what)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => {
                return Err(GgufError::KeyType {
                    key: key.to_string(),
                    expected: "a bool (0 or 1)",
                    found: format!("byte {b}"),
                });
            }
        },
        TYPE_STRING => Value::String(r.string(&what)?),
        10 => Value::U64(u64::from_le_bytes(r.array(&what)?)),
        11 => Value::I64(i64::from_le_bytes(r.array(&what)?)),
        12 => Value::F64(f64::from_le_bytes(r.array(&what)?)),
        _ => return Err(GgufError::BadValueType { key: key.to_string(), id }),
    })
}

fn read_array(r: &mut Reader, key: &str) -> Result<Array, GgufError> {
    let what = || format!("the array of metadata key {key:?}");
    let elem = r.u32(&what)?;
    let count = r.u64(&what)?;
    if elem == TYPE_ARRAY {
        return Err(GgufError::NestedArray { key: key.to_string() });
    }
    let size = scalar_size(elem).ok_or_else(|| GgufError::BadValueType { key: key.to_string(), id: elem })?;
    let n = r.check_count(count, size, &what)?;
    macro_rules! packed {
        ($variant:ident, $t:ty) => {{
            let bytes = r.take(n as u64 * size, &what)?;
            Array::$variant(
                bytes.chunks_exact(size as usize).map(|c| <$t>::from_le_bytes(c.try_into().unwrap())).collect(),
            )
        }};
    }
    Ok(match elem {
        0 => Array::U8(r.take(n as u64, &what)?.to_vec()),
        1 => Array::I8(r.take(n as u64, &what)?.iter().map(|&b| b as i8).collect()),
        2 => packed!(U16, u16),
        3 => packed!(I16, i16),
        4 => packed!(U32, u32),
        5 => packed!(I32, i32),
        6 => packed!(F32, f32),
        7 => {
            let bytes = r.take(n as u64, &what)?;
            let mut v = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                match b {
                    0 | 1 => v.push(b == 1),
                    _ => {
                        return Err(GgufError::KeyType {
                            key: format!("{key}[{i}]"),
                            expected: "a bool (0 or 1)",
                            found: format!("byte {b}"),
                        });
                    }
                }
            }
            Array::Bool(v)
        }
        TYPE_STRING => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(r.string(&|| format!("element {i} of metadata key {key:?}"))?);
            }
            Array::String(v)
        }
        10 => packed!(U64, u64),
        11 => packed!(I64, i64),
        12 => packed!(F64, f64),
        _ => return Err(GgufError::BadValueType { key: key.to_string(), id: elem }),
    })
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

impl Header {
    /// Parses and validates a whole GGUF file held in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
        let mut r = Reader { bytes, pos: 0 };
        let magic = r.array::<4>(&|| "the magic".to_string())?;
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32(&|| "the version".to_string())?;
        if version != 2 && version != 3 {
            let hint = if version & 0xFFFF == 0 { " (this looks like a big-endian file)" } else { "" };
            return Err(GgufError::BadVersion { found: version, hint });
        }
        let n_tensors = r.u64(&|| "the tensor count".to_string())?;
        let n_kv = r.u64(&|| "the metadata count".to_string())?;
        // A key/value pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor info at least 8 + 4 + 4 + 8.
        let n_kv = r.check_count(n_kv, 13, &|| format!("{n_kv} metadata entries"))?;
        let n_tensors_usize = r.check_count(n_tensors, 24, &|| format!("{n_tensors} tensor infos"))?;

        let mut metadata = Vec::with_capacity(n_kv);
        let mut index = HashMap::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = r.string(&|| format!("metadata key #{i}"))?;
            if key.is_empty() {
                return Err(GgufError::EmptyKey { index: i as u64 });
            }
            if index.contains_key(&key) {
                return Err(GgufError::DuplicateKey { key });
            }
            let ty = r.u32(&|| format!("the type of metadata key {key:?}"))?;
            let value =
                if ty == TYPE_ARRAY { Value::Array(read_array(&mut r, &key)?) } else { read_scalar(&mut r, ty, &key)? };
            index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) => *a as u64,
            Some(other) => {
                return Err(GgufError::KeyType {
                    key: "general.alignment".into(),
                    expected: "u32",
                    found: other.type_name(),
                });
            }
        };
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::BadAlignment { value: alignment });
        }

        struct Raw {
            name: String,
            dims: Vec<u64>,
            ty: GgmlType,
            offset: u64,
            nbytes: u64,
        }
        let mut raws = Vec::with_capacity(n_tensors_usize);
        let mut tensor_index = HashMap::with_capacity(n_tensors_usize);
        for i in 0..n_tensors_usize {
            let name = r.string(&|| format!("the name of tensor #{i}"))?;
            if name.is_empty() || name.len() >= MAX_NAME_LEN {
                return Err(GgufError::TensorName {
                    index: i as u64,
                    name,
                    reason: format!("names must be 1 to {} bytes long", MAX_NAME_LEN - 1),
                });
            }
            if tensor_index.contains_key(&name) {
                return Err(GgufError::DuplicateTensor { name });
            }
            let what = || format!("the info of tensor {name:?}");
            let n_dims = r.u32(&what)?;
            if n_dims as usize > MAX_DIMS {
                return Err(GgufError::TooManyDims { name, n_dims });
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(r.u64(&what)?);
            }
            let type_id = r.u32(&what)?;
            let offset = r.u64(&what)?;
            let ty =
                GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownType { name: name.clone(), id: type_id })?;
            // ggml keeps sizes in int64: every dim and the element count must fit.
            let overflow = || GgufError::SizeOverflow { name: name.clone(), dims: dims.clone() };
            let numel = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).ok_or_else(overflow)?;
            if numel > i64::MAX as u64 || dims.iter().any(|&d| d > i64::MAX as u64) {
                return Err(overflow());
            }
            let row = dims.first().copied().unwrap_or(1);
            let block = ty.block_elems();
            if row % block != 0 {
                return Err(GgufError::RowNotBlocks { name, ty, row, block });
            }
            let nbytes = (numel / block).checked_mul(ty.block_bytes()).ok_or_else(overflow)?;
            tensor_index.insert(name.clone(), raws.len());
            raws.push(Raw { name, dims, ty, offset, nbytes });
        }

        // llama.cpp pads to the alignment only when there are tensors.
        let infos_end = r.pos as u64;
        let data_start = if raws.is_empty() {
            infos_end
        } else {
            align_up(infos_end, alignment).ok_or(GgufError::Truncated {
                what: "the data section".into(),
                offset: infos_end,
                needed: alignment,
                len: bytes.len() as u64,
            })?
        };
        let len = bytes.len() as u64;
        let mut expected = 0u64;
        let mut tensors = Vec::with_capacity(raws.len());
        for raw in raws {
            let Raw { name, dims, ty, offset, nbytes } = raw;
            if offset != expected {
                return Err(if offset < expected {
                    GgufError::TensorOverlap { name, expected, found: offset }
                } else {
                    GgufError::TensorOffset { name, expected, found: offset }
                });
            }
            let start = data_start.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(nbytes));
            let (start, end) = match (start, end) {
                (Some(s), Some(e)) if e <= len => (s as usize, e as usize),
                _ => return Err(GgufError::TensorOutOfRange { name, end: end.unwrap_or(u64::MAX), len }),
            };
            expected = align_up(offset + nbytes, alignment).ok_or_else(|| GgufError::TensorOutOfRange {
                name: name.clone(),
                end: u64::MAX,
                len,
            })?;
            tensors.push(TensorInfo { name, dims, ty, offset, start, end });
        }
        if data_start > len {
            return Err(GgufError::Truncated {
                what: "the padding before the data section".into(),
                offset: infos_end,
                needed: data_start - infos_end,
                len,
            });
        }
        Ok(Header { version, alignment, metadata, index, tensors, tensor_index, data_start: data_start as usize })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    fn key_type(key: &str, expected: &'static str, v: &Value) -> GgufError {
        GgufError::KeyType { key: key.to_string(), expected, found: v.type_name() }
    }

    /// A string value, if present.
    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| Self::key_type(key, "a string", v)),
        }
    }

    pub fn require_str(&self, key: &str) -> Result<&str, GgufError> {
        self.get_str(key)?.ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    /// A non-negative integer of any integer type, if present. A per-layer array whose entries are all
    /// equal reads as that entry.
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let n = match v {
            Value::Array(a) => match a.as_ints().as_deref() {
                Some([first, rest @ ..]) if rest.iter().all(|x| x == first) => Some(*first),
                _ => return Err(Self::key_type(key, "an integer (or equal per-layer integers)", v)),
            },
            _ => v.as_int(),
        };
        match n.map(usize::try_from) {
            Some(Ok(n)) => Ok(Some(n)),
            _ => Err(Self::key_type(key, "a non-negative integer", v)),
        }
    }

    pub fn require_usize(&self, key: &str) -> Result<usize, GgufError> {
        self.get_usize(key)?.ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    /// A number (float or integer) as f32, if present.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f32().map(Some).ok_or_else(|| Self::key_type(key, "a number", v)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_bool().map(Some).ok_or_else(|| Self::key_type(key, "a bool", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_array().map(Some).ok_or_else(|| Self::key_type(key, "an array", v)),
        }
    }
}

enum Bytes {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

/// A GGUF file: its parsed header and its bytes (memory-mapped).
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Header,
    bytes: Bytes,
}

/// An error opening a GGUF file: I/O or the format.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Format(GgufError),
}

impl GgufFile {
    /// Maps and parses `path`.
    pub fn open(path: &Path) -> Result<GgufFile, OpenError> {
        let file = std::fs::File::open(path).map_err(OpenError::Io)?;
        // SAFETY: the file is opened read-only; torchless never writes it, and a model file changed by
        // another process while mapped is outside what we can guard against.
        let mmap = unsafe { Mmap::map(&file) }.map_err(OpenError::Io)?;
        let header = Header::parse(&mmap).map_err(OpenError::Format)?;
        Ok(GgufFile { path: path.to_path_buf(), header, bytes: Bytes::Mapped(mmap) })
    }

    /// Parses a file held in memory (tests, fuzzing).
    pub fn from_bytes(path: impl Into<PathBuf>, bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        let header = Header::parse(&bytes)?;
        Ok(GgufFile { path: path.into(), header, bytes: Bytes::Owned(bytes) })
    }

    fn all_bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }

    /// The raw bytes of a tensor (its `start..end` were checked against the file at parse time).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        self.all_bytes().get(info.start..info.end).unwrap_or(&[])
    }

    /// Total bytes of tensor data.
    pub fn total_tensor_bytes(&self) -> u64 {
        self.header.tensors.iter().map(|t| t.size_bytes() as u64).sum()
    }
}

/// A minimal GGUF writer for tests and fuzz seeds: metadata and tensors with their raw bytes, laid out
/// exactly as gguf-py writes them.
#[doc(hidden)]
pub mod writer {
    use super::{Array, DEFAULT_ALIGNMENT, GgmlType, Value};

    pub struct Writer {
        pub version: u32,
        pub alignment: u64,
        pub metadata: Vec<(String, Value)>,
        /// (name, ggml dims, type, bytes)
        pub tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    }

    impl Default for Writer {
        fn default() -> Self {
            Writer { version: 3, alignment: DEFAULT_ALIGNMENT, metadata: Vec::new(), tensors: Vec::new() }
        }
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Bool(x) => out.push(*x as u8),
            Value::String(s) => put_str(out, s),
            Value::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
            Value::Array(a) => {
                macro_rules! arr {
                    ($id:expr, $v:expr, $var:ident) => {{
                        out.extend_from_slice(&($id as u32).to_le_bytes());
                        out.extend_from_slice(&($v.len() as u64).to_le_bytes());
                        for x in $v {
                            put_value(out, &Value::$var(x.clone()));
                        }
                    }};
                }
                match a {
                    Array::U8(v) => arr!(0, v, U8),
                    Array::I8(v) => arr!(1, v, I8),
                    Array::U16(v) => arr!(2, v, U16),
                    Array::I16(v) => arr!(3, v, I16),
                    Array::U32(v) => arr!(4, v, U32),
                    Array::I32(v) => arr!(5, v, I32),
                    Array::F32(v) => arr!(6, v, F32),
                    Array::Bool(v) => arr!(7, v, Bool),
                    Array::String(v) => arr!(8, v, String),
                    Array::U64(v) => arr!(10, v, U64),
                    Array::I64(v) => arr!(11, v, I64),
                    Array::F64(v) => arr!(12, v, F64),
                }
            }
        }
    }

    impl Writer {
        pub fn kv(mut self, key: &str, v: Value) -> Self {
            self.metadata.push((key.to_string(), v));
            self
        }

        pub fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, bytes: Vec<u8>) -> Self {
            self.tensors.push((name.to_string(), dims.to_vec(), ty, bytes));
            self
        }

        /// An f32 tensor from values, dims innermost-first.
        pub fn f32_tensor(self, name: &str, dims: &[u64], values: &[f32]) -> Self {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            self.tensor(name, dims, GgmlType::F32, bytes)
        }

        pub fn to_bytes(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(b"GGUF");
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
            for (k, v) in &self.metadata {
                put_str(&mut out, k);
                out.extend_from_slice(&type_id(v).to_le_bytes());
                put_value(&mut out, v);
            }
            let align = self.alignment.max(1) as usize;
            let pad = |n: usize| n.div_ceil(align) * align;
            let mut offset = 0usize;
            for (name, dims, ty, bytes) in &self.tensors {
                put_str(&mut out, name);
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&ty.id().to_le_bytes());
                out.extend_from_slice(&(offset as u64).to_le_bytes());
                offset += pad(bytes.len());
            }
            if !self.tensors.is_empty() {
                out.resize(pad(out.len()), 0);
            }
            for (_, _, _, bytes) in &self.tensors {
                out.extend_from_slice(bytes);
                out.resize(pad(out.len()), 0);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::writer::Writer;
    use super::*;

    fn sample() -> Writer {
        Writer { alignment: 64, ..Writer::default() }
            .kv("general.architecture", Value::String("llama".into()))
            .kv("general.alignment", Value::U32(64))
            .kv("a.u8", Value::U8(7))
            .kv("a.i8", Value::I8(-7))
            .kv("a.u16", Value::U16(700))
            .kv("a.i16", Value::I16(-700))
            .kv("a.u32", Value::U32(70000))
            .kv("a.i32", Value::I32(-70000))
            .kv("a.f32", Value::F32(1.5))
            .kv("a.bool", Value::Bool(true))
            .kv("a.u64", Value::U64(1 << 40))
            .kv("a.i64", Value::I64(-(1 << 40)))
            .kv("a.f64", Value::F64(2.25))
            .kv("a.strs", Value::Array(Array::String(vec!["x".into(), "yz".into(), "".into()])))
            .kv("a.ints", Value::Array(Array::I32(vec![3, 3, 3])))
            .kv("a.f32s", Value::Array(Array::F32(vec![0.5, -1.0])))
            .kv("a.empty", Value::Array(Array::U8(vec![])))
            .f32_tensor("w", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .tensor("q", &[64, 2], GgmlType::Q8_0, vec![0xAB; 2 * 2 * 34])
            .f32_tensor("n", &[5], &[0.0; 5])
    }

    #[test]
    fn reads_every_value_type_and_tensor() {
        let w = sample();
        let bytes = w.to_bytes();
        let f = GgufFile::from_bytes("sample.gguf", bytes).unwrap();
        let h = &f.header;
        assert_eq!((h.version, h.alignment), (3, 64));
        for (k, v) in &w.metadata {
            assert_eq!(h.get(k), Some(v), "{k}");
        }
        assert_eq!(h.get_usize("a.u16").unwrap(), Some(700));
        assert_eq!(h.get_usize("a.u64").unwrap(), Some(1 << 40));
        assert_eq!(h.get_usize("a.ints").unwrap(), Some(3));
        assert!(h.get_usize("a.i8").unwrap_err().to_string().contains("a.i8"));
        assert!(h.get_usize("a.strs").is_err());
        assert_eq!(h.get_f32("a.f64").unwrap(), Some(2.25));
        assert_eq!(h.get_f32("a.u8").unwrap(), Some(7.0));
        assert_eq!(h.get_str("general.architecture").unwrap(), Some("llama"));
        assert!(h.get_str("a.u8").is_err());
        assert_eq!(h.require_usize("nope").unwrap_err(), GgufError::MissingKey { key: "nope".into() });

        assert_eq!(h.tensors.len(), 3);
        let t = h.tensor("w").unwrap();
        assert_eq!((t.shape(), t.ty, t.offset), (vec![2, 3], GgmlType::F32, 0));
        assert_eq!(f.tensor_bytes(t), &[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0].map(f32::to_le_bytes).concat()[..]);
        let q = h.tensor("q").unwrap();
        assert_eq!((q.offset, q.size_bytes()), (64, 136));
        assert!(f.tensor_bytes(q).iter().all(|&b| b == 0xAB));
        assert_eq!(h.tensor("n").unwrap().offset, 256);
        assert_eq!(h.data_start % 64, 0);
    }

    #[test]
    fn an_empty_file_of_metadata_only_is_fine() {
        let bytes = Writer::default().kv("k", Value::Bool(false)).to_bytes();
        let h = Header::parse(&bytes).unwrap();
        assert!(h.tensors.is_empty());
        assert_eq!(h.data_start, bytes.len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = sample().to_bytes();
        // The last tensor's padding may be cut off; its data may not.
        let need = {
            let h = Header::parse(&bytes).unwrap();
            h.tensors.iter().map(|t| t.end).max().unwrap()
        };
        for n in 0..need {
            match Header::parse(&bytes[..n]) {
                Err(GgufError::Truncated { .. }) | Err(GgufError::TensorOutOfRange { .. }) => {}
                other => panic!("cut at {n}: {other:?}"),
            }
        }
        assert!(Header::parse(&bytes[..need]).is_ok());
    }

    fn err(w: &Writer) -> GgufError {
        Header::parse(&w.to_bytes()).unwrap_err()
    }

    #[test]
    fn bad_magic_and_version() {
        let mut bytes = sample().to_bytes();
        bytes[0] = b'X';
        assert!(matches!(Header::parse(&bytes), Err(GgufError::BadMagic { .. })));
        for v in [1u32, 4, 3 << 24] {
            let w = Writer { version: v, ..sample() };
            let e = err(&w);
            assert!(matches!(e, GgufError::BadVersion { found, .. } if found == v), "{e}");
            if v == 3 << 24 {
                assert!(e.to_string().contains("big-endian"));
            }
        }
        assert!(Header::parse(&Writer { version: 2, ..sample() }.to_bytes()).is_ok());
    }

    #[test]
    fn bad_metadata() {
        let e = err(&sample().kv("a.u8", Value::U8(1)));
        assert_eq!(e, GgufError::DuplicateKey { key: "a.u8".into() });
        assert!(matches!(err(&sample().kv("", Value::U8(1))), GgufError::EmptyKey { .. }));
        let e = err(&Writer::default().kv("general.alignment", Value::U64(32)));
        assert!(matches!(e, GgufError::KeyType { ref key, .. } if key == "general.alignment"), "{e}");
        let e = err(&Writer::default().kv("general.alignment", Value::U32(48)));
        assert_eq!(e, GgufError::BadAlignment { value: 48 });
        let e = err(&Writer::default().kv("general.alignment", Value::U32(0)));
        assert_eq!(e, GgufError::BadAlignment { value: 0 });

        // Unknown value type, nested array, bad bool, bad UTF-8: patch the bytes of a one-key file.
        let one = |v: Value| Writer::default().kv("key", v).to_bytes();
        let type_at = 4 + 4 + 8 + 8 + 8 + 3;
        let mut b = one(Value::U32(5));
        b[type_at] = 13;
        assert_eq!(Header::parse(&b).unwrap_err(), GgufError::BadValueType { key: "key".into(), id: 13 });
        let mut b = one(Value::Array(Array::U32(vec![1])));
        b[type_at + 4] = 9;
        assert_eq!(Header::parse(&b).unwrap_err(), GgufError::NestedArray { key: "key".into() });
        let mut b = one(Value::Array(Array::U32(vec![1])));
        b[type_at + 4] = 99;
        assert_eq!(Header::parse(&b).unwrap_err(), GgufError::BadValueType { key: "key".into(), id: 99 });
        let mut b = one(Value::Bool(true));
        b[type_at + 4] = 2;
        assert!(matches!(Header::parse(&b).unwrap_err(), GgufError::KeyType { .. }));
        let mut b = one(Value::String("ab".into()));
        b[type_at + 4 + 8] = 0xFF;
        assert!(matches!(Header::parse(&b).unwrap_err(), GgufError::InvalidUtf8 { ref what } if what.contains("key")));
        // A huge array count is caught before anything is reserved.
        let mut b = one(Value::Array(Array::U64(vec![1])));
        b[type_at + 8..type_at + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(matches!(Header::parse(&b).unwrap_err(), GgufError::Truncated { .. }));
    }

    #[test]
    fn bad_tensor_infos() {
        let base = || Writer::default().f32_tensor("a", &[4], &[0.0; 4]);
        let e = err(&base().f32_tensor("a", &[4], &[0.0; 4]));
        assert_eq!(e, GgufError::DuplicateTensor { name: "a".into() });
        let e = err(&base().f32_tensor(&"x".repeat(64), &[1], &[0.0]));
        assert!(matches!(e, GgufError::TensorName { .. }), "{e}");
        let e = err(&base().tensor("q", &[48, 2], GgmlType::Q8_0, vec![0; 102]));
        assert!(matches!(e, GgufError::RowNotBlocks { ref name, row: 48, block: 32, .. } if name == "q"), "{e}");
        let e = err(&base().tensor("big", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]));
        assert!(matches!(e, GgufError::TooManyDims { n_dims: 5, .. }), "{e}");
        let e = err(&base().tensor("huge", &[u64::MAX / 2, 4], GgmlType::F32, vec![]));
        assert!(matches!(e, GgufError::SizeOverflow { ref name, .. } if name == "huge"), "{e}");
        let e = err(&base().tensor("huge", &[1 << 60], GgmlType::F32, vec![]));
        assert!(matches!(e, GgufError::TensorOutOfRange { ref name, .. } if name == "huge"), "{e}");

        // Unknown type id and bad offsets: patch the second tensor's info.
        let w = base().f32_tensor("b", &[4], &[0.0; 4]);
        let bytes = w.to_bytes();
        let info_b = bytes.windows(9).position(|s| s == b"\x01\0\0\0\0\0\0\0b").unwrap() + 9;
        let (ty_at, off_at) = (info_b + 4 + 8, info_b + 4 + 8 + 4);
        let mut b = bytes.clone();
        b[ty_at] = 4;
        assert_eq!(Header::parse(&b).unwrap_err(), GgufError::UnknownType { name: "b".into(), id: 4 });
        let mut b = bytes.clone();
        b[off_at] = 0;
        assert_eq!(
            Header::parse(&b).unwrap_err(),
            GgufError::TensorOverlap { name: "b".into(), expected: 32, found: 0 }
        );
        let mut b = bytes.clone();
        b[off_at] = 64;
        assert_eq!(
            Header::parse(&b).unwrap_err(),
            GgufError::TensorOffset { name: "b".into(), expected: 32, found: 64 }
        );
        let mut b = bytes.clone();
        b[off_at] = 36;
        assert!(matches!(Header::parse(&b).unwrap_err(), GgufError::TensorOffset { .. }));
    }

    /// Random mutations of valid files (bit flips, byte overwrites with boundary values, cuts, splices)
    /// must give an error or a header whose tensors lie inside the file: never a panic. A stable-Rust
    /// stand-in for the `gguf_reader` cargo-fuzz target, run on every `cargo test`.
    #[test]
    fn mutated_files_never_panic() {
        let seeds = [sample().to_bytes(), Writer::default().kv("k", Value::Bool(false)).to_bytes()];
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let start = std::time::Instant::now();
        let mut n = 0;
        while n < 200_000 && start.elapsed().as_secs_f64() < 3.0 {
            let mut b = seeds[(next() % 2) as usize].clone();
            for _ in 0..1 + next() % 4 {
                if b.is_empty() {
                    break;
                }
                let at = (next() % b.len() as u64) as usize;
                match next() % 5 {
                    0 => b[at] ^= 1 << (next() % 8),
                    1 => b[at] = [0u8, 1, 0x7F, 0x80, 0xFF][(next() % 5) as usize],
                    2 => b.truncate(at),
                    3 => {
                        let end = (at + 8).min(b.len());
                        let v = [0u64, 1, 63, 64, u32::MAX as u64, i64::MAX as u64, u64::MAX][(next() % 7) as usize];
                        b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                    }
                    _ => {
                        let len = (next() % 16) as usize;
                        let chunk: Vec<u8> = b[at..(at + len).min(b.len())].to_vec();
                        let to = (next() % b.len() as u64) as usize;
                        b.splice(to..to, chunk);
                    }
                }
            }
            if let Ok(h) = Header::parse(&b) {
                for t in &h.tensors {
                    assert!(t.start <= t.end && t.end <= b.len());
                }
            }
            n += 1;
        }
        assert!(n > 100, "only {n} mutations ran");
    }
}
