import codecs
import hashlib
import http.server
import re
import shutil
import threading
from pathlib import Path

import pytest

from deeprnn import corpus as corpus_mod
from deeprnn.config import RunConfig
from deeprnn.corpus import (TIMEMACHINE_SHA1, CorpusError, Vocab, build_corpus, corpus_from_text,
                            decode_text, load_source, preprocess_lines, timemachine_path, tokenize)


def test_data_dir_copy_is_verified_and_used(monkeypatch):
    path = timemachine_path()
    assert path.parent == Path(corpus_mod.os.environ["DEEPRNN_DATA_DIR"])
    assert hashlib.sha1(path.read_bytes()).hexdigest() == TIMEMACHINE_SHA1


def test_corrupted_copy_is_refused(tmp_path, monkeypatch):
    good = timemachine_path().read_bytes()
    (tmp_path / "timemachine.txt").write_bytes(good[:-1] + b"X")
    monkeypatch.setenv("DEEPRNN_DATA_DIR", str(tmp_path))
    with pytest.raises(CorpusError, match="SHA-1.*DEEPRNN_DATA_DIR"):
        timemachine_path()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    """Serves tmp_path/www on 127.0.0.1; yields its base URL."""
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: _Handler(*a, directory=str(root), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


def test_download_is_fetched_verified_and_cached(file_server, tmp_path, monkeypatch):
    root, base = file_server
    shutil.copy(timemachine_path(), root / "timemachine.txt")
    monkeypatch.delenv("DEEPRNN_DATA_DIR")
    cache = tmp_path / "c"
    path = timemachine_path(f"{base}/timemachine.txt", cache)
    assert path == cache / "timemachine.txt"
    assert hashlib.sha1(path.read_bytes()).hexdigest() == TIMEMACHINE_SHA1
    (root / "timemachine.txt").unlink()  # a second call must not need the server
    assert timemachine_path(f"{base}/timemachine.txt", cache) == path


def test_bad_download_leaves_no_file(file_server, tmp_path, monkeypatch):
    root, base = file_server
    (root / "timemachine.txt").write_text("not the book")
    monkeypatch.delenv("DEEPRNN_DATA_DIR")
    cache = tmp_path / "c"
    with pytest.raises(CorpusError, match="SHA-1"):
        timemachine_path(f"{base}/timemachine.txt", cache)
    with pytest.raises(CorpusError, match="could not download"):
        timemachine_path(f"{base}/missing.txt", cache)
    assert list(cache.iterdir()) == []


def test_unreachable_book_falls_back_to_python_docs_with_notice(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPRNN_DATA_DIR")
    monkeypatch.setattr(corpus_mod, "TIMEMACHINE_URL", "http://127.0.0.1:9/none")
    source = load_source("timemachine")
    assert source.name == "Python docs"
    assert "could not be had" in source.notice
    assert "lambda" in source.text


def test_book_cleanings_and_char_tokens():
    lines = preprocess_lines("The Time-Machine!\n\n  by H. G. Wells", "book")
    assert lines == ["the time machine", "", "by h g wells"]
    assert tokenize(lines, "char")[:4] == ["t", "h", "e", " "]
    assert "".join(tokenize(lines, "char")) == "the time machineby h g wells"  # the first edition joins lines
    spaced = preprocess_lines("The Time-Machine!\n\n  by H. G. Wells", "spaced")
    assert "".join(tokenize(spaced, "char")) == "the time machine by h g wells"  # the current edition
    assert tokenize(lines, "word") == ["the", "time", "machine", "by", "h", "g", "wells"]
    assert preprocess_lines("Keep, Case!", "raw") == ["Keep, Case!"]


def test_vocab_orders_by_frequency_with_unk_first_and_min_freq():
    vocab = Vocab(list("abbccc"), min_freq=2)
    assert vocab.idx_to_token == ["<unk>", "c", "b"]
    assert vocab["a"] == 0 and vocab["c"] == 1
    assert vocab.decode(vocab.encode(list("cb"))) == "cb"
    assert Vocab(list("abbccc"), max_size=2).idx_to_token == ["<unk>", "c"]


def test_book_corpus_matches_the_book():
    corpus = build_corpus(RunConfig(preprocess="book", val_fraction=0.0, max_tokens=10_000))
    assert corpus.codec.decode(corpus.train[:40]) == "the time machine by h g wellsithe time t"  # glued at line breaks
    assert len(corpus.vocab) == 28  # <unk>, space and 26 letters
    assert corpus.vocab.idx_to_token[:4] == ["<unk>", " ", "e", "t"]
    assert len(corpus.train) == 10_000 and corpus.val == []


def test_held_out_split_is_the_tail():
    config = RunConfig(corpus="text", text="abcdefghij" * 10, preprocess="raw", val_fraction=0.2)
    corpus = corpus_from_text(config.text, config)
    assert len(corpus.val) == 20 and len(corpus.train) == 80
    assert corpus.codec.decode(corpus.val) == "abcdefghij" * 2


def test_empty_and_binary_text_are_clear_errors():
    config = RunConfig()
    with pytest.raises(CorpusError, match="empty"):
        corpus_from_text("   \n", config)
    with pytest.raises(CorpusError, match="no letters") as stripped:
        corpus_from_text("123 456 ...", config)
    assert 'cleaning "none" on the page, --preprocess raw' in str(stripped.value)  # the way out, in both
    assert corpus_from_text("123 456 ... " * 10, RunConfig(preprocess="raw")).train
    with pytest.raises(CorpusError, match="binary"):
        decode_text(b"abc\x00def")
    text, notice = decode_text(b"ok \xff\xfe ok")
    assert text.startswith("ok ") and "2 invalid" in notice


TEXT = "The Time Traveller (for so it will be convenient to speak of him), café "


@pytest.mark.parametrize("data", [
    codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"),  # Windows Notepad's "Unicode"
    codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"),
    codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"),
    codecs.BOM_UTF8 + TEXT.encode(),  # the mark is dropped, not learnt as a character
], ids=["utf-16-le", "utf-16-be", "utf-32-le", "utf-8 with a mark"])
def test_a_text_with_a_byte_order_mark_is_read_in_the_encoding_it_names(data):
    assert decode_text(data, "notes.txt") == (TEXT, None)


def test_line_breaks_read_as_newlines_whatever_system_wrote_them():
    text, _ = decode_text(b"windows\r\nold mac\runix\n")
    assert text == "windows\nold mac\nunix\n"
    corpus = corpus_from_text(text * 100, RunConfig(preprocess="raw", val_fraction=0))
    assert "\r" not in corpus.vocab.idx_to_token


def test_utf16_without_a_byte_order_mark_is_refused_with_what_to_give_instead():
    with pytest.raises(CorpusError, match=r"looks binary .* UTF-16 with a byte-order mark"):
        decode_text(TEXT.encode("utf-16-le"))


def test_the_cleaning_keeps_the_letters_of_any_alphabet_and_the_books_text_as_the_book_cleans_it():
    text = "Été à Paris, 1895: Über den Путешественник!\nthe end"
    assert preprocess_lines(text, "spaced") == ["été à paris über den путешественник the end"]
    assert preprocess_lines(text, "book") == ["été à paris über den путешественник", "the end"]
    book = timemachine_path().read_text()
    assert preprocess_lines(book, "spaced") == [re.sub("[^A-Za-z]+", " ", book).lower()]  # the book's own


def test_user_file_and_missing_file(tmp_path):
    (tmp_path / "mine.txt").write_text("hello world " * 50)
    corpus = build_corpus(RunConfig(corpus=str(tmp_path / "mine.txt"), val_fraction=0))
    assert corpus.name == "mine.txt" and set(corpus.vocab.idx_to_token) == {"<unk>", " ", *"helowrd"}
    with pytest.raises(CorpusError, match="no such"):
        build_corpus(RunConfig(corpus=str(tmp_path / "nope.txt")))


def test_a_cache_folder_that_cannot_be_made_falls_back_to_python_docs(monkeypatch, tmp_path):
    """A cache under a file (or a read-only home) had ended the start with a bare NotADirectoryError."""
    monkeypatch.delenv("DEEPRNN_DATA_DIR")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file" / "cache"))
    monkeypatch.setattr(corpus_mod, "TIMEMACHINE_URL", "http://127.0.0.1:9/none")
    source = load_source("timemachine")
    assert source.name == "Python docs"
    assert "Not a directory" in source.notice


def test_python_docs_corpus_needs_no_download(monkeypatch):
    monkeypatch.delenv("DEEPRNN_DATA_DIR")
    corpus = build_corpus(RunConfig(corpus="pydocs", max_tokens=5000))
    letters = set(corpus.vocab.idx_to_token) - {"<unk>", " "}
    assert len(corpus.train) + len(corpus.val) == 5000 and all(t.isalpha() and t.islower() for t in letters)
    assert set("abcdefghijklmnopqrstuvwxyz") <= letters  # (and "ß", from str.casefold's documentation)
