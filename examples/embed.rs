//! Sentence embeddings with all-MiniLM-L6-v2, and their cosine similarity matrix.
//!
//! ```text
//! bash scripts/fetch-model.sh
//! cargo run --release --example embed -- "A cat sits on the mat." "A kitten rests on a rug." "Stocks fell sharply."
//! ```

use std::error::Error;

use transformer::Threads;

#[path = "common/minilm.rs"]
mod minilm;

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let sentences: Vec<String> = std::env::args().skip(1).collect();
    if sentences.is_empty() {
        return Err("usage: embed \"first sentence\" \"second sentence\" …".into());
    }
    let tokenizer = minilm::tokenizer()?;
    let dir = minilm::model_dir();
    let model =
        minilm::MiniLm::from_safetensors(dir.join("model.safetensors"))?.with_threads(Threads::all_cores()?);
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    // Each row is a [f32; 384]: the width is part of the type.
    let embeddings: Vec<[f32; 384]> = model.embed_texts(&tokenizer, &texts)?;

    println!("cosine similarity (embeddings are L2-normalised, so this is a dot product):\n");
    for (i, a) in embeddings.iter().enumerate() {
        let row: Vec<String> = embeddings.iter().map(|b| format!("{:6.3}", dot(a, b))).collect();
        println!("{}  [{i}] {}", row.join(" "), sentences[i]);
    }
    Ok(())
}

fn dot(a: &[f32; 384], b: &[f32; 384]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
