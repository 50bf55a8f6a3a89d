"""Default parameters of every stage, in one place.

The CLI shows these in `--help`, the stage functions use them, and the manifests
record the values actually used. Tuned on the validation split only.
"""
from __future__ import annotations

CLEAN = {
    "profile": "hangul",        # see pipeline.text.normalize.PROFILES
    "squeeze": 2,               # longest run of one repeated character kept (0 = off)
    "drop_empty_test": False,   # published NSMC figures score all 50,000 test rows
}

DEDUPE = {
    # Training rows are chosen from the train file alone: choosing them by what the test file
    # holds (`drop-train`) would let test data shape the model. Published NSMC figures train
    # on the whole train file; evaluate reports accuracy on the test rows unseen in training.
    "conflicts": "majority",    # same text, different labels: majority | drop | first
    "leakage": "keep",          # text in train and test: keep (report only) | drop-train
    "dedupe_test": False,       # keep the upstream test file as published
}

SPLIT = {
    "seed": 42,
    "val_ratio": 0.1,           # share of the training rows held out for validation
    "test_ratio": 0.1,          # only for corpora without an upstream test file
}

TOKENIZE = {
    "tokenizer": "morpheme",    # word | char | morpheme
    "backend": "mecab",         # morpheme backend: mecab | okt | kiwi
}

PAD = {
    "max_words": 30000,         # vocabulary size limit from train tokens, reserved ids included (0 = no limit)
    # Then up to this many more tokens that have pretrained vectors but are not in the train
    # vocabulary (mostly tokens of the unlabeled reviews), most frequent first (0 = none). Their
    # vectors come from pretraining; a test review's rare word then is no longer OOV.
    "pretrained_words": 20000,
    "min_freq": 2,              # tokens seen fewer times in train are out-of-vocabulary
    "maxlen": "auto",           # int, or "auto": cover `coverage` of training sequences
    "coverage": 0.95,
    # Right padding: the masked LSTM reads the same tokens either way (same output, tested), and
    # Keras 3 uses the fused cuDNN kernel on a GPU only for right-padded masked sequences.
    "padding": "post",
    # A review longer than maxlen keeps its last tokens, where the verdict usually is.
    "truncating": "pre",
}

PRETRAIN = {
    # Token vectors for the Embedding layer, learned from the train split plus the corpus's
    # unlabeled reviews (when it has them; `ksent pretrain --unlabeled PATH` for others).
    "method": "word2vec",       # word2vec | fasttext (gensim), skip-gram
    "dim": 128,                 # = TRAIN["embedding_dim"]
    "window": 5,
    "epochs": 5,
    "min_count": 3,             # tokens seen fewer times (train + unlabeled) get no vector
    "seed": 42,
}

TRAIN = {
    # Chosen on the NSMC validation split (morpheme-mecab, best epoch by val_loss).
    # Random embeddings: 64/64 dropout 0.3: 0.8526; 128/128 dropout 0.3: 0.8541; bidirectional
    # 64/64: 0.8551; 128/128 dropout 0.5: 0.8517-0.8567 (two runs); with max/mean pooling over
    # the LSTM outputs, recurrent or spatial dropout, label smoothing: 0.851-0.855.
    # Word2vec embeddings from the train split: 128/128 dropout 0.5: 0.8643; BiLSTM 64 with
    # max+mean pooling: 0.8603 (single-thread word2vec: 0.8605; seed 7: 0.8617). Kept: word2vec,
    # one LSTM of 128 units. Learning rate x0.3 after each epoch without a lower val_loss:
    # 0.8605 -> 0.8633 (best epoch 3 -> 5).
    # Vectors pretrained on train + 475k unlabeled reviews, vocabulary +15,619 pretrained words
    # (PRETRAIN, PAD): LSTM 128: 0.8668 (fastText vectors instead: 0.8660, 3x the pretraining
    # time); 2 stacked LSTM 128: 0.8682 (2x the time per epoch); BiLSTM 128: 0.8716 (2x).
    "embeddings": "pretrained", # pretrained (the pretrain stage's vectors) | random
    "embedding_dim": 128,
    "units": 128,
    "layers": 1,
    "bidirectional": False,
    "cell": "lstm",
    "dropout": 0.5,
    "batch_size": 256,
    "epochs": 8,
    "patience": 2,
    "learning_rate": 1e-3,
    "lr_decay": 0.3,            # learning rate x this after an epoch without a lower val_loss (1 = off)
    "seed": 42,
    # Train reads its split in shards of whole row groups holding at most this many MB of padded
    # ids, so a training set larger than memory trains. A split that fits in one shard (NSMC's
    # 129,149 x 80 ids are 41 MB) is read whole and batched exactly as in memory; larger ones are
    # shuffled by row group into shards, and batches are drawn within a shard.
    "shard_mb": 512.0,
}

