"""Hostile uploads and texts: each ends in a corpus or a clean error that says what is wrong."""
import contextlib
import os
import pty
import random
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deeprnn.batches import TooShortError, check_length
from deeprnn.config import RunConfig
from deeprnn import corpus as corpus_module
from deeprnn.controls import text_from_upload
from deeprnn.corpus import MAX_TEXT_BYTES, CorpusError, corpus_from_text, read_text_file

CLEAN_ERRORS = (CorpusError, TooShortError)


def load_upload(data: bytes, tokens: str = "char"):
    """What the page does with an upload, up to the corpus the worker will train on."""
    text, notice = text_from_upload("upload.txt", data)
    config = RunConfig(corpus="text", text=text, tokens=tokens, batch=4, steps=8)
    corpus = corpus_from_text(text, config)
    check_length(len(corpus.train), config.batch, config.steps)
    return corpus, notice


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4000), st.sampled_from(["char", "word"]))
def test_random_bytes_give_a_corpus_or_a_clean_error(data, tokens):
    try:
        corpus, _ = load_upload(data, tokens)
    except CLEAN_ERRORS as err:
        assert str(err)
    else:
        assert len(corpus.vocab) >= 2 and corpus.train


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"   \n\t  \n", "empty"),
    (b"\x00\x01\x02binary\x00", "binary"),
    (b"12345 67890 !!!", "no letters"),
    (b"a short text", "needs at least"),
])
def test_bad_uploads_say_what_is_wrong(data, message):
    with pytest.raises(CLEAN_ERRORS, match=message):
        load_upload(data)


def test_invalid_utf8_is_replaced_with_a_notice():
    data = ("the time machine " * 20).encode() + b"\xff\xfe\xfa" + b" more text" * 5
    corpus, notice = load_upload(data)
    assert "3 invalid UTF-8 byte sequences were replaced" in notice or "invalid UTF-8" in notice


def test_too_short_message_names_the_minimum():
    with pytest.raises(TooShortError, match=r"batch 4 x steps 8 needs at least 41"):
        check_length(40, 4, 8)


def test_oversized_file_is_refused_before_it_is_read(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: 50 MB on paper, nothing on disk
    monkeypatch.setattr(type(big), "open", lambda self, *args: pytest.fail("the file was read"))
    with pytest.raises(CorpusError, match="the limit is 50 MB"):
        read_text_file(big)
    with pytest.raises(CorpusError, match="the limit is 50 MB"):
        text_from_upload("big.txt", b"x" * (MAX_TEXT_BYTES + 1))


def test_a_pipe_reads_as_a_text_file_up_to_the_limit(monkeypatch):
    """`--corpus /dev/stdin` or `<(zcat book.gz)`: a stream has no size to check first, so it is read
    up to the limit and refused past it."""
    text = "the time traveller smiled\n" * 100
    with pipe_giving(text.encode()) as path:
        assert read_text_file(path)[0] == text
    monkeypatch.setattr(corpus_module, "MAX_TEXT_BYTES", 2**20)
    with pipe_giving(b"endless " * 2**18) as path, pytest.raises(CorpusError, match="more than 1 MB"):  # 2 MB
        read_text_file(path)


def test_a_terminal_is_refused_rather_than_waited_on():
    """`--corpus /dev/stdin` typed without a pipe (or a --resume of such a run) had waited, silently, for
    the book to be typed in."""
    leader, follower = pty.openpty()
    os.write(leader, b"\x04")  # an end of input typed: a read that waits gets it, and the test never hangs
    try:
        with pytest.raises(CorpusError, match="is a terminal; pipe the text in"):
            read_text_file(os.ttyname(follower))
    finally:
        os.close(leader)
        os.close(follower)


@contextlib.contextmanager
def pipe_giving(data: bytes):
    """The path of a pipe that a thread fills with `data`, until the reader stops reading."""
    read_end, write_end = os.pipe()

    def write():
        with os.fdopen(write_end, "wb") as pipe, contextlib.suppress(BrokenPipeError):
            pipe.write(data)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        yield f"/dev/fd/{read_end}"
    finally:
        os.close(read_end)  # the writer's next write fails, and it ends
        writer.join(5)


def test_huge_word_vocabulary_is_capped_with_a_notice():
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(30_000)]
    config = RunConfig(corpus="text", text=" ".join(words), tokens="word", max_vocab=1000)
    corpus = corpus_from_text(config.text, config)
    assert len(corpus.vocab) == 1000 and any("capped" in n for n in corpus.notices)


@pytest.mark.parametrize("limits", [{"max_vocab": 1}, {"min_freq": 1000}])
def test_a_vocabulary_of_nothing_but_unk_is_refused(limits):
    """Every token <unk>: the model would reach a perplexity of exactly 1 and learn nothing."""
    config = RunConfig(corpus="text", text="the time machine " * 50, tokens="word", **limits)
    with pytest.raises(CorpusError, match="every token of text reads as <unk>.*lower min_freq, or raise max_vocab"):
        corpus_from_text(config.text, config)
