"""server.budget.LineBudget: at most ``burst`` lines per label per window, the rest
counted and said by the next line that is."""

from __future__ import annotations

from server.budget import LineBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_over_the_budget_go_unsaid_and_are_counted_by_the_next_window() -> None:
    clock = Clock()
    budget = LineBudget(burst=2, every=10.0, clock=clock)
    assert [budget.take("a") for _ in range(5)] == [0, 0, None, None, None]
    clock.now += 9.9
    assert budget.take("a") is None  # the same window
    clock.now += 0.1
    assert budget.take("a") == 4  # a new window: says how many went unsaid
    assert budget.take("a") == 0
    assert budget.take("a") is None


def test_each_label_has_its_own_budget() -> None:
    budget = LineBudget(burst=1, every=10.0, clock=Clock())
    assert budget.take("a") == 0
    assert budget.take("b") == 0
    assert budget.take("a") is None
    assert budget.take() == 0  # the unnamed label too
