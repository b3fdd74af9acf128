"""One config truth: frozen, typed dataclasses, YAML recipes and dotted ``key=value`` overrides.

    mlm-pretrain tokenizer --config tiny tokenizer.vocab_size=4000 output_dir=runs/demo

Resolution order: dataclass defaults < recipe YAML (packaged name or file) < ``key=value`` overrides.
Unknown keys, wrong types and values outside a field's allowed set fail with a :class:`ConfigError`
that names the dotted key (and the allowed values), before any stage starts working.

Every field carries a docstring (the string literal under it); :func:`field_docs` reads them back so
the CLI can print them (``mlm-pretrain config --fields``).
"""
from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from .errors import UserError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: The checkout's root when the package is used from a clone (editable install): packaged recipes
#: refer to the bundled ``data/`` folder relative to it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECIPE = "tiny"


class ConfigError(UserError):
    """A recipe or override that cannot be turned into a valid config (message names the key)."""


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusConfig:
    files: tuple[str, ...] = ("data/corpus.txt",)
    """Corpus files or glob patterns (.txt, .jsonl/.json, .parquet, .csv). Relative paths are looked up
    in the working directory, then in the project checkout (for the bundled ``data/``)."""
    format: Literal["auto", "text", "json", "parquet", "csv"] = "auto"
    """File format; ``auto`` picks it from the extension (all files must then share one format)."""
    text_field: str = "text"
    """Column holding the document text in structured files (json, parquet, csv)."""
    document_separator: Literal["blank_line", "line"] = "blank_line"
    """For .txt files: ``blank_line`` = documents separated by an empty line (Google BERT format),
    ``line`` = one document per line."""
    hub_dataset: Optional[str] = None
    """A Hugging Face Hub dataset id to read instead of ``files`` (e.g. ``Salesforce/wikitext``), through
    ``datasets.load_dataset`` and its cache: downloaded once, then read offline. Setting ``corpus.files``
    in a recipe or an override drops the Hub dataset of the recipe below it."""
    hub_config: Optional[str] = None
    """Configuration name of ``hub_dataset`` (e.g. ``wikitext-103-raw-v1``)."""
    split: str = "train"
    """Split of the corpus to read."""
    encoding_errors: Literal["replace", "strict"] = "replace"
    """Invalid UTF-8 bytes in .txt files: ``replace`` decodes them as U+FFFD and reports the count per
    file; ``strict`` refuses the file, naming it and the byte offset of the first bad byte."""
    include_task_text: bool = False
    """Also pretrain on the fine-tuning task's training texts, read from ``finetune.train_file`` (or
    ``finetune.hub_dataset``) as fine-tuning reads them, whatever their format: each text cell one
    document, never a label, validation or test row (task-adaptive pretraining)."""


@dataclass(frozen=True)
class TokenizerConfig:
    pretrained: Optional[str] = None
    """Use this tokenizer instead of training one: a tokenizer folder, or a Hub model id whose tokenizer
    files are downloaded once (e.g. ``bert-base-uncased``)."""
    type: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    """The kind of tokenizer to train: ``wordpiece`` (BERT: ``##`` continuation pieces), ``bpe`` (byte-level
    BPE as RoBERTa and ModernBERT: no unknown token, a ``Ġ`` marks a piece that follows a space) or
    ``unigram`` (a Unigram language model as ALBERT and T5, ``▁`` marks a word start). Each is a plain
    fast tokenizer that ``AutoTokenizer`` loads, with ``[CLS] A [SEP] B [SEP]`` pairs; the same corpus and
    settings give the same ``tokenizer.json``. With ``model.init_from`` the checkpoint's own tokenizer is
    used and another type is refused."""
    vocab_size: int = 30522
    """Target vocabulary size, special tokens included (``bpe``: at least the 256 bytes plus the special
    tokens)."""
    min_frequency: int = 2
    """Minimum count for a merge to enter the vocabulary (``wordpiece``, ``bpe``)."""
    limit_alphabet: int = 1000
    """Maximum number of distinct initial characters kept in the alphabet (``wordpiece``; byte-level
    ``bpe`` always has the 256 bytes)."""
    lowercase: bool = True
    """Lowercase text in the normalizer (an uncased model)."""
    strip_accents: Optional[bool] = None
    """Strip accents; ``null`` follows ``lowercase`` (as in BERT)."""
    handle_chinese_chars: bool = True
    """Put spaces around CJK characters (``wordpiece``)."""
    special_tokens: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    """Special tokens, in id order: pad, unk, cls, sep, mask (the first five are required roles)."""
    model_max_length: int = 512
    """``model_max_length`` saved in the tokenizer config."""
    batch_size: int = 1000
    """Documents per batch fed to the trainer (memory stays flat with corpus size)."""


@dataclass(frozen=True)
class DataConfig:
    objective: Literal["nsp", "sop", "mlm"] = "nsp"
    """Pair objective: ``nsp`` (BERT next sentence), ``sop`` (ALBERT sentence order) or ``mlm`` (no pairs)."""
    max_seq_length: int = 128
    """Tokens per example, [CLS]/[SEP] included."""
    short_seq_prob: float = 0.1
    """Probability of a shorter random target length (BERT's trick against train/test length skew)."""
    dupe_factor: int = 1
    """Passes over the corpus with different seeds (different pairs and truncations)."""
    sentence_split: Literal["auto", "line", "rules"] = "auto"
    """``line``: one sentence per line (pre-split text); ``rules``: rule-based splitter for running
    text (hard-wrapped lines joined first); ``auto``: ``line`` for .txt files with blank-line separated
    documents, ``rules`` otherwise."""
    validation_fraction: float = 0.02
    """Fraction of documents (never examples) held out for validation."""
    max_validation_examples: int = 2000
    """Cap on validation examples (evaluation cost stays bounded)."""
    num_proc: int = 1
    """Processes for ``datasets.map`` in cached mode."""
    streaming: bool = False
    """Build examples on the fly from an IterableDataset instead of caching them."""
    random_next_buffer: int = 1000
    """Documents per group: examples are built group by group and random-next sentences come from
    the other documents of the group (cached and streaming mode; bounds memory)."""
    shuffle_buffer: int = 10000
    """Streaming: examples buffered for shuffling."""
    cache_dir: Optional[str] = None
    """Where prepared datasets are cached; default ``<output_dir>/data``."""


