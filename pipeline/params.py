"""Every parameter of every stage and app, declared once: default, range, choices, help.

The stage functions validate against these (`Params.resolve`), the CLI generates its options
from them (`--help` shows each default) and the manifests record the values used. Each default
was chosen on the validation split only; the one-line reason is here, the measurements are in
docs/experiments.md.
"""
from __future__ import annotations

from dataclasses import replace

from pipeline.core.params import Param, Params
from pipeline.layout import is_plain_name, tokenizer_kind
from pipeline.text.morph import BACKENDS, DEFAULT_BACKEND
from pipeline.text.normalize import PROFILES, Normalizer
from pipeline.text.segment import KINDS
from pipeline.text.sequences import MAXLEN_LIMIT, SIDES

VECTOR_METHODS = ("word2vec", "fasttext")      # the gensim models pipeline.model.embeddings learns vectors with


def _pad_maxlen(text: str):
    if text == "auto":
        return text
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError("a positive integer or 'auto'")


THRESHOLD_RULES = ("accuracy", "balanced")


def _threshold(text: str):
    if text in THRESHOLD_RULES:
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError("accuracy, balanced, or a probability between 0 and 1 (e.g. 0.5)") from None


# chosen on the validation split by pipeline.model.scoring.choose_threshold, recorded in bundle.json, applied by
# every predictor; "accuracy" keeps 0.5 unless another threshold is significantly better on validation
THRESHOLD = Param("accuracy", "Decision threshold: the one with the best validation accuracy (0.5 unless another is "
                  "significantly better), the best balanced accuracy (for imbalanced labels), or a number such as "
                  "0.5.", parse=_threshold,
                  rule=lambda v: None if v in THRESHOLD_RULES or (isinstance(v, (int, float)) and not isinstance(
                      v, bool) and 0 < v < 1) else "must be accuracy, balanced or a number between 0 and 1")


DOWNLOAD = Params(
    "download",
    retries=Param(3, "Retries on transient network errors (exponential backoff).", 0, 100),
    timeout=Param(30.0, "Seconds to wait for the server.", 0, 3600, low_open=True),
    backoff=Param(1.0, "Seconds before the first retry (doubled each time).", 0, 3600),
    # a source that trickles a byte at a time never times out per read: a whole file has a deadline
    deadline=Param(3600.0, "Seconds one attempt at a file may take in all.", 0, 7 * 86400, low_open=True),
)

CLEAN = Params(
    "clean",
    # the defaults are the Normalizer's own, so that Normalizer() cleans as the pipeline does
    profile=Param(Normalizer.profile, "Normalization profile.", choices=tuple(PROFILES)),
    squeeze=Param(Normalizer.squeeze, "Shorten runs of one repeated character to this length (0 = off).", 0, 1000),
    # published NSMC figures score all 50,000 test rows
    drop_empty_test=Param(False, "Drop test rows that are empty after cleaning (published figures keep them).",
                          flag="--drop-empty-test/--keep-empty-test"),
)

DEDUPE = Params(
    "dedupe",
    # training rows are chosen from the train file alone (drop-train would let the test file shape the model)
    conflicts=Param("majority", "Same text with different labels in train: drop all, keep the majority label, "
                    "or the first.", choices=("drop", "majority", "first")),
    leakage=Param("keep", "Text in both train and test: remove it from train, or keep (report only).",
                  choices=("drop-train", "keep")),
    dedupe_test=Param(False, "Deduplicate the test rows too (published figures use the full test file).",
                      flag="--dedupe-test/--keep-test-duplicates"),
)

SPLIT = Params(
    "split",
    seed=Param(42, "Random seed of the stratified split.", 0, 2**32 - 1),
    val_ratio=Param(0.1, "Validation share: of the train rows (corpus with a test file) or of all rows.",
                    0, 1, low_open=True, high_open=True),
    test_ratio=Param(0.1, "Test share of all rows, for a corpus without an upstream test file.",
                     0, 1, low_open=True, high_open=True),
)

TOKENIZE = Params(
    "tokenize",
    tokenizer=Param("morpheme", "Tokenization kind.", choices=KINDS),     # the best single model on NSMC
    backend=Param(DEFAULT_BACKEND, "morpheme: analyzer backend.", choices=tuple(BACKENDS)),
)

