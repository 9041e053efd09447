//! Backward of the embedding lookups: each row's gradient is added to the table row it was read
//! from. A token that occurs twice gets both gradients, and a table read twice (token embeddings
//! and a tied LM head) accumulates into one gradient buffer, as the module's convention says.

/// `d_table[ids[r]] += dy[r]` for every row `r`, except rows whose id is `padding_idx`: PyTorch's
/// `nn.Embedding(padding_idx=…)` never updates that row (BERT's word embeddings use 0). `d_table`
/// is `[vocab, D]` row-major. Ids were checked against the vocabulary by the forward; an id past
/// the table here is a caller bug and panics.
pub fn embedding_backward<const D: usize>(
    ids: &[u32],
    dy: &[[f32; D]],
    d_table: &mut [f32],
    padding_idx: Option<u32>,
) {
    assert_eq!(ids.len(), dy.len(), "embedding backward: {} ids but {} gradient rows", ids.len(), dy.len());
    assert!(d_table.len().is_multiple_of(D.max(1)), "embedding backward: table gradient is not [vocab, {D}]");
    let vocab = d_table.len() / D.max(1);
    for (&id, g) in ids.iter().zip(dy) {
        if Some(id) == padding_idx {
            continue;
        }
        assert!((id as usize) < vocab, "embedding backward: id {id} outside a table of {vocab} rows");
        add(&mut d_table[id as usize * D..][..D], g);
    }
}

/// `d_table[first + r mod seq] += dy[r]`: the gradient of learned absolute positions for a batch
/// of sequences of `seq` rows each, all starting at position `first`. Panics if a position falls
/// outside the table or `dy` is not whole sequences.
pub fn position_embedding_backward<const D: usize>(
    seq: usize,
    first: usize,
    dy: &[[f32; D]],
    d_table: &mut [f32],
) {
    assert!(
        seq > 0 && dy.len().is_multiple_of(seq),
        "position embedding backward: {} rows are not sequences of {seq}",
        dy.len()
    );
    let positions = d_table.len() / D.max(1);
    assert!(
        first + seq <= positions,
        "position embedding backward: positions {first}..{} outside a table of {positions}",
        first + seq
    );
    for sequence in dy.chunks_exact(seq) {
        for (p, g) in sequence.iter().enumerate() {
            add(&mut d_table[(first + p) * D..][..D], g);
        }
    }
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
