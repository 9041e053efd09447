//! Backward of the embedding lookups: each row's gradient is added to the table row it was read
//! from. A token that occurs twice gets both gradients, and a table read twice (token embeddings
//! and a tied LM head) accumulates into one gradient buffer, as the module's convention says.

/// The gradient of a table lookup `x[row] (+)= table[index(row)]`: `d_table[i] += dy[row]` for
/// every row whose `index(row)` is `Some(i)` (rows that share an index accumulate; `None` rows
/// contribute nothing). `d_table` is `[rows, D]` row-major. Panics when an index is past the table
/// (the forward read the same indices after the batch was validated).
pub fn gather_backward<const D: usize>(
    dy: &[[f32; D]],
    d_table: &mut [f32],
    index: impl Fn(usize) -> Option<usize>,
) {
    assert!(d_table.len().is_multiple_of(D.max(1)), "gather backward: table gradient is not [rows, {D}]");
    let rows = d_table.len() / D.max(1);
    for (row, g) in dy.iter().enumerate() {
        let Some(i) = index(row) else { continue };
        assert!(i < rows, "gather backward: index {i} of row {row} is past the table's {rows} rows");
        add(&mut d_table[i * D..][..D], g);
    }
}

/// The forward it differentiates: `out[row] += table[index(row)]` for every row (a lookup added
/// to the stream). Panics when an index is past the table.
pub fn add_rows<const D: usize>(table: &[f32], out: &mut [[f32; D]], index: impl Fn(usize) -> usize) {
    let rows = table.len() / D.max(1);
    for (row, x) in out.iter_mut().enumerate() {
        let i = index(row);
        assert!(i < rows, "gather: index {i} of row {row} is past the table's {rows} rows");
        add(x, &table[i * D..][..D]);
    }
}

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
    gather_backward(dy, d_table, |r| (Some(ids[r]) != padding_idx).then_some(ids[r] as usize));
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
    gather_backward(dy, d_table, |r| Some(first + r % seq));
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += s;
    }
}