PRETRAIN = Params(
    "pretrain",
    # skip-gram on train + unlabeled reviews: +0.4 to +1 point of validation accuracy (docs/experiments.md)
    method=Param("word2vec", "gensim model (skip-gram).", choices=VECTOR_METHODS),
    dim=Param(128, "Vector size (= train --embedding-dim).", 1, 4096),
    window=Param(5, "Context window.", 1, 100),
    epochs=Param(5, "Passes.", 1, 1000),
    min_count=Param(3, "Tokens seen fewer times get no vector.", 1),
    seed=Param(42, None, 0, 2**32 - 1),
)

PAD = Params(
    "pad",
    max_words=Param(30000, "Vocabulary size limit, ids 0 (padding) and 1 (OOV) included; 0 = no limit.", 0,
                    rule=lambda v: None if v == 0 or v >= 3 else "must be 0 (no limit) or at least 3 (ids 0 and "
                                                                 "1 are reserved)"),
    # tokens with pretrained vectors beyond the train vocabulary: a test review's rare word is no longer OOV
    pretrained_words=Param(20000, "Then up to this many more tokens that have pretrained vectors (0 = none).", 0),
    min_freq=Param(2, "Tokens seen fewer times in train are out-of-vocabulary.", 1),
    maxlen=Param("auto", "Sequence length, or 'auto' (see --coverage).", parse=_pad_maxlen,
                 rule=lambda v: None if v == "auto" or (isinstance(v, int) and not isinstance(v, bool)
                                                        and 1 <= v <= MAXLEN_LIMIT)
                 else f"must be 'auto' or an integer from 1 to {MAXLEN_LIMIT:,}"),
    coverage=Param(0.95, "With --maxlen auto: share of train sequences that fit untruncated.", 0, 1, low_open=True),
    # right padding: Keras uses the fused cuDNN kernel on a GPU only for right-padded masked sequences
    padding=Param("post", None, choices=SIDES),
    truncating=Param("pre", None, choices=SIDES),   # a long review keeps its end, where the verdict is
)

TRAIN = Params(
    "train",
    # pretrained vectors: +0.4 to +1 point over random ones on every tokenization (docs/experiments.md)
    embeddings=Param("pretrained", "Embedding start: the pretrain stage's vectors, or random.",
                     choices=("pretrained", "random")),
    embedding_dim=Param(128, "Embedding size.", 1, 4096),
    units=Param(128, "Units per recurrent layer.", 1, 4096),
    layers=Param(1, "Stacked recurrent layers.", 1, 8),
    bidirectional=Param(False, "Bidirectional recurrent layers."),
    cell=Param("lstm", "Recurrent cell: lstm or gru.", choices=("lstm", "gru")),
    dropout=Param(0.5, "Dropout rate.", 0.0, 0.95),
    batch_size=Param(256, "Batch size.", 1, 65536),
    epochs=Param(8, "Maximum epochs.", 1, 1000),
    patience=Param(2, "Early-stopping patience (epochs without val_loss improvement).", 0, 1000),
    learning_rate=Param(1e-3, "Adam learning rate.", 0.0, 1.0),
    lr_decay=Param(0.3, "Multiply the learning rate by this after an epoch without a lower val_loss (1 = off).",
                   0.01, 1.0),
    seed=Param(42, "Random seed (recorded).", 0, 2**32 - 1),
    # where the network starts (docs/experiments.md, *few labels*); a parent also sets the network's shape
    # auto: better on validation at every size of the shopping sample's learning curve, from NSMC's bundles
    init_from=Param("auto", "Start from a trained bundle's network: its folder, auto (the bundle of this "
                    "tokenization with the best validation accuracy among corpora with more labelled reviews; none "
                    "there: from the vectors) or none (the pretrained vectors alone). Its vocabulary is kept; the "
                    "corpus's new tokens are added.",
                    rule=lambda v: None if isinstance(v, str) and v.strip() else "must be auto, none or a bundle "
                                                                                  "folder"),
    # a split that fits in one shard (NSMC's char split: 41 MB) is batched exactly as in memory
    shard_mb=Param(512.0, "Read the training data in shards of at most this many MB of padded ids (bounds "
                   "memory).", 0.01, 1e6),
    threshold=THRESHOLD,
)

# Per tokenization kind (the part of the tokenizer's name before "-"), what differs from TRAIN's
# defaults: each kind's best on the NSMC validation split (docs/experiments.md).
TRAIN_BY_TOKENIZER: dict[str, dict] = {
    "morpheme": {"bidirectional": True},
    "char": {"bidirectional": True, "epochs": 12, "dropout": 0.3},
    "word": {},                 # a BiLSTM was no better, at twice the time
}


