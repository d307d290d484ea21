"""LocalClaims: one claimant per ref; waiters learn the outcome; releasing tells them it failed."""

from __future__ import annotations

from databuild.bel.status import PartitionStatus
from databuild.orchestrator.claims import LocalClaims
from databuild.orchestrator.state import Outcome


def test_the_first_claimant_wins_and_others_are_named_it() -> None:
    claims = LocalClaims()
    assert claims.claim("b1", ["x", "y"]).result == {"x": "b1", "y": "b1"}
    assert claims.claim("b2", ["y", "z"]).result == {"y": "b1", "z": "b2"}
    assert (claims.producer("x"), claims.producer("z"), claims.producer("w")) == ("b1", "b2", None)


def test_waiters_learn_the_claimants_outcome_and_only_the_claimant_settles() -> None:
    claims = LocalClaims()
    claims.claim("b1", ["x"])
    waiting = claims.wait_for("x")
    claims.settle("x", Outcome(PartitionStatus.PARTITION_AVAILABLE, "", "b2"))  # not b2's
    assert not waiting.called
    claims.settle("x", Outcome(PartitionStatus.PARTITION_AVAILABLE, "", "b1"))
    assert waiting.result.status is PartitionStatus.PARTITION_AVAILABLE
    assert claims.producer("x") is None


def test_releasing_a_claim_tells_its_waiters_it_failed() -> None:
    claims = LocalClaims()
    claims.claim("b1", ["x", "y"])
    on_x, on_y = claims.wait_for("x"), claims.wait_for("y")
    claims.release("b1", ["x"])
    assert on_x.result.status is PartitionStatus.PARTITION_FAILED
    assert not on_y.called and claims.producer("y") == "b1"
    claims.release("b1")
    assert on_y.result.status is PartitionStatus.PARTITION_FAILED
    assert claims.producer("y") is None


def test_a_claim_repeating_refs_takes_each_once_and_its_release_lets_go_of_only_its_own() -> None:
    claims = LocalClaims()
    claims.claim("b1", ["held"])
    assert claims.claim("b2", ["x", "held", "x", "y"]).result == {
        "x": "b2", "held": "b1", "y": "b2"
    }
    assert claims.claim("b3", []).result == {}
    on_held = claims.wait_for("held")
    claims.release("b2")
    assert (claims.producer("x"), claims.producer("y"), claims.producer("held")) == (
        None, None, "b1"
    )
    assert not on_held.called
    claims.release("b3")  # claimed nothing: nothing to let go of
    assert claims.producer("held") == "b1"