@dataclass(frozen=True)
class MaskingConfig:
    probability: float = 0.15
    """Fraction of non-special, non-padding tokens selected for prediction."""
    mask_replace_prob: float = 0.8
    """Of the selected tokens, fraction replaced by [MASK]."""
    random_replace_prob: float = 0.1
    """Of the selected tokens, fraction replaced by a random token (the rest are kept)."""
    whole_word: bool = False
    """Select whole words (a token and its continuations together); keeps 80/10/10. Word starts come from
    the tokenizer: a piece without WordPiece's ``##``, a byte-level BPE piece after a space (``Ġ``) or
    punctuation, a SentencePiece piece with ``▁``."""
    max_predictions_per_seq: Optional[int] = None
    """Cap on masked positions per sequence (BERT's ``max_predictions_per_seq``)."""
    pad_to_multiple_of: int = 8
    """Pad batches to a multiple of this (tensor-core friendly)."""


#: The model.architecture values trained by replaced-token detection (ELECTRA): a generator, and the
#: discriminator that is saved.
RTD_ARCHITECTURES = ("electra", "modernbert-electra")


@dataclass(frozen=True)
class ModelConfig:
    architecture: Literal["bert", "modernbert", "electra", "modernbert-electra", "roberta", "distilbert"] = "bert"
    """Model family, each a stock transformers class pair (docs/architectures.md):
    ``bert`` = ``BertForPreTraining`` (post-LayerNorm, learned positions; MLM + NSP/SOP by ``data.objective``);
    ``modernbert`` = ``ModernBertForMaskedLM`` (pre-norm, GeGLU, rotary positions, no biases, head on masked
    tokens only; MLM only), fine-tuned as ``ModernBertForSequenceClassification``; ``electra`` = replaced-token
    detection: a small ``ElectraForMaskedLM`` generator and the ``ElectraForPreTraining`` discriminator that
    fine-tuning uses (MLM-style data only); ``modernbert-electra`` = replaced-token detection on the ModernBERT
    backbone: a shallower ``ModernBertForMaskedLM`` generator and a one-logit ``ModernBertForTokenClassification``
    discriminator, fine-tuned as ``ModernBertForSequenceClassification``; ``roberta`` = ``RobertaForMaskedLM`` and
    ``distilbert`` = ``DistilBertForMaskedLM``, the families of public checkpoints continued pretraining starts
    from (``init_from``). All but ``bert`` need ``data.objective=mlm``. With ``init_from`` it must name the
    checkpoint's family (a mismatch is refused, naming the value to set)."""
    preset: Literal["tiny", "mini", "small", "medium", "base", "large"] = "mini"
    """Size from Google's compact BERT grid (layers/hidden): tiny 2/128, mini 4/256, small 4/512,
    medium 8/512, base 12/768, large 24/1024; every architecture takes the same layers, hidden size and
    heads (hidden/64); ``modernbert``'s GeGLU feed-forward gets 8/3 x hidden (rounded up to a multiple of
    64), the parameters of BERT's 4 x hidden two-matrix one."""
    config_path: Optional[str] = None
    """A ``config.json`` to use instead of the preset; its ``model_type`` must match ``architecture``."""
    num_hidden_layers: Optional[int] = None
    """Override the number of layers."""
    hidden_size: Optional[int] = None
    """Override the hidden size (heads = hidden/64 and the feed-forward size follow unless overridden)."""
    num_attention_heads: Optional[int] = None
    """Override the number of attention heads."""
    intermediate_size: Optional[int] = None
    """Override the feed-forward size."""
    max_position_embeddings: int = 512
    """Longest sequence the model accepts."""
    hidden_dropout_prob: Optional[float] = None
    """Dropout on hidden states (``modernbert``: embedding and MLP dropout); null = the family's own
    default: 0.1 for ``bert`` and ``electra`` (their papers), 0.0 for ``modernbert`` (its pretraining
    setting; dropout only slows learning at small budgets)."""
    attention_probs_dropout_prob: Optional[float] = None
    """Dropout on attention probabilities; null = the family's default (0.1 ``bert``/``electra``, 0.0
    ``modernbert``)."""
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    """Attention kernel."""
    tie_word_embeddings: Optional[bool] = None
    """Whether the masked-LM decoder is the input embedding matrix (``bert``, ``modernbert``); null = the
    family's default (tied) or the ``config_path`` file's value. ``false`` gives the decoder a matrix of its
    own (RemBERT, Chung et al. 2021, decoupled embeddings): only a piece's own occurrences then move its
    input embedding; costs vocab x hidden parameters, not FLOPs. At small budgets keep it tied: the
    decoder's gradient is what teaches the input vectors from the first step, and untied the ``cpu-1h``
    recipe was still at the unigram plateau after 800 steps (10% MLM accuracy against 33% tied).
    ``electra`` ties its generator to the shared embeddings, as in the paper."""
    init_from: Optional[str] = None
    """Start pretraining from these weights (fresh optimizer and schedule): a ``save_pretrained`` folder
    (e.g. phase 2 at sequence 512 from phase 1's ``pretrain/final``) or a Hub model id, downloaded once: a
    BERT, RoBERTa, DistilBERT, ModernBERT or ELECTRA checkpoint, with or without its pretraining head (a
    missing head is initialised, its decoder tied to the embeddings where the family ties them, and the log
    says so; an ELECTRA discriminator without ``generator/`` gets a new generator). Its own tokenizer is
    used (unless ``tokenizer.pretrained`` names one; no tokenizer is trained), its sizes, vocabulary and
    positions are the checkpoint's (the size fields are ignored), and ``pretrain/final`` is a model of the
    same family."""
    extend_positions: bool = False
    """With ``init_from``: when ``data.max_seq_length`` exceeds the checkpoint's positions, extend them
    before training (learned tables tiled from the trained rows; rotary models get
    ``max_position_embeddings`` raised and a global rope base for the window; logged, and recorded in the
    exported ``config.json``). Off, such a checkpoint is refused before any data work: a longer sequence
    length is then usually a typo, and extending changes the model. ``pretrain.long_phase`` sets it for its
    phase. docs/pretraining.md, "A longer window after pretraining"."""
    generator_size_ratio: float = 0.25
    """``electra``: the generator's hidden size as a fraction of the discriminator's (the paper's best
    is 1/4 to 1/2); its heads and feed-forward shrink alike, its depth stays. ``modernbert-electra``: the
    generator's depth as a fraction of the discriminator's (at least one layer); its width stays, since
    the two share the embeddings and ModernBERT has no embedding projection (DeBERTa-v3's generator is
    likewise as wide and half as deep)."""
    generator_num_hidden_layers: Optional[int] = None
    """The generator's layers: ``modernbert-electra``, instead of ``generator_size_ratio``; ``electra``,
    instead of the discriminator's depth."""
    generator_hidden_size: Optional[int] = None
    """``electra``: the generator's hidden size, instead of ``generator_size_ratio``."""
    generator_num_attention_heads: Optional[int] = None
    """``electra``: the generator's attention heads; default: the discriminator's, shrunk like the width
    (at least 1). The hidden size must be a multiple of it."""


