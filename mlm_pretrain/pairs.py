"""Documents -> sentences -> NSP / SOP / MLM examples: pure functions of text, token ids and a seeded RNG.

    mlm-pretrain prepare --config tiny       # runs these through mlm_pretrain.prepare

No I/O and no tokenizer here: sentence splitting works on strings, example construction on lists of
token ids, and every random choice comes from the ``random.Random`` passed in, so the functions are
unit-tested on hand-written ids and a run is reproducible from its seed.

Example layouts (``max_seq_length`` counts the special tokens):

* ``nsp`` (BERT): ``[CLS] A [SEP] B [SEP]``; label 0 = B is the real continuation, 1 = B was drawn
  from a different document (``BertForPreTraining``'s convention).
* ``sop`` (ALBERT): A and B always consecutive; label 1 = the two segments were swapped.
* ``mlm`` (RoBERTa style): ``[CLS] text [SEP]``, full-length blocks of contiguous text across
  document boundaries (a ``[SEP]`` marks a boundary inside a block); no pair label.

The special tokens around a text and a pair are the tokenizer's own (a :class:`Template`, read off its
post-processor by :func:`mlm_pretrain.examples.template_of`): ``[CLS] A [SEP] B [SEP]`` with token types
0/1 for BERT's, ``<s> A </s></s> B </s>`` with types 0 for RoBERTa's.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from itertools import chain
from random import Random
from typing import NamedTuple, Optional, Sequence

Ids = list[int]
Document = Sequence[Ids]  # one document = its sentences as token ids


class Example(NamedTuple):
    input_ids: Ids
    token_type_ids: Ids
    next_sentence_label: Optional[int]  # None for the mlm objective


#: Placeholders in a :class:`Template` for the first and the second text.
SEGMENT_A, SEGMENT_B = -1, -2


class Template(NamedTuple):
    """Where a tokenizer puts its special tokens around one text (``single``) and a pair (``pair``), as
    ``(token id, token type)`` entries, :data:`SEGMENT_A` / :data:`SEGMENT_B` standing for the texts (their
    entry's type is the text's); ``separator``: the id between two documents inside an ``mlm`` block."""

    single: tuple[tuple[int, int], ...]
    pair: tuple[tuple[int, int], ...]
    separator: int

    @classmethod
    def bert(cls, cls_id: int, sep_id: int) -> "Template":
        """``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]``, token types 0 then 1."""
        return cls(((cls_id, 0), (SEGMENT_A, 0), (sep_id, 0)),
                   ((cls_id, 0), (SEGMENT_A, 0), (sep_id, 0), (SEGMENT_B, 1), (sep_id, 1)), sep_id)

    def specials(self, pair: bool) -> int:
        """Special tokens added around one text (or a pair)."""
        return sum(1 for i, _ in (self.pair if pair else self.single) if i >= 0)

    def build(self, tokens_a: Ids, tokens_b: Optional[Ids] = None) -> tuple[Ids, Ids]:
        """(input ids, token type ids) of one text, or of a pair when ``tokens_b`` is given."""
        ids: Ids = []
        types: Ids = []
        for i, t in self.single if tokens_b is None else self.pair:
            part = tokens_a if i == SEGMENT_A else tokens_b if i == SEGMENT_B else [i]
            ids.extend(part)
            types.extend([t] * len(part))
        return ids, types


# ----------------------------------------------------------------------------------------------
# Sentence splitting
# ----------------------------------------------------------------------------------------------
# A paragraph starts at a newline followed by whitespace (indentation or a blank line); any other
# newline is a hard wrap inside a paragraph (Reuters, e-mail, Project Gutenberg text).
_PARAGRAPH = re.compile(r"\n(?=\s)")
# A candidate sentence end: terminal punctuation, optional closing quotes/brackets, whitespace; the
# character after it (checked in Python) must start a sentence: upper case, a digit or an opening quote.
_END = re.compile(r"""([.!?]+)(["'\u201d\u2019)\]]*)\s+""")
_OPENERS = "\"'\u201c\u2018(["
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")  # U.S  U.K  e.g  p.m  (the final dot is the candidate)
#: Always followed by a name: never a sentence end.
TITLES = frozenset("""Mr Mrs Ms Messrs Mme Mlle Dr Prof Sen Rep Gov Gen Col Lt Sgt Capt Cmdr Adm Maj Rev Hon
    St Mt Ft Pres Supt Insp Det""".split())
#: Usually inside a sentence; a sentence end only when a typical sentence opener follows.
ABBREVIATIONS = frozenset("""jr sr bros co vs etc approx dept est fig figs vol no nos art ch sec pp p ed eds
    jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun
    ave blvd rd hwy""".split())
#: Words that typically open a sentence (decide the ambiguous cases above).
STARTERS = frozenset("""The A An It Its He She His Her They Their Them We Our I In On At To By From With Of
    This That These Those There Here But And Or Yet So However Also As If When While After Before Since
    Although Though Because For Under Over Some Most Many Much Such Other Others Another Each Every All
    Both No Not One Two Three Last Next Earlier Later Meanwhile Analysts Officials Shares Sales Prices
    What Why How Who Where Which""".split())


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs of running text with hard wraps undone (whitespace collapsed to single spaces)."""
    out = []
    for para in _PARAGRAPH.split(text):
        para = " ".join(para.split())
        if para:
            out.append(para)
    return out


def _is_sentence_end(para: str, m: re.Match) -> bool:
    nxt = para[m.end():].lstrip(_OPENERS)
    if not nxt or not (nxt[0].isupper() or nxt[0].isdigit()):
        return False  # "e.g. something", "Why?" he asked, "3.5 mln. and"
    if m.group(1) != ".":
        return True  # ! ? ... are sentence ends before a capital
    word = para[para.rfind(" ", 0, m.start()) + 1:m.start()].lstrip(_OPENERS)
    if not word:
        return True
    if len(word) == 1 and word.isalpha():
        return False  # an initial: John F. Kennedy
    if word in TITLES:
        return False  # Dr. Smith
    if _INITIALISM.fullmatch(word) or word.lower() in ABBREVIATIONS:
        # U.S. Treasury / Jan. 5 / No. 1 inside a sentence, but "... in the U.S. The company ..."
        next_word = nxt.split(" ", 1)[0].strip("\"'\u201c\u201d\u2018\u2019()[],;:")
        return next_word in STARTERS
    return True


def split_sentences(text: str) -> list[str]:
    """Rule-based sentence splitter for running text; needs no download.

    Hard-wrapped lines are joined first (a newline followed by whitespace starts a paragraph, and a
    paragraph always ends a sentence). Inside a paragraph a sentence ends at ``.``, ``!`` or ``?``
    (optionally followed by closing quotes or brackets) when the next word starts with a capital
    letter, a digit or an opening quote, except after initials (``J.``), titles (``Dr.``) and, unless
    a typical sentence opener follows, initialisms (``U.S.``) and common abbreviations (``Jan.``,
    ``No.``, ``Co.``). Decimals (``3.5``) never split: no space follows the dot.
    """
    sentences = []
    for para in split_paragraphs(text):
        start = 0
        for m in _END.finditer(para):
            if _is_sentence_end(para, m):
                sentences.append(para[start:m.start(2) + len(m.group(2))])
                start = m.end()
        if start < len(para):
            sentences.append(para[start:])
    return sentences


def split_lines(text: str) -> tuple[list[str], int]:
    """One sentence per line (pre-split text). Returns (sentences, number of empty lines dropped)."""
    lines = text.split("\n")
    sentences = [s for s in (line.strip() for line in lines) if s]
    return sentences, len(lines) - len(sentences)


def split_document(text: str, mode: str) -> tuple[list[str], int]:
    """(sentences, empty lines dropped) with ``mode`` ``line`` or ``rules``."""
    if mode == "line":
        return split_lines(text)
    if mode == "rules":
        return split_sentences(text), 0
    raise ValueError(f"unknown sentence split mode {mode!r}")


# ----------------------------------------------------------------------------------------------
# Seeds (the held-out rule is mlm_pretrain.corpus.is_validation_document)
# ----------------------------------------------------------------------------------------------
def group_seed(seed: int, pass_index: int, first_text: str) -> int:
    """Seed for one group of documents in one ``dupe_factor`` pass: from the content, not the
    position, so it does not depend on how the corpus is split among processes or workers."""
    h = hashlib.blake2b(f"{seed}\0{pass_index}\0".encode() + first_text.encode("utf-8", "replace"),
                        digest_size=8)
    return int.from_bytes(h.digest(), "big")


# ----------------------------------------------------------------------------------------------
# Example construction
# ----------------------------------------------------------------------------------------------
def truncate_seq_pair(tokens_a: Ids, tokens_b: Ids, max_num_tokens: int, rng: Random) -> tuple[Ids, Ids]:
    """Trim the longer side, one token at a time, randomly from its front or back (as Google's BERT),
    until the pair fits. The RNG draws are Google's; the slicing is done once at the end."""
    la, lb = len(tokens_a), len(tokens_b)
    cut = [[0, 0], [0, 0]]  # [side][front, back]
    while la + lb > max_num_tokens:
        side = 0 if la > lb else 1
        cut[side][0 if rng.random() < 0.5 else 1] += 1
        if side == 0:
            la -= 1
        else:
            lb -= 1
    (fa, ba), (fb, bb) = cut
    return tokens_a[fa:len(tokens_a) - ba], tokens_b[fb:len(tokens_b) - bb]


def make_pair(tokens_a: Ids, tokens_b: Ids, label: int, template: Template) -> Example:
    """The pair in the tokenizer's layout (BERT: ``[CLS] A [SEP] B [SEP]``, token types 0 then 1)."""
    return Example(*template.build(tokens_a, tokens_b), label)


def _target_length(max_num_tokens: int, short_seq_prob: float, rng: Random) -> int:
    if rng.random() < short_seq_prob:
        return rng.randint(2, max_num_tokens)
    return max_num_tokens


def pair_examples(documents: Sequence[Document], doc_index: int, rng: Random, *, objective: str,
                  max_seq_length: int, short_seq_prob: float, template: Template,
                  counts: Optional[Counter] = None) -> list[Example]:
    """NSP or SOP examples from ``documents[doc_index]`` (Google's ``create_instances_from_document``).

    Consecutive sentences fill a target length of ``max_seq_length`` less the pair's special tokens
    (BERT's 3; a shorter random one with
    probability ``short_seq_prob``) and the chunk is split at a random sentence boundary into A and B.
    ``nsp``: with probability 0.5 B is replaced by sentences from another document of ``documents``
    (label 1) and the unused sentences are put back. ``sop``: A and B stay consecutive and are swapped
    with probability 0.5 (label 1). Unlike Google's code a one-sentence chunk does not force a random
    B (which skews the labels towards 1): the next sentence is pulled in, a lone last sentence is
    absorbed into the chunk before it, and a last sentence left alone after sentences were put back
    is cut in two (dropped, before the coin flip, when it is a single token). The pair is then
    truncated to fit.
    """
    counts = counts if counts is not None else Counter()
    document = documents[doc_index]
    max_num_tokens = max_seq_length - template.specials(pair=True)
    target = _target_length(max_num_tokens, short_seq_prob, rng)
    examples: list[Example] = []
    chunk: list[Ids] = []
    length, i = 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 2 and length >= target:
            i += 1  # absorb a lone last sentence (often a signature line) instead of leaving it alone
            chunk.append(document[i])
            length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if len(chunk) == 1 and i == len(document) - 1 and len(chunk[0]) < 2:
                counts["skipped_one_token_tail"] += 1  # decided before the coin flip: labels stay balanced
                break
            is_random = objective == "nsp" and rng.random() < 0.5
            if is_random and len(documents) < 2:
                is_random = False  # nothing to draw from (a group of one document)
                counts["random_next_unavailable"] += 1
            if len(chunk) == 1 and not is_random and i + 1 < len(document):
                i += 1  # a single long sentence: its real continuation is the next one
                chunk.append(document[i])
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = list(chain.from_iterable(chunk[:a_end]))
            if is_random:
                target_b = max(1, target - len(tokens_a))
                other = rng.randrange(len(documents) - 1)
                other += other >= doc_index  # any document but this one
                random_doc = documents[other]
                tokens_b = []
                for sentence in random_doc[rng.randrange(len(random_doc)):]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target_b:
                        break
                i -= len(chunk) - a_end  # put the unused sentences back
            elif len(chunk) == 1:  # the last sentence of the document, alone: cut it in two
                cut = rng.randint(1, len(chunk[0]) - 1)
                tokens_a, tokens_b = chunk[0][:cut], chunk[0][cut:]
                counts["sentence_cut_in_two"] += 1
            else:
                tokens_b = list(chain.from_iterable(chunk[a_end:]))
            label = int(is_random)
            if objective == "sop" and rng.random() < 0.5:
                tokens_a, tokens_b, label = tokens_b, tokens_a, 1
            tokens_a, tokens_b = truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
            if tokens_a and tokens_b:
                examples.append(make_pair(tokens_a, tokens_b, label, template))
            else:  # pragma: no cover - both sides are non-empty by construction
                counts["skipped_empty_side"] += 1
            chunk, length = [], 0
        i += 1
    return examples


def mlm_examples(documents: Sequence[Document], rng: Random, *, max_seq_length: int, short_seq_prob: float,
                 template: Template, counts: Optional[Counter] = None) -> list[Example]:
    """``[CLS] text [SEP]`` blocks of contiguous text (RoBERTa style, full length): the documents are
    concatenated with a ``[SEP]`` (``template.separator``) between them and cut every ``max_seq_length``
    less the special tokens (BERT's 2) tokens (a shorter random length with probability ``short_seq_prob``),
    sentence boundaries or not, so the only padding is the group's last block. A block never starts or ends
    with the document ``[SEP]``."""
    max_num_tokens = max_seq_length - template.specials(pair=False)
    sep_id = template.separator
    flat: Ids = []
    for document in documents:
        if flat:
            flat.append(sep_id)
        for sentence in document:
            flat.extend(sentence)
    examples: list[Example] = []
    pos = 0
    while pos < len(flat):
        target = _target_length(max_num_tokens, short_seq_prob, rng)
        start, end = pos, min(pos + target, len(flat))
        pos = end
        while start < end and flat[start] == sep_id:
            start += 1
        while end > start and flat[end - 1] == sep_id:
            end -= 1
        if end > start:
            examples.append(Example(*template.build(flat[start:end]), None))
    return examples


def build_examples(documents: Sequence[Document], rng: Random, *, objective: str, max_seq_length: int,
                   short_seq_prob: float, template: Template,
                   counts: Optional[Counter] = None) -> list[Example]:
    """All examples of one group of documents for one pass. ``documents`` is also the pool that
    random-next sentences are drawn from. Documents with fewer than two sentences yield no NSP/SOP
    examples but stay in the random-next pool."""
    counts = counts if counts is not None else Counter()
    if objective == "mlm":
        return mlm_examples(documents, rng, max_seq_length=max_seq_length, short_seq_prob=short_seq_prob,
                            template=template, counts=counts)
    if objective not in ("nsp", "sop"):
        raise ValueError(f"unknown objective {objective!r}")
    examples: list[Example] = []
    for d, document in enumerate(documents):
        if len(document) < 2:
            continue
        examples.extend(pair_examples(documents, d, rng, objective=objective, max_seq_length=max_seq_length,
                                      short_seq_prob=short_seq_prob, template=template, counts=counts))
    return examples