def train_defaults(tok: str) -> dict:
    """The training defaults for tokenization `tok` (e.g. "morpheme-mecab", "char-jamo")."""
    return {**TRAIN, **TRAIN_BY_TOKENIZER.get(tokenizer_kind(tok), {})}


def pretrain_params(tok: str, train_params: dict | None) -> dict:
    """What `ksent run` passes the pretrain stage from its training parameters (None: the default)."""
    given = {k: v for k, v in (train_params or {}).items() if v is not None}
    train_params = {**train_defaults(tok), **given}
    return {"dim": train_params["embedding_dim"], "seed": train_params["seed"]}


ENSEMBLE = Params(
    "ensemble",
    # equal weights, nothing fitted: weights fitted on validation were no better (docs/experiments.md)
    combination=Param("logit-mean", "Mean of the members' log-odds, or of their probabilities.",
                      choices=("logit-mean", "mean")),
    threshold=THRESHOLD,
)

DISTILL = Params(
    "distill",
    # every unlabeled review: NSMC validation 0.8802 against 0.8756 for 300,000 x 3 (5 epochs each); up to 10 epochs:
    # val_loss lowest at epoch 9, validation 0.8826 against 0.8802 after 5 (docs/experiments.md)
    # soft weight 1: NSMC validation 0.8802 against 0.8790 (weight 0.5) and 0.8785 (weight 2)
    # auto prefers a morpheme member: shopping sample, 250 / 1,000 / 4,000 labels, validation of the ensemble's
    # morpheme student 0.8739 / 0.8814 / 0.9189 against its char student's 0.8639 / 0.8739 / 0.8979, where the char
    # member was the better one at 1,000 (docs/experiments.md)
    student=Param("auto", "Tokenization of the student (e.g. morpheme-mecab), or auto: that of the teacher's "
                  "morpheme member (the best by validation accuracy), else of its best member; a one-bundle "
                  "teacher's own."),
    network=Param("member", "The student's recurrent layers: those of the teacher's member of its tokenization, or "
                  "lstm, bilstm, gru, bigru (one-way or bidirectional; a one-way network predicts ~2x faster).",
                  choices=("member", "lstm", "bilstm", "gru", "bigru")),
    units=Param(0, "Units per recurrent layer (0 = the member's).", 0, 4096),
    soft_weight=Param(1.0, "Weight of a teacher-labelled review against a gold-labelled one.", 0, 100,
                      low_open=True),
    unlabeled_rows=Param(0, "Most unlabeled reviews the teacher labels: the first ones (0 = all).", 0),
    # one adapted bundle teaching 25,000 unlabeled shopping reviews, 1,000 labels: test 0.8564 -> 0.8806; the student
    # from the vectors (validation 0.8819) rather than from the teacher's weights (0.8639; docs/experiments.md)
    teacher=Param("ensemble", "Who labels the unlabeled reviews: the corpus's ensemble, or one of its trained "
                  "bundles, named by its tokenization (e.g. morpheme-mecab: self-training, as for a model adapted "
                  "with --init-from on few labels).",
                  rule=lambda v: None if is_plain_name(v) else "must be ensemble or a tokenization's name (e.g. char)"),
    # the fit loop's own parameters are the train stage's (pipeline.model.training.fit), some with other defaults
    epochs=replace(TRAIN.params["epochs"], default=10),
    patience=replace(TRAIN.params["patience"], default=1),
    lr_decay=TRAIN.params["lr_decay"],
    seed=Param(42, "Random seed.", 0, 2**32 - 1),
    threshold=THRESHOLD,
)

