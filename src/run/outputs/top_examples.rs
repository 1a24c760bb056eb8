//! Decoded context windows around each feature's top activating rows, for people reading
//! features: `top_examples.jsonl`, one line per feature that fired.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::json;
use tokenizers::Tokenizer;

use crate::analysis::hist::Histograms;
use crate::data::Shard;
use crate::io::temp_path;

pub fn load_tokenizer(path: &Path) -> anyhow::Result<Tokenizer> {
    Tokenizer::from_file(path)
        .map_err(|e| anyhow!("{}: not a usable tokenizer.json: {e}", path.display()))
}

/// Writes `dir/top_examples.jsonl`: for every feature that fired, its top rows with the
/// activating token and `context` tokens either side (within the same shard), decoded, the
/// activating token marked «like this».
pub fn write_top_examples(
    dir: &Path,
    hist: &Histograms,
    tensor: &str,
    tokenizer: &Tokenizer,
    context: usize,
) -> anyhow::Result<()> {
    let vocab = tokenizer.get_vocab_size(true);
    let mut shards: HashMap<usize, Shard> = HashMap::new();
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let path = dir.join("top_examples.jsonl");
    let tmp = temp_path(&path);
    let mut out = BufWriter::new(
        File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?,
    );
    let decode = |ids: &[u32]| -> anyhow::Result<String> {
        tokenizer
            .decode(ids, false)
            .map_err(|e| anyhow!("decoding token ids {ids:?}: {e}"))
    };
    for feature in 0..hist.d_sae {
        if hist.fire_count[feature] == 0 {
            continue;
        }
        let mut examples = Vec::new();
        for slot in feature * hist.top_m..(feature + 1) * hist.top_m {
            if hist.top_shards[slot] < 0 {
                break;
            }
            let shard_index = hist.top_shards[slot] as usize;
            let entry = hist
                .shards
                .get(shard_index)
                .ok_or_else(|| anyhow!("shard index {shard_index} out of range"))?;
            let shard = match shards.entry(shard_index) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(Shard::open(Path::new(&entry.path), tensor)?)
                }
            };
            if !shard.has_tokens() {
                bail!("{}: has no 'tokens' tensor to decode", entry.path);
            }
            let row = hist.top_rows[slot] as usize;
            let token_of = |r: usize| -> anyhow::Result<u32> {
                let id = shard.token(r).unwrap_or(-1);
                if id < 0 || id as usize >= vocab {
                    bail!("{}: token id {id} at row {r} is outside the tokenizer's vocabulary of {vocab}", entry.path);
                }
                Ok(id as u32)
            };
            let start = row.saturating_sub(context);
            let end = (row + context + 1).min(shard.rows);
            let before: Vec<u32> = (start..row).map(token_of).collect::<anyhow::Result<_>>()?;
            let after: Vec<u32> = (row + 1..end)
                .map(token_of)
                .collect::<anyhow::Result<_>>()?;
            let token = token_of(row)?;
            let token_text = decode(&[token])?;
            examples.push(json!({
                "value": hist.top_values[slot],
                "shard": shard_index,
                "row": row,
                "token": token,
                "token_text": token_text,
                "context": format!("{}«{}»{}", decode(&before)?, token_text, decode(&after)?),
            }));
        }
        let line = json!({"feature": feature, "fire_count": hist.fire_count[feature], "examples": examples});
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    drop(out);
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("{}: cannot move into place", path.display()))
}
