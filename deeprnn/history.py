"""Metric history that stays bounded on arbitrarily long runs."""
from __future__ import annotations

import collections


class BoundedHistory:
    """Keeps the newest `recent` records exact and older ones at an even stride.

    The archive holds every `stride`-th record that left the recent window; when it overflows it
    drops every other record and the stride doubles. The kept points stay evenly spaced, so a
    curve keeps its shape at a coarser resolution while memory stays at most recent + archive.
    """

    def __init__(self, recent: int = 1000, archive: int = 1000, records=()):
        self.recent_size, self.archive_size = recent, archive
        self._recent = collections.deque()
        self._archive: list = []
        self._stride = 1
        self._evicted = 0  # records that have left the recent window
        self.total = 0  # records ever appended, retained or not
        for record in records:
            self.append(record)

    def append(self, record) -> None:
        self.total += 1
        self._recent.append(record)
        if len(self._recent) > self.recent_size:
            self._archive_or_drop(self._recent.popleft())

    def _archive_or_drop(self, record) -> None:
        if self._evicted % self._stride == 0:
            self._archive.append(record)
            if len(self._archive) > self.archive_size:
                self._archive = self._archive[::2]
                self._stride *= 2
        self._evicted += 1

    def records(self) -> tuple:
        return tuple(self._archive) + tuple(self._recent)

    def newest_first(self):
        """The recent window's records, the newest first."""
        return reversed(self._recent)

    def last(self):
        return self._recent[-1] if self._recent else None

    def __len__(self) -> int:
        return len(self._archive) + len(self._recent)
