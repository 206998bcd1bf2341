import pytest

from openmaas.domain.jobs import JobStatus, can_transition, sources_of
from openmaas.domain.refs import ROUTE_WORDS, ModelRef, is_valid_name, parse_ref
from openmaas.domain.scaling import Autoscaling, Scaling


def test_job_state_machine() -> None:
    assert can_transition(JobStatus.QUEUED, JobStatus.RUNNING)
    assert can_transition(JobStatus.RUNNING, JobStatus.SUCCEEDED)
    assert not can_transition(JobStatus.SUCCEEDED, JobStatus.RUNNING)
    assert not can_transition(JobStatus.QUEUED, JobStatus.SUCCEEDED)
    assert sources_of(JobStatus.CANCELLED) == {JobStatus.QUEUED, JobStatus.RUNNING}


def test_model_references() -> None:
    assert parse_ref("spam") == ModelRef("spam")
    assert parse_ref("spam:3") == ModelRef("spam", version=3)
    assert parse_ref("spam:production") == ModelRef("spam", alias="production")
    assert parse_ref("spam:latest") == ModelRef("spam")
    assert parse_ref("team-a/spam:2") == ModelRef("spam", version=2, owner="team-a")
    assert str(parse_ref("team-a/spam:production")) == "team-a/spam:production"
    for bad in ("", "spam:", "spam:0", ":3", "sp am", "spam:1:2", "-x", "/spam", "a/", "a/b/c", "a b/c"):
        assert parse_ref(bad) is None, bad


def test_a_route_word_is_no_model_or_tenant_name() -> None:
    # `GET /v1/models/predict` is the predict route's 405: a model named so could never be read by its path.
    for word in ROUTE_WORDS:
        assert not is_valid_name(word)
        assert parse_ref(word) is None and parse_ref(f"{word}/spam") is None
    assert is_valid_name("predictor") and is_valid_name("imports")


def test_scaling_says_the_most_replicas_and_refuses_bounds_out_of_order() -> None:
    assert Scaling().single and Scaling().most == 1
    assert not Scaling(3).single and Scaling(3).most == 3
    autoscaled = Scaling(autoscaling=Autoscaling(0, 4, 2.0))
    assert not autoscaled.single and autoscaled.most == 4
    assert autoscaled.describe() == "autoscaling 0..4 replicas (target_ongoing_requests=2)"
    assert not Scaling(autoscaling=Autoscaling(1, 1, 2.0)).single  # autoscaled, even to one
    for bad in ((2, 1, 2.0), (0, 0, 2.0), (0, 65, 2.0), (1, 2, 0.0)):
        with pytest.raises(ValueError):
            Autoscaling(*bad)
    for replicas in (0, 65):
        with pytest.raises(ValueError):
            Scaling(replicas)
