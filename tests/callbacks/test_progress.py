"""The CLI's progress bar redraws at most every ``min_interval_s`` and always at the end of a loop."""

from __future__ import annotations

from lit_papers.callbacks import progress
from lit_papers.callbacks.progress import ThrottledProgressBar


def test_redraws_are_throttled_but_the_last_batch_is_drawn(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    bar = ThrottledProgressBar(min_interval_s=0.5)
    drawn = []
    for n in range(1, 11):  # ten batches, 0.125 s apart
        if bar._should_update(n, 10):
            drawn.append(n)
        clock[0] += 0.125
    assert drawn == [1, 5, 9, 10]  # the first, one every 0.5 s, and the last
    bar.disable()
    assert not bar._should_update(10, 10)
