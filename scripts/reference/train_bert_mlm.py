#!/usr/bin/env python3
"""Write tests/fixtures/train/bert_mlm_step/: a random-weight BertForMaskedLM with odd dims, one
masked-LM training step of it, then STEPS AdamW steps, as transformers computes them, for a Rust
test written like transformer-runtime/tests/train_gpt2.rs.

    model/             config.json + model.safetensors: BertForMaskedLM.save_pretrained of the
                       seeded model (vocab 317, hidden 48, 3 heads of 16, 2 layers, intermediate
                       112, 64 positions, 2 token types, gelu (erf), LayerNorm eps 1e-12, every
                       dropout 0, no pooler). The head's decoder is tied: the file holds no
                       cls.predictions.decoder.weight (it is bert.embeddings.word_embeddings.weight)
                       and no cls.predictions.decoder.bias (it is cls.predictions.bias)
                       (config.json has no tie_word_embeddings key: true is BertConfig's
                       default, and save_pretrained writes only non-default values)
    reference.json     the batch: `ids` (after masking), `original_ids`, `attention_mask` (the
                       second sequence right-padded), `token_type_ids` (a sentence pair in the
                       first sequence), `labels` (the original id at each masked position, -100
                       elsewhere), `masked` ([sequence, position, rule] for each masked
                       position, rule one of "mask" / "random" / "keep"); the MLM loss of
                       BertForMaskedLM(input_ids, attention_mask, token_type_ids, labels) (mean
                       over the masked positions); the losses of STEPS steps on that batch, each
                       taken before its step (losses[0] == loss), with the total gradient norm
                       before clipping (clip_grad_norm_(MAX_NORM), then torch.optim.AdamW with
                       BETAS, EPS, LR, weight decay WEIGHT_DECAY on the 2-D weights (matrices and
                       the three embeddings) and 0 on biases and LayerNorm weights: the names of
                       each group are listed under `decay` and `no_decay`); every
                       hyper-parameter; `final_loss`, the loss of the weights in after.safetensors
    grads.safetensors  the gradient of every parameter after the first backward, under its
                       checkpoint name: the same names as model/model.safetensors. The tied
                       decoder's gradient is not a tensor of its own: it is summed into
                       bert.embeddings.word_embeddings.weight (embedding lookup + output
                       projection), and the decoder bias's is cls.predictions.bias
    after.safetensors  every parameter after the STEPS steps, under the same names

Conventions a Rust trainer must share. Positions are absolute, 0..SEQ-1 in both sequences;
padded keys get finfo.min added to their scores, padded queries are computed but carry no label,
so nothing at a padded position receives a gradient. The word embedding has padding_idx =
pad_token_id = 0 (HF's init zeroes that row, and nn.Embedding never sends the lookup's gradient
to it): in this batch id 0 only stands at padded positions, whose gradient is zero anyway, so row
0 of word_embeddings' gradient is the decoder's contribution alone either way (max|g| 3.5e-3).
The key bias's gradient is zero in exact arithmetic (it adds q·b_k to every score of a query row,
which softmax ignores): bert.encoder.layer.*.attention.self.key.bias holds f32 rounding noise
(max|g| ~3e-8 against ~5e-17 in float64), so a test must compare it in absolute terms (or to
another tensor's scale) and leave it out of the after-weights check: Adam turns the noise into
±lr steps (after 10 steps it is 8.6e-4 away from a float64 run).

Initialisation: BertForMaskedLM(config) after torch.manual_seed(SEED) (normal(0,
initializer_range=0.2) matrices and embeddings), then, so that no parameter sits at a value that
hides a wrong backward, every bias drawn from N(0, 0.1) and every LayerNorm weight 1 + N(0, 0.1).

Masking (BERT's rule, done here rather than by a collator, from a generator seeded MASK_SEED):
N_MASKED[b] word positions of sequence b (never [CLS], [SEP] or padding) are picked by randperm;
each is replaced by [MASK] with probability 0.8, by a random word id from [FIRST_WORD, vocab) with
probability 0.1, and left as it is otherwise. MASK_SEED is one where all three cases occur.

Tolerances a Rust test should use: the loss within 1e-5 relative; each gradient's max|Δ| at most
1e-4 of that tensor's max|g| (key.bias aside, above); the STEPS losses and grad norms within 1e-4
relative, and the final weights within 1e-4 (as updates after − before, on the elements whose
first gradient stands above f32 rounding, as train_gpt2.rs compares them). Measured against a
float64 run of this script: losses 1.3e-6 and grad norms 1.2e-6 relative, gradients 2.1e-6 of
max|g|, final weights 3.2e-5 absolute (key.bias aside).

Run through scripts/setup-reference.sh's venv:
    .cache/venv/bin/python scripts/reference/train_bert_mlm.py
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import pathlib

import torch
import transformers
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "train" / "bert_mlm_step"
MODEL = OUT / "model"

CONFIG = dict(
    vocab_size=317, hidden_size=48, num_attention_heads=3, num_hidden_layers=2,
    intermediate_size=112, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
    layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    initializer_range=0.2, pad_token_id=0, tie_word_embeddings=True,
)
SEED = 18              # weights
MASK_SEED = 0          # words, masked positions and the 80/10/10 draws
PAD, CLS, SEP, MASK = 0, 1, 2, 3
FIRST_WORD = 4         # words are drawn from [4, vocab)
SEQ = 11
SEGMENTS = [[4, 4], [5]]   # words per segment: [CLS] a.. [SEP] (b.. [SEP]), then padding
N_MASKED = [4, 3]
STEPS = 10
LR, BETAS, EPS, WEIGHT_DECAY, MAX_NORM = 1e-3, (0.9, 0.95), 1e-8, 0.1, 1.0


def build_model():
    torch.manual_seed(SEED)
    model = BertForMaskedLM(BertConfig(**CONFIG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif "LayerNorm.weight" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def batch():
    gen = torch.Generator().manual_seed(MASK_SEED)
    vocab = CONFIG["vocab_size"]
    original = torch.full((len(SEGMENTS), SEQ), PAD, dtype=torch.int64)
    types = torch.zeros(len(SEGMENTS), SEQ, dtype=torch.int64)
    mask = torch.zeros(len(SEGMENTS), SEQ, dtype=torch.int64)
    words = []  # word positions of each sequence
    for b, segments in enumerate(SEGMENTS):
        row, row_types, row_words = [CLS], [0], []
        for t, n in enumerate(segments):
            row_words += range(len(row), len(row) + n)
            row += torch.randint(FIRST_WORD, vocab, (n,), generator=gen).tolist() + [SEP]
            row_types += [t] * (n + 1)
        original[b, : len(row)] = torch.tensor(row)
        types[b, : len(row)] = torch.tensor(row_types)
        mask[b, : len(row)] = 1
        words.append(row_words)

    ids, labels = original.clone(), torch.full_like(original, -100)
    masked = []
    for b, row_words in enumerate(words):
        picked = torch.randperm(len(row_words), generator=gen)[: N_MASKED[b]].sort().values
        for i in picked.tolist():
            pos = row_words[i]
            labels[b, pos] = original[b, pos]
            u = float(torch.rand((), generator=gen))
            if u < 0.8:
                ids[b, pos], rule = MASK, "mask"
            elif u < 0.9:
                ids[b, pos], rule = int(torch.randint(FIRST_WORD, vocab, (), generator=gen)), "random"
            else:
                rule = "keep"
            masked.append([b, pos, rule])
    rules = {rule for _, _, rule in masked}
    assert rules == {"mask", "random", "keep"}, f"MASK_SEED {MASK_SEED} draws only {rules}: pick another"
    return original, ids, mask, types, labels, masked


def no_decay(param):
    # Weight decay on matrices (2-D: linear weights and the embeddings) only: not on biases and
    # LayerNorm weights.
    return param.dim() < 2


def main():
    torch.set_num_threads(1)  # the reductions' order, so that a re-run writes the same bytes
    OUT.mkdir(parents=True, exist_ok=True)
    build_model().save_pretrained(MODEL, safe_serialization=True)
    with safe_open(MODEL / "model.safetensors", "pt") as f:
        saved = sorted(f.keys())

    # Train the model as a reader of model/ gets it.
    model = BertForMaskedLM.from_pretrained(MODEL, attn_implementation="eager").float()
    model.train()  # every dropout is 0: train mode is deterministic
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.bias is model.cls.predictions.bias
    original, ids, mask, types, labels, masked = batch()
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)

    out = model(**inputs)
    out.loss.backward()
    params = list(model.named_parameters())  # tied parameters appear once, under their first name
    grads = {n: p.grad.detach().clone().contiguous() for n, p in params}
    assert sorted(grads) == saved, (sorted(grads), saved)

    groups = [
        {"params": [p for _, p in params if not no_decay(p)], "weight_decay": WEIGHT_DECAY},
        {"params": [p for _, p in params if no_decay(p)], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
    losses, norms = [float(out.loss.detach())], []
    for step in range(STEPS):
        if step > 0:
            opt.zero_grad()
            loss = model(**inputs).loss
            loss.backward()
            losses.append(float(loss.detach()))
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)))
        opt.step()
    after = {n: p.detach().clone().contiguous() for n, p in params}
    with torch.no_grad():
        final_loss = float(model(**inputs).loss)

    save_file(grads, OUT / "grads.safetensors")
    save_file(after, OUT / "after.safetensors")
    reference = {
        "model": "tests/fixtures/train/bert_mlm_step/model",
        "ids": ids.tolist(), "original_ids": original.tolist(), "attention_mask": mask.tolist(),
        "token_type_ids": types.tolist(), "labels": labels.tolist(), "masked": masked,
        "special_ids": {"pad": PAD, "cls": CLS, "sep": SEP, "mask": MASK, "first_word": FIRST_WORD},
        "seed": SEED, "mask_seed": MASK_SEED,
        "init": "BertForMaskedLM(config) after torch.manual_seed(seed): N(0, 0.2) matrices and "
                "embeddings (word_embeddings row 0 = padding_idx zeroed); then every bias "
                "N(0, 0.1), every LayerNorm weight 1 + N(0, 0.1)",
        "tied": {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
                 "cls.predictions.decoder.bias": "cls.predictions.bias"},
        "padding_idx": PAD,
        "saved_tensors": saved,
        "loss": losses[0], "losses": losses, "grad_norms": norms, "final_loss": final_loss,
        "steps": STEPS, "lr": LR, "betas": list(BETAS), "eps": EPS,
        "weight_decay": WEIGHT_DECAY, "max_norm": MAX_NORM,
        "decay": sorted(n for n, p in params if not no_decay(p)),
        "no_decay": sorted(n for n, p in params if no_decay(p)),
        "torch": torch.__version__, "transformers": transformers.__version__, "torch_threads": 1,
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"masked {masked}")
    print(f"loss {losses}, grad norms {norms}, final loss {final_loss}")


if __name__ == "__main__":
    main()
