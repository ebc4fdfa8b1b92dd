"""Text in, token ids out: fetching, cleaning, tokenising, the vocabulary and the held-out split."""
from __future__ import annotations

import codecs
import collections
import functools
import hashlib
import os
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from .atomic import write_atomically

TIMEMACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIMEMACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIMEMACHINE_FILE = "timemachine.txt"
MAX_TEXT_BYTES = 50 * 1024 * 1024  # a text file larger than this is refused before it is read
# A text's first bytes that name its encoding; UTF-32's little-endian mark begins with UTF-16's, so first
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
UNK = "<unk>"
NON_LETTERS = re.compile(r"[\W\d_]+")  # anything but a letter of some alphabet


class CorpusError(ValueError):
    """The text could not be had or used; the message says what to do."""


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "deeprnn"


HOW_TO_FIX = ("set DEEPRNN_DATA_DIR to a folder holding a verified timemachine.txt, "
              "or use your own text (--corpus PATH) or the offline corpus (--corpus pydocs)")


def timemachine_path(url: str | None = None, cache: Path | None = None) -> Path:
    """The verified Time Machine file: DEEPRNN_DATA_DIR's copy, else the cache, else a download."""
    data_dir = os.environ.get("DEEPRNN_DATA_DIR")
    if data_dir and (Path(data_dir) / TIMEMACHINE_FILE).is_file():
        path = Path(data_dir) / TIMEMACHINE_FILE
        if sha1_of(path) != TIMEMACHINE_SHA1:
            raise CorpusError(f"{path} does not match the book's SHA-1 {TIMEMACHINE_SHA1}: "
                              f"replace it with the original file, or {HOW_TO_FIX}")
        return path
    cached = (cache or cache_dir()) / TIMEMACHINE_FILE
    if cached.is_file() and sha1_of(cached) == TIMEMACHINE_SHA1:
        return cached
    return _download_verified(url or TIMEMACHINE_URL, cached)


def _download_verified(url: str, target: Path) -> Path:
    """Download beside the target, renamed to it only once its hash is right."""
    def download(out) -> None:
        digest = hashlib.sha1()
        with urllib.request.urlopen(url, timeout=30) as response:
            for block in iter(lambda: response.read(1 << 16), b""):
                out.write(block)
                digest.update(block)
        if digest.hexdigest() != TIMEMACHINE_SHA1:
            raise CorpusError(f"the download from {url} has SHA-1 {digest.hexdigest()}, not the book's "
                              f"{TIMEMACHINE_SHA1}: {HOW_TO_FIX}")

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, download)
    except OSError as err:
        raise CorpusError(f"could not download The Time Machine from {url} ({err}): {HOW_TO_FIX}") from err
    return target


def python_docs_text() -> str:
    """English prose that every CPython ships: the reference documentation's topics."""
    from pydoc_data.topics import topics
    return "\n".join(topics[key] for key in sorted(topics))


@dataclass(frozen=True)
class SourceText:
    text: str
    name: str
    notice: str | None = None  # something the user should see, such as a fallback


def read_text_file(path: str | Path) -> tuple[str, str | None]:
    """A user's text file as str (see decode_text); invalid sequences are replaced and counted in the notice.
    A pipe reads too (`--corpus /dev/stdin`, `--corpus <(zcat book.txt.gz)`), up to the size limit."""
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{path} is a folder; name a text file in it")
    limit_mb, size = MAX_TEXT_BYTES // 2**20, path.stat().st_size if path.is_file() else 0
    if size > MAX_TEXT_BYTES:  # said before a byte is read; a pipe's size is known only by reading it
        raise CorpusError(f"{path} is {size / 2**20:.0f} MB; the limit is {limit_mb} MB")
    try:
        with path.open("rb") as file:
            if file.isatty():  # /dev/stdin in a terminal would wait, silently, for the text to be typed
                raise CorpusError(f"{path} is a terminal; pipe the text in: "
                                  f"cat book.txt | python -m deeprnn train --corpus {path}")
            data = file.read(MAX_TEXT_BYTES + 1)
    except FileNotFoundError:
        raise CorpusError(f"no such text file: {path}") from None
    except OSError as err:
        raise CorpusError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_TEXT_BYTES:
        raise CorpusError(f"{path} gives more than {limit_mb} MB, the limit")
    return decode_text(data, path.name)


