"""Median wall-clock timing of a call, for the benchmarks."""
import statistics
import time


def median_ms(fn, repeat: int = 5) -> tuple[float, object]:
    """Median milliseconds of `repeat` calls of `fn`, and the last call's result."""
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), result
