from openmaas.domain.jobs import JobStatus, can_transition, sources_of
from openmaas.domain.refs import ROUTE_WORDS, ModelRef, is_valid_name, parse_ref


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