def decode_text(data: bytes, name: str = "the text") -> tuple[str, str | None]:
    """Bytes to text: UTF-8, or UTF-16 or UTF-32 where a byte-order mark says so (Windows' Notepad
    saves "Unicode" text as UTF-16, whose every other byte of English is NUL); a UTF-8 byte-order mark
    is dropped, not learnt as a character. Refuses binary data; replaces invalid sequences and says
    how many. Line breaks become newlines whatever system wrote them, as Python's text files read them:
    the raw cleaning would otherwise learn Windows' carriage return as a character of its own."""
    encoding = next((enc for mark, enc in BYTE_ORDER_MARKS if data.startswith(mark)), "utf-8-sig")
    text = data.decode(encoding, errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        raise CorpusError(f"{name} looks binary (it holds NUL bytes); give a plain-text file "
                          "(UTF-8, or UTF-16 with a byte-order mark)")
    replaced = text.count("\ufffd") - data.decode(encoding, errors="ignore").count("\ufffd")
    label = encoding.upper().removesuffix("-SIG")
    notice = f"{name}: {replaced} invalid {label} byte sequences were replaced" if replaced else None
    return text, notice


def load_source(corpus: str, text: str | None = None) -> SourceText:
    """Resolve the corpus name of a config to its text."""
    if corpus == "timemachine":
        try:
            return SourceText(timemachine_path().read_text(encoding="utf-8"), "The Time Machine")
        except CorpusError as err:
            notice = f"The Time Machine could not be had ({err}); using the offline Python-docs corpus instead."
            return SourceText(python_docs_text(), "Python docs", notice)
    if corpus == "pydocs":
        return SourceText(python_docs_text(), "Python docs")
    if corpus == "text":
        return SourceText(text or "", "your text")
    content, notice = read_text_file(corpus)
    return SourceText(content, Path(corpus).name, notice)


def preprocess_lines(text: str, mode: str) -> list[str]:
    """The book's cleaning, letters only and lower case: "spaced" cleans the whole text at once, as
    its current edition does, so a line break becomes a space; "book" cleans line by line, as its first
    edition and the reference do, and the lines are then joined without a separator. "raw" keeps the
    text as one line. Letters are those of any alphabet: on the book's text, which is ASCII, that is its
    a to z; on a French or Russian one the book's [^A-Za-z] left "été" as "t" and Cyrillic as nothing."""
    if mode == "raw":
        return [text]
    if mode == "spaced":
        return [NON_LETTERS.sub(" ", text).lower()]
    return [NON_LETTERS.sub(" ", line).strip().lower() for line in text.splitlines()]


def tokenize(lines: list[str], tokens: str) -> list[str]:
    """Character tokens join the lines without a separator, as the book does."""
    if tokens == "char":
        return [ch for line in lines for ch in line]
    return [word for line in lines for word in line.split()]


class Vocab:
    """Tokens by falling frequency (ties in order of first appearance) after <unk> at index 0."""

    def __init__(self, tokens: list[str] | None = None, min_freq: int = 1, max_size: int = 0,
                 idx_to_token: list[str] | None = None):
        if idx_to_token is None:
            counts = collections.Counter(tokens or [])
            ordered = sorted(counts.items(), key=lambda kv: kv[1], reverse=True)
            kept = [tok for tok, n in ordered if n >= min_freq and tok != UNK]
            idx_to_token = [UNK] + (kept[:max_size - 1] if max_size else kept)
        self.idx_to_token = list(idx_to_token)
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}

    def __len__(self) -> int:
        return len(self.idx_to_token)

    def __getitem__(self, token: str) -> int:
        return self.token_to_idx.get(token, 0)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.token_to_idx.get(tok, 0) for tok in tokens]

    def decode(self, ids, separator: str = "") -> str:
        return separator.join(self.idx_to_token[i] for i in ids)