@dataclass(frozen=True)
class LongPhaseConfig:
    max_seq_length: Optional[int] = None
    """Tokens per example of a last pretraining phase at a longer window (e.g. 512 after
    ``data.max_seq_length`` 128, as BERT's phase 2); null: no such phase. The phase starts from the first
    phase's ``final/`` with its positions extended (``model.extend_positions``), with a fresh optimizer and
    warmup, on data prepared at this length, in ``pretrain/long-<length>/``; its ``final/`` is the run's
    encoder (fine-tuned, pushed). docs/pretraining.md, "A longer window after pretraining"."""
    share: float = 0.1
    """The long phase's part of the budget: of ``pretrain.time_budget_minutes``, of ``max_steps`` (its
    ``warmup_steps`` scale alike), of ``num_epochs`` (epochs of its own data), or of one epoch when none is
    set; the first phase gets the rest."""
    batch_size: Optional[int] = None
    """Examples per device per micro-batch in the long phase; null: the first phase's tokens per
    micro-batch, ``pretrain.batch_size x data.max_seq_length / max_seq_length`` (at least 1)."""
    learning_rate: Optional[float] = None
    """The long phase's peak learning rate (same schedule and warmup share); null: ``pretrain.learning_rate``."""


@dataclass(frozen=True)
class PretrainConfig:
    batch_size: int = 32
    """Examples per device per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    batch_ramp: float = 0.0
    """Grow the batch over this fraction of the run (of the time with ``time_budget_minutes``, else of
    ``max_steps``): the first optimizer steps take one micro-batch each, and the count rises linearly to
    ``gradient_accumulation_steps`` (Cramming's batch-size ramp: many small steps while the loss falls
    fast, full batches later). The learning-rate schedule is unchanged. 0: no ramp. Needs
    ``gradient_accumulation_steps`` > 1 and ``max_steps`` or ``time_budget_minutes``, not ``num_epochs``."""
    learning_rate: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (never on biases and LayerNorm)."""
    adam_beta1: float = 0.9
    """AdamW beta1."""
    adam_beta2: float = 0.999
    """AdamW beta2."""
    adam_epsilon: float = 1e-6
    """AdamW epsilon."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial",
                          "inverse_sqrt", "cosine_with_restarts"] = "linear"
    """Schedule name for ``transformers.get_scheduler``."""
    warmup_steps: int = 0
    """Warmup optimizer steps (wins over ``warmup_ratio`` when > 0)."""
    warmup_ratio: float = 0.0
    """Warmup as a fraction of the run (steps, or time with ``time_budget_minutes``)."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps."""
    num_epochs: Optional[float] = None
    """Stop after this many passes over the training data."""
    time_budget_minutes: Optional[float] = None
    """Stop after this much wall-clock time; the schedule then follows elapsed time."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Autocast precision. ``auto``: bf16 on a GPU that has it, else fp16 with loss scaling; on a CPU bf16
    only where a short matmul probe (cached per machine) measures it faster than fp32, else fp32. The
    choice and its reason are logged and written to ``final/metrics.json``."""
    threads: Union[Literal["auto"], int] = "auto"
    """CPU threads. ``auto``: the cores that other processes leave free, re-read every few seconds
    (``mlm_pretrain.hardware.ThreadGovernor``: as many threads as cores collapse when another job shares
    the machine), at most torch's default (``OMP_NUM_THREADS`` or the core count); a number pins it. The
    count and its changes are logged (``train/threads``) and written to ``final/metrics.json``."""
    malloc: Literal["auto", "system"] = "auto"
    """The C allocator while training on a CPU. ``auto``: with glibc, freed memory stays in the process for
    the next step instead of returning to the kernel and coming back as fresh zeroed pages every step
    (``mlm_pretrain.hardware.HeapReuse``; 1.05-1.1x a BERT ``mini`` step); memory goes back when
    training ends. Left alone where another allocator is preloaded or ``MALLOC_*`` variables are set.
    ``system``: leave it as it is. Written to ``final/metrics.json`` (``malloc``)."""
    eval_steps: int = 500
    """Evaluate every N optimizer steps (0 disables; always evaluated at the end)."""
    probe_examples: int = 1000
    """Rows of the recipe's fine-tuning task (``finetune.train_file``) for the downstream probe run at
    each evaluation: a logistic regression on the frozen encoder's mean-pooled features, beside the same
    probe on a random-init encoder and TF-IDF (0 disables; no probe without a train_file)."""
    probe_eval_examples: int = 500
    """Rows the probe is scored on (``finetune.validation_file``, else held out of the train file)."""
    save_steps: int = 1000
    """Checkpoint every N optimizer steps (0 disables; always saved at the end)."""
    keep_last: int = 3
    """Checkpoints kept on disk (older ones are deleted)."""
    logging_steps: int = 10
    """Log training scalars every N optimizer steps."""
    resume: str = "auto"
    """``auto`` (newest complete checkpoint), ``never``, or a checkpoint directory."""
    max_nonfinite_steps: int = 5
    """Consecutive non-finite losses (steps skipped) before the run stops."""
    dataloader_num_workers: int = 0
    """DataLoader worker processes that build the batches ahead of the step (0: the training process
    builds each one when it needs it). ``train/data_wait_fraction`` in the log says whether the step waits
    on its batches; on a CPU a worker takes a core from the step."""
    group_by_length: bool = True
    """Batch examples of similar length together (sorted within windows of 64 global batches, batch
    order shuffled): far less padding, about 1.5x the real tokens per second on NSP data; cached data
    only. ``false`` = plain random batches (then accumulation micro-batches equal one big batch exactly)."""
    compile: Union[bool, Literal["auto"]] = False
    """``torch.compile`` the encoder(s) for training (inductor; evaluation and the probe stay eager). The
    first step then includes the compilation (tens of seconds on a CPU), and each new CPU thread count
    compiles once more. ``auto``: compile where it is measured to help, i.e. a model without dropout (on
    a CPU this package's dropout masks run eager, and compiling the rest measured no faster)
    and a C++ compiler on a CPU; else eager, with the reason logged. ``true`` fails early without a compiler. The choice and its
    reason are written to ``final/metrics.json``."""
    cpu: bool = False
    """Force CPU even when a GPU is visible (also enables gloo data parallelism on CPUs)."""
    electra_disc_weight: float = 50.0
    """``model.architecture=electra``: loss = generator MLM loss + this x discriminator loss (the
    discriminator's per-token binary loss is ~50x smaller than the generator's; the paper's weight)."""
    long_phase: LongPhaseConfig = field(default_factory=LongPhaseConfig)
    """A last phase at a longer sequence length (``pretrain.long_phase.max_seq_length``), off by default."""


