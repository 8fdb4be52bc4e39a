//! Fuzzes the GGUF reader: any bytes give a parsed header or a typed error, never a panic, and a parsed
//! header's tensors lie inside the input. Also drives the config and tokenizer builders over whatever
//! metadata parses. Run: `cd crates/torchless/fuzz && cargo +nightly fuzz run gguf_reader corpus/gguf_reader`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use torchless::gguf::{GgufFile, Header};

fuzz_target!(|data: &[u8]| {
    let Ok(header) = Header::parse(data) else { return };
    for t in &header.tensors {
        assert!(t.start <= t.end && t.end <= data.len());
    }
    let _ = header.get_usize("llama.block_count");
    let file = GgufFile::from_bytes("fuzz.gguf", data.to_vec()).expect("parses twice");
    if let Ok(config) = torchless::config::Config::from_gguf(&file) {
        // Small vocabularies only: building a tokenizer from a huge one is slow, not wrong.
        if header.get_array("tokenizer.ggml.tokens").ok().flatten().is_some_and(|a| a.len() < 4096) {
            let _ = torchless::tokenizer::Tokenizer::from_gguf(&file, &config);
        }
    }
});
