"""Coalescer: requests of concurrent green threads share one run, and a linger lets later ones join."""

from __future__ import annotations

import eventlet
import pytest

from st2common.persistence.batches import Coalescer


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(list(batch))
        eventlet.sleep(0)  # a round trip: others may queue meanwhile
        return [request * 10 for request in batch]


def test_requests_queued_while_a_batch_runs_go_together_in_the_next():
    run = Recorder()
    coalesce = Coalescer(run)
    threads = [eventlet.spawn(coalesce, n) for n in range(5)]
    assert [thread.wait() for thread in threads] == [0, 10, 20, 30, 40]
    assert sorted(sum(run.batches, [])) == [0, 1, 2, 3, 4]
    assert len(run.batches) < 5


def test_without_a_linger_a_lone_request_runs_at_once():
    run = Recorder()
    coalesce = Coalescer(run)
    assert coalesce(1) == 10
    eventlet.spawn(coalesce, 2).wait()
    assert run.batches == [[1], [2]]


def test_a_linger_lets_requests_that_come_one_after_another_share_a_run():
    run = Recorder()
    coalesce = Coalescer(run, linger=lambda: 0.3)
    first = eventlet.spawn(coalesce, 1)
    eventlet.sleep(0.01)
    second = eventlet.spawn(coalesce, 2)
    eventlet.sleep(0.01)
    # Nothing ran yet when the second came: the first waits out its linger
    assert run.batches == []
    assert (first.wait(), second.wait()) == (10, 20)
    assert run.batches == [[1, 2]]


def test_a_linger_that_fails_runs_the_batch_at_once():
    def broken() -> float:
        raise RuntimeError("no rule index")

    run = Recorder()
    coalesce = Coalescer(run, linger=broken)
    assert coalesce(3) == 30
    assert run.batches == [[3]]


def test_a_failing_run_raises_in_every_request_of_its_batch():
    def fail(batch):
        raise ValueError("database away")

    coalesce = Coalescer(fail, linger=lambda: 0.01)
    threads = [eventlet.spawn(coalesce, n) for n in range(3)]
    for thread in threads:
        with pytest.raises(ValueError, match="database away"):
            thread.wait()