@dataclass(frozen=True)
class FinetuneConfig:
    task_name: str = "sentiment"
    """Name of the task (output goes to ``<output_dir>/finetune/<task_name>``)."""
    model: Optional[str] = None
    """Encoder folder or Hub model id (downloaded once, e.g. ``bert-base-uncased``); default: this run's
    ``pretrain/final``."""
    init: Literal["pretrained", "random"] = "pretrained"
    """``random`` builds the same architecture from scratch (to measure what pretraining buys)."""
    compare_baselines: bool = True
    """In ``mlm-pretrain run``: also fine-tune the same architecture from random weights (same rows,
    seeds and settings; ``finetune/<task>-random-init``) and score TF-IDF + logistic regression on the
    same rows, so the summary and ``report.md`` show what pretraining bought."""
    train_file: Optional[str] = "data/sentiment/train.csv"
    """Labelled training file (csv, tsv, jsonl, parquet)."""
    validation_file: Optional[str] = "data/sentiment/validation.csv"
    """Labelled validation file; when missing, ``validation_fraction`` of train is held out."""
    test_file: Optional[str] = None
    """Optional labelled test file, scored with the best model at the end."""
    hub_dataset: Optional[str] = None
    """A Hub dataset id to read instead of files (e.g. ``nyu-mll/glue`` with ``hub_config: sst2``): its
    train split, and its validation and test splits when they are labelled; cached by ``datasets`` after
    the first download. Setting ``finetune.train_file`` in a recipe or an override drops it."""
    hub_config: Optional[str] = None
    """Configuration name of ``hub_dataset``."""
    validation_fraction: float = 0.1
    """Held-out fraction of train when there is no validation file."""
    text_column: str = "text"
    """Column with the (first) text."""
    text_pair_column: Optional[str] = None
    """Column with the second text of a sentence pair task."""
    label_column: str = "label"
    """Column with the label (integers, strings, or floats for regression)."""
    label_names: tuple[str, ...] = ()
    """Names of integer labels 0..K-1 (e.g. [negative, positive]); default: the values themselves."""
    problem_type: Literal["auto", "classification", "regression"] = "auto"
    """``auto``: float labels mean regression (one output, Pearson/Spearman), others classification."""
    csv_quoting: Literal["auto", "csv", "none"] = "auto"
    """Quotes in csv/tsv files: ``csv`` honours double quotes, ``none`` reads them as text (GLUE tsv);
    ``auto``: ``none`` for .tsv, ``csv`` for .csv."""
    max_train_examples: Optional[int] = None
    """Use a seeded random subset of this many training examples (quick runs)."""
    max_eval_examples: Optional[int] = None
    """Use a seeded random subset of this many validation (and test) examples."""
    max_length: int = 128
    """Tokens the encoder reads at once (special tokens included): longer rows are truncated to it, or
    cut into windows of it (``long_documents``). The log and ``summary.json`` say how many rows were longer."""
    long_documents: Literal["truncate", "windows"] = "windows"
    """Rows longer than ``max_length``: ``windows`` (default) reads the whole document as overlapping windows
    of ``max_length`` tokens and pools the windows' logits into one prediction per document, in training,
    evaluation and prediction alike (the classifier folder records it; a pair keeps its shorter text in
    every window and windows the longer); ``truncate`` keeps their first ``max_length`` tokens (the
    default before 2026-12-07, and GLUE's protocol). A row that fits is read the same way in both modes;
    a longer one costs about one forward pass per window. Measured on long reviews: 5-8 points above
    truncation (docs/finetuning.md, "Long documents")."""
    window_overlap: Optional[int] = None
    """``windows``: tokens each window shares with the one before it (below half of ``max_length``); null:
    a quarter of ``max_length`` (32 at 128)."""
    window_pooling: Literal["mean", "max"] = "mean"
    """``windows``: how the windows' logits make the document's: their ``mean`` or elementwise ``max``."""
    max_windows: Optional[int] = 16
    """``windows``: at most this many windows of a document while training, spread evenly from its first
    to its last (a bound on the memory of one batch; the log says how many documents it cut); evaluation
    and prediction read every window. null: every window."""
    batch_size: int = 32
    """Examples per device per micro-batch (``windows``: documents, each with all its windows)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 5e-5
    """Peak learning rate."""
    embedding_learning_rate: Union[Literal["auto"], float, None] = None
    """Peak learning rate of the input token embedding matrix; null = ``learning_rate``. Adam moves every
    weight by about the learning rate per step whatever its size, so a pretrained embedding table that grew
    to several times a fresh one's scale (a tied masked-LM decoder needs large logits) adapts that many
    times more slowly than the other weights. ``auto``: ``learning_rate`` times that growth when it is 2x or
    more, else ``learning_rate`` (the rate used is logged and kept in each seed's ``results.json``). It
    pays on a task far from the pretraining corpus (several points on SST-2 after news), and gains
    nothing measurable on a task whose words the corpus already teaches."""
    weight_decay: float = 0.01
    """AdamW weight decay (never on biases and LayerNorm)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial",
                          "inverse_sqrt", "cosine_with_restarts"] = "linear"
    """Schedule name for ``transformers.get_scheduler``."""
    warmup_ratio: float = 0.1
    """Warmup as a fraction of the optimizer steps."""
    num_epochs: float = 3.0
    """Passes over the training data."""
    max_steps: Optional[int] = None
    """Stop after this many optimizer steps (wins over ``num_epochs``)."""
    eval_steps: Optional[int] = None
    """Evaluate every N optimizer steps; default once per epoch."""
    metric_for_best: str = "auto"
    """Validation metric that picks the best checkpoint (accuracy, f1, f1_macro, matthews_correlation,
    loss; pearson, spearmanr, mse for regression); ``auto``: accuracy, or pearson for regression."""
    early_stopping_patience: Optional[int] = None
    """Stop after this many evaluations without improvement."""
    group_by_length: bool = False
    """Batch examples of similar length together (less padding)."""
    seeds: tuple[int, ...] = ()
    """Run one fine-tune per seed and report median and standard deviation; default: ``seed``."""
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    """Autocast precision; ``auto`` as for pretraining (bf16 or fp16 on GPUs, bf16 on CPUs only where it is
    measured faster)."""
    threads: Union[Literal["auto"], int] = "auto"
    """CPU threads: ``auto`` (the cores other processes leave free) or a number, as for pretraining."""
    malloc: Literal["auto", "system"] = "auto"
    """The C allocator while training on a CPU: ``auto`` keeps freed memory for reuse (glibc), as for
    pretraining; ``system`` leaves it as it is."""
    classifier_dropout: Optional[float] = None
    """Dropout before the classification head (default: the encoder's hidden dropout)."""
    cpu: bool = False
    """Force CPU even when a GPU is visible."""
    logging_steps: int = 10
    """Log training loss and learning rate every N optimizer steps."""
    save_checkpoints: bool = True
    """Save the full training state (optimizer, scheduler, RNG) at each evaluation, so an interrupted seed
    resumes; ``false`` saves only the weights (the best model is still kept) and a seed starts over."""
    resume: str = "auto"
    """``auto``: continue an interrupted seed from its checkpoint and reuse finished seeds (same
    settings only); ``never``: start every seed afresh."""