@dataclass(frozen=True)
class Codec:
    """Text to ids and back, cleaned and tokenised the way the corpus was."""

    vocab: Vocab
    tokens: str = "char"
    preprocess: str = "spaced"

    @property
    def separator(self) -> str:
        return "" if self.tokens == "char" else " "

    def encode(self, text: str) -> list[int]:
        return self.vocab.encode(tokenize(preprocess_lines(text, self.preprocess), self.tokens))

    def decode(self, ids) -> str:
        return self.vocab.decode(ids, self.separator)

    def tokens_for(self, characters: int) -> int:
        """About how many tokens make this many characters of text (a word and its space: about six)."""
        return characters if self.tokens == "char" else max(1, characters // 6)


@dataclass(frozen=True)
class Corpus:
    """Token ids split into a training head and a held-out tail."""

    train: list[int]
    val: list[int]
    codec: Codec
    name: str
    notices: tuple[str, ...] = ()

    @property
    def vocab(self) -> Vocab:
        return self.codec.vocab


CORPUS_FIELDS = ("corpus", "text", "tokens", "preprocess", "min_freq", "max_vocab", "max_tokens", "val_fraction")


def build_corpus(config) -> Corpus:
    """The corpus a RunConfig names, cleaned, tokenised, truncated and split.

    Remembered for the last few settings (and a file's size and time), so a new run on the same
    text, such as one more layer on the page, starts without reading and tokenising it again.
    """
    path = Path(config.corpus)
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if config.corpus not in ("timemachine", "pydocs", "text") \
        and path.is_file() else None
    return _cached_corpus(tuple(getattr(config, f) for f in CORPUS_FIELDS), stamp)


@functools.lru_cache(maxsize=4)
def _cached_corpus(values: tuple, stamp) -> Corpus:
    settings = SimpleNamespace(**dict(zip(CORPUS_FIELDS, values)))
    source = load_source(settings.corpus, settings.text)
    return corpus_from_text(source.text, settings, source.name, source.notice)


def corpus_from_text(text: str, config, name: str = "text", notice: str | None = None) -> Corpus:
    if not text.strip():
        raise CorpusError(f"{name} is empty: give a text with some words in it")
    tokens = tokenize(preprocess_lines(text, config.preprocess), config.tokens)
    if not any(token.strip() for token in tokens):
        raise CorpusError(f"{name} has no letters left after the book's cleaning; keep the text as it is: "
                          "cleaning \"none\" on the page, --preprocess raw")
    notices = [notice] if notice else []
    vocab = Vocab(tokens, config.min_freq, config.max_vocab)
    if len(vocab) < 2:  # a model of one token learns nothing, at a perfect perplexity of 1
        raise CorpusError(f"every token of {name} reads as {UNK} with min_freq {config.min_freq} and max_vocab "
                          f"{config.max_vocab}: lower min_freq, or raise max_vocab (0 keeps every token)")
    if config.max_vocab and len(set(tokens)) + 1 > config.max_vocab:
        notices.append(f"vocabulary capped at the {config.max_vocab} most frequent tokens; "
                       f"the rest map to {UNK}")
    ids = vocab.encode(tokens)
    if config.max_tokens > 0:
        ids = ids[:config.max_tokens]
    n_val = int(len(ids) * config.val_fraction)
    train, val = ids[:len(ids) - n_val], ids[len(ids) - n_val:]
    return Corpus(train, val, Codec(vocab, config.tokens, config.preprocess), name, tuple(notices))