STUDENT = Params(
    "student",
    # the distill stage's choices for one corpus (above), with the router teaching every corpus at once
    student=replace(DISTILL.params["student"], help="Tokenization of the student (e.g. morpheme-mecab), or auto: "
                    "the one whose bundles have the best validation accuracy averaged over the corpora."),
    # the member's weights fit only the member's network: another one starts from the vectors (--start vectors)
    network=replace(DISTILL.params["network"], help=DISTILL.params["network"].help
                    + " A network other than the member's needs --start vectors."),
    units=replace(DISTILL.params["units"], help="Units per recurrent layer (0 = the member's; another number needs "
                  "--start vectors)."),
    soft_weight=DISTILL.params["soft_weight"],
    # from the member: validation mean 0.8976 against 0.8946 from the vectors after 3 epochs (docs/experiments.md)
    start=Param("member", "Where the network starts: from the largest corpus's trained member of the student's "
                "tokenization (its weights; the other corpora's tokens from their pretrained vectors), or from the "
                "pretrained vectors alone, as the members did.", choices=("member", "vectors")),
    # balance 0.5: validation mean 0.8946 against 0.8925 (0) and 0.8904 (1) after 3 epochs (docs/experiments.md)
    balance=Param(0.5, "How much the corpora are evened out: each corpus's rows weigh in proportion to its row count "
                  "to the power 1 - balance (0: every row the same, 1: every corpus the same in total).", 0, 1),
    routing=Param("gate", "Which of the router's answers labels a corpus's unlabeled reviews: its gate's mix of every "
                  "expert, as served (gate), or the expert of the corpus the review comes from (origin).",
                  choices=("gate", "origin")),
    unlabeled_rows=replace(DISTILL.params["unlabeled_rows"], help="Most unlabeled reviews the teacher labels per "
                           "corpus: the first ones (0 = all)."),
    # batches of 512 at a learning rate of 0.002, patience 2: validation NSMC 0.8806 / shopping 0.9209 / mean 0.9008
    # against 0.8793 / 0.9149 / 0.8971 with the member's 256 and 0.001 and patience 1, in about as long (batches of
    # 512 are 15% faster an epoch; 9 epochs instead of 8); patience 2 alone: 0.8995 in 10 epochs (docs/experiments.md)
    batch_size=Param(512, "Reviews per training batch (0 = the member's).", 0, 65536),
    learning_rate=Param(0.002, "Adam's learning rate at the start (0 = the member's).", 0.0, 1.0),
    epochs=DISTILL.params["epochs"],
    patience=replace(DISTILL.params["patience"], default=2),
    lr_decay=DISTILL.params["lr_decay"],
    # in both two-corpus builds measured, no epoch after the third cut reached a new low (docs/experiments.md):
    # stopping there keeps the same network and saves the epoch that patience 2 would still run
    lr_cuts=Param(3, "Stop once the learning rate has been cut this many times (x lr_decay after each epoch "
                  "without a lower val_loss), in a row or not; 0 = only patience stops.", 0, 1000),
    seed=DISTILL.params["seed"],
    threshold=THRESHOLD,
)

# how a bundle's network may run (pipeline.predict.classifier.load), the first the default; where `ksent serve`
# listens unless told otherwise (--host, --port)
RUNTIMES = ("auto", "onnx", "onnx-int8", "keras")
RUNTIME = RUNTIMES[0]
SERVE_HOST, SERVE_PORT = "127.0.0.1", 8000

SERVE = Params(
    "serve",
    # bench_serve.py, 32 clients: max_wait_ms 0 -> 2,495 requests/s, 2 -> 2,850-3,081, 5 -> 2,060
    max_batch=Param(256, "Most reviews per model call when concurrent requests are batched together.", 1, 100_000),
    max_wait_ms=Param(2.0, "How long a request may wait for others to share its model call.", 0, 1000),
    max_texts=Param(1000, "Most reviews in one request (more: 422).", 1, 1_000_000),
    max_body_bytes=Param(1_000_000, "Largest request body (more: 413).", 1, 1 << 30),
    # an explanation costs a network call per token (~10 ms a text for the word bundle, ~150 ms for an
    # ensemble): 100 texts bound one request's work; explained texts run one per call between batches
    max_explain=Param(100, "Most reviews in one request with explain=true (more: 422).", 1, 100_000),
    shutdown_grace=Param(30.0, "Seconds requests in flight get after SIGTERM; still waiting then: 503.", 0, 3600),
    max_connections=Param(0, "Most open connections (0 = what the file-descriptor limit allows); at the limit a "
                          "new one replaces the oldest still sending its headers.", 0, 1_000_000),
)

PREDICT = Params(
    "predict",
    # onnxruntime's arena grows with the largest batch: 256 keeps predict ~70 MB smaller than 1024, as fast
    batch_size=Param(256, "Reviews per network call.", 1),
    # lines read, segmented and answered together from a file or stdin: memory holds a few such batches
    stream_batch=Param(8192, "Lines per batch when predicting a file or stdin.", 1),
)