@dataclass(frozen=True)
class HubConfig:
    push: bool = False
    """Push artifacts to the Hugging Face Hub (token from ``HF_TOKEN`` or the login cache)."""
    repo_id: Optional[str] = None
    """Target repository ``user/name``."""
    private: bool = False
    """Create the repository as private."""
    revision: str = "main"
    """Branch to push to (created when missing)."""
    strategy: Literal["end", "checkpoint"] = "end"
    """``end``: push the final model; ``checkpoint``: also push every checkpoint in the background."""
    commit_message: Optional[str] = None
    """Commit message (default describes the artifact)."""
    license: str = "apache-2.0"
    """License declared in the model card."""
    language: tuple[str, ...] = ("en",)
    """Languages declared in the model card."""
    retries: int = 5
    """Background pushes: further attempts after a failed one (then a warning; training goes on)."""
    retry_wait: float = 2.0
    """Background pushes: seconds before the first retry, doubled at each further one (capped at 120)."""


@dataclass(frozen=True)
class TrackingConfig:
    report_to: tuple[str, ...] = ("tensorboard",)
    """Accelerate trackers (tensorboard, wandb, mlflow, trackio); unavailable ones are skipped with a
    warning; ``metrics.jsonl`` is always written."""
    project_name: str = "mlm_pretrain"
    """Project / experiment name for the trackers."""
    plots: bool = True
    """Write PNG plots of the logged curves at the end of a run."""


@dataclass(frozen=True)
class Config:
    output_dir: str = "runs/tiny"
    """Run directory: every artifact of the run goes below it."""
    seed: int = 42
    """Seed of every random choice (data, masking, initialisation, shuffling)."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    """Raw corpus."""
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    """The tokenizer: trained (WordPiece, byte-level BPE or Unigram) or given."""
    data: DataConfig = field(default_factory=DataConfig)
    """Pretraining examples."""
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    """Dynamic masked-LM masking."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Encoder architecture."""
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    """Pretraining loop."""
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    """Classification fine-tuning."""
    hub: HubConfig = field(default_factory=HubConfig)
    """Publishing to the Hub."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Logging and experiment trackers."""

    # ------------------------------------------------------------------ helpers
    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir)

    def replace(self, **changes: Any) -> "Config":
        """A copy with dotted-key changes applied (validated like overrides)."""
        return from_dict(_merge(to_dict(self), _unflatten(changes)))