# Per tokenization (the part of the tokenizer's name before "-": word, char, morpheme), what
# differs from TRAIN; chosen on the NSMC validation split (see the comments).
TRAIN_BY_TOKENIZER: dict[str, dict] = {
    "morpheme": {"bidirectional": True},
    # char, without pretraining: LSTM 128 0.8401 (best epoch 5 of 8); 2 stacked LSTM 128 0.8433 and
    # BiLSTM 128 0.8443, both still improving at epoch 8 of 8. Pretrained vectors, BiLSTM 128, up
    # to 12 epochs: 0.8496 (best epoch 9, stopped at 11); with dropout 0.3 instead of 0.5:
    # 0.8535 (best epoch 10 of 12; the same change on morpheme: 0.8686 vs 0.8691, word: 0.8223
    # vs 0.8226, so only char takes it).
    "char": {"bidirectional": True, "epochs": 12, "dropout": 0.3},
    # word: LSTM 128 0.8143 without pretraining; pretrained vectors (vocabulary 30,000 + 20,000
    # pretrained words): LSTM 128 0.8226, BiLSTM 128 0.8229 at twice the time - kept one-way.
    "word": {},
}


def train_defaults(tok: str) -> dict:
    """The training defaults for tokenization `tok` (e.g. "morpheme-mecab", "char-jamo")."""
    return {**TRAIN, **TRAIN_BY_TOKENIZER.get(tok.split("-")[0], {})}


def pretrain_params(tok: str, train_params: dict | None) -> dict:
    """What `ksent run` passes the pretrain stage from its training parameters (None: the default)."""
    given = {k: v for k, v in (train_params or {}).items() if v is not None}
    train_params = {**train_defaults(tok), **given}
    return {"dim": train_params["embedding_dim"], "seed": train_params["seed"]}


TRAIN_CHOICES = {"cell": ("lstm", "gru"), "embeddings": ("pretrained", "random")}

# Accepted ranges of the numeric TRAIN parameters, (low, high) inclusive; the CLI and the train
# stage both check them. The upper bounds only catch typos that would exhaust memory or time.
TRAIN_LIMITS = {
    "embedding_dim": (1, 4096), "units": (1, 4096), "layers": (1, 8), "batch_size": (1, 65536),
    "epochs": (1, 1000), "patience": (0, 1000), "seed": (0, 2**32 - 1),
    "dropout": (0.0, 0.95), "learning_rate": (0.0, 1.0), "lr_decay": (0.01, 1.0), "shard_mb": (0.01, 1e6),
}

ENSEMBLE = {
    # How `ksent ensemble` combines its members (equal weights, nothing fitted): "logit-mean"
    # (sigmoid of the mean log-odds) or "mean" (of the probabilities). On the NSMC validation
    # split, members morpheme 0.8633 / char 0.8401 / word 0.8143 (no pretraining): mean 0.8735,
    # logit-mean 0.8747; weights fitted on one half of validation and scored on the other
    # (cross-fitted, both ways) 0.8743 - no better than equal weights, so none are fitted.
    # With pretraining (morpheme BiLSTM 0.8716 / char BiLSTM 0.8496 / word 0.8229): mean 0.8787,
    # logit-mean 0.8789, cross-fitted weights 0.8787.
    "combination": "logit-mean",
}

SERVE = {
    # `ksent serve`: texts of concurrent requests share model calls of at most max_batch texts; a
    # request waits at most max_wait_ms for company. Measured with bench_serve.py (NSMC morpheme
    # bundle, 32 clients, single reviews): max_wait_ms 0 -> 2,495 requests/s, 2 -> 2,850-3,081,
    # 5 -> 2,060. Limits per request: more texts -> 422, a larger body -> 413.
    "max_batch": 256,
    "max_wait_ms": 2.0,
    "max_texts": 1000,
    "max_body_bytes": 1_000_000,
}

PREDICT = {
    # Reviews per network call. onnxruntime's arena grows with the largest batch it has run: 256
    # keeps `ksent predict --file` ~70 MB smaller than 1024 and was as fast on the NSMC test file
    # (length-grouped batches of short reviews are cheap either way).
    "batch_size": 256,
    # Lines read, segmented and answered together by `ksent predict --file`/stdin: memory holds
    # a few of these batches, whatever the input's size.
    "stream_batch": 8192,
}
