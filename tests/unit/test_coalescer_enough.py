"""Coalescer: a linger ends as soon as enough requests wait on it, and not before."""

from __future__ import annotations

import eventlet

from st2common.persistence.batches import Coalescer

# Far longer than any test: a batch that ran did not wait out its linger.
LONG_LINGER = 60.0


def recorder(batches: list[list[int]]):
    def run(batch: list[int]) -> list[int]:
        batches.append(list(batch))
        return [request * 10 for request in batch]
    return run


def test_a_linger_ends_once_enough_requests_wait_and_they_share_one_run():
    # Given a coalescer that lingers for a minute unless three requests wait
    batches: list[list[int]] = []
    coalesce = Coalescer(recorder(batches), linger=lambda: LONG_LINGER, enough=3)
    # When three requests come one after another
    threads = []
    for n in range(3):
        threads.append(eventlet.spawn(coalesce, n))
        eventlet.sleep(0.01)
    # Then they run together, without waiting out the linger
    with eventlet.Timeout(10):
        assert [thread.wait() for thread in threads] == [0, 10, 20]
    assert batches == [[0, 1, 2]]


def test_fewer_requests_than_enough_still_share_the_linger():
    # Given a coalescer that lingers briefly unless five requests wait
    batches: list[list[int]] = []
    coalesce = Coalescer(recorder(batches), linger=lambda: 0.2, enough=5)
    # When two come one after another
    first = eventlet.spawn(coalesce, 1)
    eventlet.sleep(0.01)
    second = eventlet.spawn(coalesce, 2)
    # Then they wait out the linger together
    assert (first.wait(), second.wait()) == (10, 20)
    assert batches == [[1, 2]]


def test_requests_after_a_cut_short_linger_go_in_the_next_batch():
    # Given a coalescer whose linger two requests cut short
    batches: list[list[int]] = []
    coalesce = Coalescer(recorder(batches), linger=lambda: LONG_LINGER, enough=2)
    with eventlet.Timeout(10):
        assert [t.wait() for t in [eventlet.spawn(coalesce, n) for n in (1, 2)]] == [10, 20]
        # When another comes alone, then a fourth
        third = eventlet.spawn(coalesce, 3)
        eventlet.sleep(0.01)
        fourth = eventlet.spawn(coalesce, 4)
        # Then those two make the next batch, again without the whole linger
        assert (third.wait(), fourth.wait()) == (30, 40)
    assert batches == [[1, 2], [3, 4]]
