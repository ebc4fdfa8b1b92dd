"""Metric history that stays bounded on arbitrarily long runs."""
from __future__ import annotations

import collections


class BoundedHistory:
    """Keeps the newest `recent` records exact and thins older ones by halving.

    Old records are dropped every other one whenever the archive overflows, so a curve keeps its
    shape at coarser resolution while memory stays at most recent + archive records.
    """

    def __init__(self, recent: int = 1000, archive: int = 1000, records=()):
        self.recent_size, self.archive_size = recent, archive
        self._recent = collections.deque()
        self._archive: list = []
        self.total = 0  # records ever appended, retained or not
        for record in records:
            self.append(record)

    def append(self, record) -> None:
        self.total += 1
        self._recent.append(record)
        if len(self._recent) > self.recent_size:
            self._archive.append(self._recent.popleft())
            if len(self._archive) > self.archive_size:
                self._archive = self._archive[::2]

    def records(self) -> tuple:
        return tuple(self._archive) + tuple(self._recent)

    def last(self):
        return self._recent[-1] if self._recent else None

    def __len__(self) -> int:
        return len(self._archive) + len(self._recent)