# ----------------------------------------------------------------------------------------------
# Field docs
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def field_docs(cls: type) -> dict[str, str]:
    """The docstring under each field of a config dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe_fields(cls: type = Config, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, doc) for every leaf field, for ``--help-fields``."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            rows.extend(describe_fields(tp, key + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append((key, _type_name(tp), default, docs.get(f.name, "")))
    return rows


# ----------------------------------------------------------------------------------------------
# Building and validating
# ----------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"list[{_type_name(typing.get_args(tp)[0])}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (light coercion: int -> float, list -> tuple)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value is False and "no" in allowed and False not in allowed:
            value = "no"  # YAML reads an unquoted `no` as false (mixed_precision=no)
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose one of "
                              + ", ".join(repr(a) for a in allowed))
        return value
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]  # a single file / tracker given as a string
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_tp)}, got {value!r}")
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {tp!r}")  # pragma: no cover - a coding error


def _build(cls: type, data: dict, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping of keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        import difflib

        key = prefix + unknown[0]
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(f"unknown config key {key!r}{hint}; the keys of "
                          f"{prefix.rstrip('.') or 'the config'} are: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value if value is not None else {}, prefix + name + ".")
        else:
            kwargs[name] = _coerce(value, tp, prefix + name)
    obj = cls(**kwargs)
    _validate_values(obj, prefix)
    return obj


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


def _validate_values(obj: Any, prefix: str) -> None:
    """Range checks that types cannot express, per section."""
    for cls, check in ((TokenizerConfig, _check_tokenizer), (DataConfig, _check_data), (MaskingConfig, _check_masking),
                       (PretrainConfig, _check_training), (FinetuneConfig, _check_training),
                       (PretrainConfig, _check_pretrain), (FinetuneConfig, _check_finetune),
                       (LongPhaseConfig, _check_long_phase),
                       (ModelConfig, _check_model), (HubConfig, _check_hub)):
        if isinstance(obj, cls):
            check(obj, prefix)


def _check_tokenizer(obj: TokenizerConfig, p: str) -> None:
    """tokenizer.*"""
    _check(obj.vocab_size >= len(obj.special_tokens) + 1, p + "vocab_size", "must exceed the number of special tokens")
    _check(obj.min_frequency >= 1, p + "min_frequency", "must be >= 1")
    _check(obj.limit_alphabet >= 1, p + "limit_alphabet", "must be >= 1")
    _check(len(obj.special_tokens) >= 5, p + "special_tokens",
           "needs at least 5 tokens: pad, unk, cls, sep, mask (in that order)")
    _check(len(set(obj.special_tokens)) == len(obj.special_tokens), p + "special_tokens", "has duplicates")
    _check(obj.batch_size >= 1, p + "batch_size", "must be >= 1")


def _check_data(obj: DataConfig, p: str) -> None:
    """data.*"""
    _check(obj.max_seq_length >= 8, p + "max_seq_length", "must be >= 8")
    _check(0.0 <= obj.short_seq_prob <= 1.0, p + "short_seq_prob", "must be in [0, 1]")
    _check(obj.dupe_factor >= 1, p + "dupe_factor", "must be >= 1")
    _check(0.0 <= obj.validation_fraction < 1.0, p + "validation_fraction", "must be in [0, 1)")
    _check(obj.num_proc >= 1, p + "num_proc", "must be >= 1")
    _check(obj.random_next_buffer >= 2, p + "random_next_buffer", "must be >= 2")
    _check(obj.max_validation_examples >= 0, p + "max_validation_examples", "must be >= 0")
    _check(obj.shuffle_buffer >= 1, p + "shuffle_buffer", "must be >= 1 (1 = no shuffling)")


def _check_masking(obj: MaskingConfig, p: str) -> None:
    """masking.*"""
    _check(0.0 < obj.probability < 1.0, p + "probability", "must be in (0, 1)")
    _check(0.0 <= obj.mask_replace_prob <= 1.0, p + "mask_replace_prob", "must be in [0, 1]")
    _check(0.0 <= obj.random_replace_prob <= 1.0, p + "random_replace_prob", "must be in [0, 1]")
    _check(obj.mask_replace_prob + obj.random_replace_prob <= 1.0 + 1e-9, p + "random_replace_prob",
           "mask_replace_prob + random_replace_prob must be <= 1 (the rest is kept unchanged)")
    _check(obj.pad_to_multiple_of >= 1, p + "pad_to_multiple_of", "must be >= 1")
    _check(obj.max_predictions_per_seq is None or obj.max_predictions_per_seq >= 1,
           p + "max_predictions_per_seq", "must be >= 1 (or null for no cap)")


def _check_training(obj: Union[PretrainConfig, FinetuneConfig], p: str) -> None:
    """What pretrain.* and finetune.* share."""
    _check(obj.batch_size >= 1, p + "batch_size", "must be >= 1")
    _check(obj.gradient_accumulation_steps >= 1, p + "gradient_accumulation_steps", "must be >= 1")
    _check(obj.learning_rate > 0, p + "learning_rate", "must be > 0")
    _check(0.0 <= obj.warmup_ratio < 1.0, p + "warmup_ratio", "must be in [0, 1)")
    _check(obj.max_steps is None or obj.max_steps >= 1, p + "max_steps", "must be >= 1")
    _check(obj.threads == "auto" or obj.threads >= 1, p + "threads", "must be auto or >= 1")


def _check_pretrain(obj: PretrainConfig, p: str) -> None:
    """pretrain.*"""
    _check(obj.keep_last >= 1, p + "keep_last", "must be >= 1")
    _check(obj.time_budget_minutes is None or obj.time_budget_minutes > 0, p + "time_budget_minutes", "must be > 0")
    _check(obj.num_epochs is None or obj.num_epochs > 0, p + "num_epochs", "must be > 0")
    _check(obj.logging_steps >= 1, p + "logging_steps", "must be >= 1")
    _check(obj.eval_steps >= 0, p + "eval_steps", "must be >= 0 (0 = only at the end)")
    _check(obj.save_steps >= 0, p + "save_steps", "must be >= 0 (0 = only at the end)")
    _check(obj.max_nonfinite_steps >= 1, p + "max_nonfinite_steps", "must be >= 1")
    _check(obj.dataloader_num_workers >= 0, p + "dataloader_num_workers", "must be >= 0")
    _check(obj.max_grad_norm >= 0, p + "max_grad_norm", "must be >= 0 (0 disables clipping)")
    _check(obj.electra_disc_weight > 0, p + "electra_disc_weight", "must be > 0")
    _check(obj.compile in (True, False, "auto"), p + "compile", "must be true, false or auto")
    _check(0.0 <= obj.batch_ramp <= 1.0, p + "batch_ramp", "must be in [0, 1] (0 = no ramp)")
    if obj.batch_ramp > 0:
        _check(obj.gradient_accumulation_steps > 1, p + "batch_ramp",
               "grows the step from one micro-batch to gradient_accumulation_steps of them: set "
               "pretrain.gradient_accumulation_steps > 1 (e.g. batch_size=8 gradient_accumulation_steps=4 "
               "ramps from 8 to 32 sequences per step), or batch_ramp=0")
        _check(obj.num_epochs is None and (obj.max_steps or obj.time_budget_minutes), p + "batch_ramp",
               "needs the run bounded by pretrain.max_steps or pretrain.time_budget_minutes, not "
               "num_epochs (a ramped run's steps per epoch are not known ahead): set one of them and "
               "num_epochs=null")


def _check_long_phase(obj: LongPhaseConfig, p: str) -> None:
    """pretrain.long_phase.*"""
    _check(obj.max_seq_length is None or obj.max_seq_length >= 8, p + "max_seq_length", "must be >= 8 (or null)")
    _check(0.0 < obj.share < 1.0, p + "share", "must be in (0, 1): the long phase's part of the budget")
    _check(obj.batch_size is None or obj.batch_size >= 1, p + "batch_size", "must be >= 1 (or null)")
    _check(obj.learning_rate is None or obj.learning_rate > 0, p + "learning_rate", "must be > 0 (or null)")


def _check_finetune(obj: FinetuneConfig, p: str) -> None:
    """finetune.*"""
    _check(obj.num_epochs > 0, p + "num_epochs", "must be > 0")
    _check(0.0 < obj.validation_fraction < 1.0, p + "validation_fraction", "must be in (0, 1)")
    _check(obj.max_length >= 4, p + "max_length", "must be >= 4")
    _check(obj.eval_steps is None or obj.eval_steps >= 1, p + "eval_steps", "must be >= 1")
    _check(obj.early_stopping_patience is None or obj.early_stopping_patience >= 1,
           p + "early_stopping_patience", "must be >= 1")
    _check(obj.max_train_examples is None or obj.max_train_examples >= 2, p + "max_train_examples", "must be >= 2")
    _check(obj.max_eval_examples is None or obj.max_eval_examples >= 1, p + "max_eval_examples", "must be >= 1")
    _check(obj.logging_steps >= 1, p + "logging_steps", "must be >= 1")
    _check(obj.resume in ("auto", "never"), p + "resume", "must be auto or never")
    _check(len(set(obj.seeds)) == len(obj.seeds), p + "seeds", "has duplicates")
    _check(len(set(obj.label_names)) == len(obj.label_names), p + "label_names", "has duplicates")
    _check(obj.classifier_dropout is None or 0.0 <= obj.classifier_dropout < 1.0,
           p + "classifier_dropout", "must be in [0, 1)")
    _check(obj.text_pair_column != obj.text_column, p + "text_pair_column", "must differ from text_column")
    _check(obj.embedding_learning_rate in (None, "auto") or obj.embedding_learning_rate > 0,
           p + "embedding_learning_rate", "must be > 0, auto, or null for finetune.learning_rate")
    _check(obj.window_overlap is None or 0 <= obj.window_overlap < obj.max_length // 2, p + "window_overlap",
           f"must be at least 0 and below half of finetune.max_length ({obj.max_length // 2}), so that each window "
           "moves on; or null for a quarter of max_length")
    _check(obj.max_windows is None or obj.max_windows >= 1, p + "max_windows", "must be >= 1, or null for every window")


def _check_model(obj: ModelConfig, p: str) -> None:
    """model.*"""
    _check(obj.max_position_embeddings >= 8, p + "max_position_embeddings", "must be >= 8")
    _check(0.0 < obj.generator_size_ratio <= 1.0, p + "generator_size_ratio", "must be in (0, 1]")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = getattr(obj, name)
        _check(value is None or 0.0 <= value < 1.0, p + name, "must be in [0, 1) (or null for the family default)")
    for name in ("generator_hidden_size", "generator_num_attention_heads", "generator_num_hidden_layers"):
        _check(getattr(obj, name) is None or getattr(obj, name) >= 1, p + name, "must be >= 1")
    _check(obj.tie_word_embeddings is not False or obj.architecture not in RTD_ARCHITECTURES,
           p + "tie_word_embeddings", f"must be true or null for model.architecture={obj.architecture} (its "
           "generator's decoder is the shared embedding matrix)")


def _check_hub(obj: HubConfig, p: str) -> None:
    """hub.*"""
    _check(obj.retries >= 0, p + "retries", "must be >= 0")
    _check(obj.retry_wait >= 0, p + "retry_wait", "must be >= 0 seconds")


def from_dict(data: dict) -> Config:
    """Build and validate a :class:`Config` from a nested mapping."""
    cfg = _build(Config, data or {}, "")
    _validate_combinations(cfg)
    return cfg


def _validate_combinations(cfg: Config) -> None:
    """Settings of different sections that cannot train together, refused before any stage works."""
    arch, objective = cfg.model.architecture, cfg.data.objective
    long = cfg.pretrain.long_phase.max_seq_length
    if long is not None and long <= cfg.data.max_seq_length:
        raise ConfigError(f"pretrain.long_phase.max_seq_length={long} must exceed data.max_seq_length="
                          f"{cfg.data.max_seq_length} (the first phase's length); raise it, or set it to null for "
                          "no long phase")
    if arch != "bert" and objective != "mlm":
        # ModernBertForMaskedLM has no pooler / sentence head; ELECTRA's discriminator has its own objective.
        raise ConfigError(f"data.objective={objective}: model.architecture={arch} trains on masked-LM examples only "
                          f"(no sentence-pair head); set data.objective=mlm, or model.architecture=bert for {objective}")
    if cfg.corpus.include_task_text and not (cfg.finetune.train_file or cfg.finetune.hub_dataset):
        raise ConfigError("corpus.include_task_text=true adds the fine-tuning task's training texts to the corpus, "
                          "but the task has no training data; set finetune.train_file (or finetune.hub_dataset), "
                          "or corpus.include_task_text=false")


def to_dict(cfg: Any) -> dict:
    """Nested plain dict (tuples become lists) of a config, suitable for YAML."""
    out = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[f.name] = v
    return out


#: Settings added after runs were already made with this package, each with the value that does what the
#: package did before it existed. At that value they stay out of the fingerprints that decide whether a
#: finished pretraining or fine-tuning seed is reused (:func:`fingerprint_dict`), so upgrading keeps those
#: results; should a default change later, the runs made under the old one are not mistaken for runs of the
#: new one. Every new setting goes here.
ADDED_LATER = {"corpus": {"include_task_text": False}, "tokenizer": {"type": "wordpiece"},
               "model": {"tie_word_embeddings": None, "extend_positions": False},
               "pretrain": {"batch_ramp": 0.0, "long_phase": to_dict(LongPhaseConfig())},
               "finetune": {"embedding_learning_rate": None, "long_documents": "truncate", "window_overlap": None,
                            "window_pooling": "mean", "max_windows": 16}}


def fingerprint_dict(cfg: "Config") -> dict:
    """:func:`to_dict` of ``cfg`` without the :data:`ADDED_LATER` settings at the value they had in effect
    before they existed."""
    d = to_dict(cfg)
    for section, before in ADDED_LATER.items():
        for name, value in before.items():
            if d[section].get(name) == value:
                d[section].pop(name, None)
    return d


# ----------------------------------------------------------------------------------------------
# Recipes and overrides
# ----------------------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    """Names of the recipes packaged in ``mlm_pretrain/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def recipe_path(name_or_file: str) -> Path:
    """A packaged recipe name (``tiny``) or a YAML file path."""
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.is_file():  # a folder named like a recipe is not a recipe
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist; packaged recipes: {', '.join(recipe_names())}")
        return p
    packaged = CONFIG_DIR / f"{name_or_file}.yaml"
    if not packaged.is_file():
        raise ConfigError(f"no packaged recipe named {name_or_file!r}; choose one of "
                          f"{', '.join(recipe_names())} or pass a YAML file path")
    return packaged


