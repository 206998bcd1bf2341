from openmaas.training.scheduling import QueuedJob, pick_next


def test_another_tenants_single_job_goes_before_a_busy_tenants_backlog() -> None:
    queued = [QueuedJob(f"a{i}", "A", 0) for i in range(10)] + [QueuedJob("b0", "B", 0)]
    # A just had a job start; B never did.
    assert pick_next(queued, running={}, last_started={"A": 100.0}).id == "b0"  # type: ignore[union-attr]
    assert pick_next(queued, running={"B": 1}, last_started={"A": 100.0, "B": 101.0}).id == "a0"  # type: ignore[union-attr]


def test_the_tenant_waiting_longest_goes_next_and_priority_orders_its_own_jobs() -> None:
    queued = [QueuedJob("a0", "A", 0), QueuedJob("a1", "A", 5), QueuedJob("b0", "B", 9)]
    chosen = pick_next(queued, running={}, last_started={"A": 1.0, "B": 2.0})
    assert chosen is not None and chosen.id == "a1"
    assert pick_next([], running={}, last_started={}) is None
