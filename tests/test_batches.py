import random

import pytest
import torch

from deeprnn.batches import TooShortError, check_length, eval_chunks, min_tokens, random_batches, sequential_batches


def test_sequential_rows_continue_across_minibatches():
    ids = torch.arange(1000)
    batches = list(sequential_batches(ids, 4, 10, random.Random(0)))
    assert len(batches) > 2
    for x, y in batches:
        assert x.shape == y.shape == (4, 10)
        assert torch.equal(y, x + 1)  # targets are the inputs shifted by one token
    for (x0, _), (x1, _) in zip(batches, batches[1:]):
        assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # row b picks up where it stopped


def test_random_batches_are_disjoint_aligned_subsequences():
    ids = torch.arange(1000)
    seen = []
    for x, y in random_batches(ids, 4, 10, random.Random(1)):
        assert x.shape == (4, 10) and torch.equal(y, x + 1)
        assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 9, dtype=torch.long))
        seen.extend(x[:, 0].tolist())
    assert len(seen) == len(set(seen)) and len({s % 10 for s in seen}) == 1
    assert seen != sorted(seen)  # shuffled


def test_both_schemes_yield_at_least_one_batch_at_the_minimum_length():
    need = min_tokens(4, 10)
    for scheme in (sequential_batches, random_batches):
        for seed in range(20):
            assert list(scheme(torch.arange(need), 4, 10, random.Random(seed)))
    check_length(need, 4, 10)
    with pytest.raises(TooShortError, match=f"at least {need}"):
        check_length(need - 1, 4, 10)


def test_eval_chunks_predict_every_token_once():
    ids = torch.arange(103)
    targets = torch.cat([y.reshape(-1) for _, y in eval_chunks(ids, 4, 10)])
    assert sorted(targets.tolist()) == list(range(1, 101))
    short = list(eval_chunks(torch.arange(5), 4, 10))
    assert [y.tolist() for _, y in short] == [[[1, 2, 3, 4]]]