def load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:  # a recipe may extend another one: ``base: tiny``
        data = _merge(load_yaml(recipe_path(base)), data)
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """``pretrain.max_steps=200`` -> ("pretrain.max_steps", 200); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. pretrain.max_steps=200)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def _unflatten(flat: dict[str, Any]) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = nested
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return nested


#: Within a section, the keys that read local files and the keys that read a Hub dataset instead: a layer
#: (a recipe over its base, the overrides over the recipe) that sets the files and not the Hub dataset
#: drops the Hub dataset of the layers below, so ``corpus.files=[my.txt]`` or ``finetune.train_file=my.csv``
#: on the command line replaces a recipe's Hub data. Setting the Hub dataset needs no such rule: it wins
#: over files whenever it is set.
LOCAL_OVER_HUB = {"corpus": ("files",), "finetune": ("train_file",)}
HUB_KEYS = ("hub_dataset", "hub_config")


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base`` (nested), with :data:`LOCAL_OVER_HUB`'s rule."""
    over = dict(over)
    for section, file_keys in LOCAL_OVER_HUB.items():
        layer = over.get(section)
        if (isinstance(layer, dict) and any(k in layer for k in file_keys)
                and not any(k in layer for k in HUB_KEYS)):
            over[section] = {**layer, **dict.fromkeys(HUB_KEYS)}
    return _merge_nested(base, over)


def _merge_nested(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge_nested(out[k], v)
        else:
            out[k] = v
    return out


def load_config(config: Optional[str] = None, overrides: Optional[list[str]] = None) -> Config:
    """Defaults < recipe (packaged name or YAML file; default ``tiny``) < ``key=value`` overrides."""
    data = load_yaml(recipe_path(config or DEFAULT_RECIPE))
    if overrides:
        data = _merge(data, _unflatten(dict(parse_override(o) for o in overrides)))
    return from_dict(data)


def save_resolved(cfg: Config, path: Path | str) -> Path:
    """Write the resolved config as YAML (``<output_dir>/config.yaml`` by convention)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(path)
    return path


def resolve_path(path: str | Path) -> Path:
    """A user path: as given when it exists (or is absolute), else relative to the project checkout
    (so packaged recipes find the bundled ``data/`` from any working directory of a clone)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return p
    alt = PROJECT_ROOT / p
    return alt if alt.exists() else p
