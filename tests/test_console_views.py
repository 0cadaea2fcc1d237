"""The console's pure view logic: hand-built versions, no server."""

from __future__ import annotations

from registry_server.console import views
from registry_server.domain import models as dm


def v(n: int, **metrics: float) -> dm.ModelVersion:
    return dm.ModelVersion(model="m", version=n, metrics=metrics)


def test_metric_columns_are_the_union_of_the_keys_in_name_order():
    assert views.metric_keys([v(1, loss=1), v(2, acc=0.5, map50=0.1)]) == ["acc", "loss", "map50"]


def test_best_value_is_lowest_for_a_cost_and_highest_otherwise():
    versions = [v(1, loss=0.5, accuracy=0.8), v(2, loss=0.3, accuracy=0.7), v(3, latency_ms=12.0)]
    assert views.best_values(versions, ["accuracy", "latency_ms", "loss"]) == {
        "accuracy": 0.8,
        "latency_ms": 12.0,
        "loss": 0.3,
    }


def test_compare_rows_carry_deltas_against_production_and_judge_their_direction():
    prod, cand = v(1, loss=0.5, accuracy=0.8), v(2, loss=0.4, accuracy=0.7)
    rows = views.compare_rows(dm.compare([prod, cand], prod))
    assert [r.is_production for r in rows] == [True, False]
    accuracy, loss = rows[1].cells
    assert round(accuracy.delta, 6) == -0.1 and accuracy.better is False  # lower accuracy: worse
    assert round(loss.delta, 6) == -0.1 and loss.better is True  # lower loss: better
    assert rows[0].cells[0].delta is None  # production is the baseline
    assert rows[0].cells[0].best and rows[1].cells[1].best


def test_config_diff_names_each_key_added_removed_changed_or_same():
    rows = views.config_diff({"lr": 0.01, "imgsz": 640, "epochs": 3}, {"lr": 0.005, "epochs": 3, "augment": True})
    assert [(r.key, r.change) for r in rows] == [
        ("augment", "added"),
        ("epochs", "same"),
        ("imgsz", "removed"),
        ("lr", "changed"),
    ]


def test_curves_align_the_steps_of_each_version_with_gaps_as_null():
    a = dm.ModelVersion(model="m", version=1, metric_history={"loss": [(1, 1.0), (2, 0.5)]})
    b = dm.ModelVersion(model="m", version=2, metric_history={"loss": [(2, 0.7), (3, 0.4)]})
    c = dm.ModelVersion(model="m", version=3, metric_history={"map50": [(1, 0.2)]})
    spec = views.curves([a, b, c], "loss")
    assert spec["labels"] == ["v1", "v2"]  # one series per version that has the metric
    assert spec["data"] == [[1, 2, 3], [1.0, 0.5, None], [None, 0.7, 0.4]]


def test_sorting_by_a_metric_puts_versions_without_it_last():
    versions = [v(1, loss=0.5), v(2), v(3, loss=0.2)]
    assert [x.version for x in views.sort_versions(versions, "metric:loss", False)] == [3, 1, 2]
    assert [x.version for x in views.sort_versions(versions, "metric:loss", True)] == [1, 3, 2]
    assert [x.version for x in views.sort_versions(versions, "bogus", True)] == [3, 2, 1]


def test_search_matches_name_project_and_tags_and_key_value_exactly():
    m = dm.Model(name="fraud-detector", project="risk", tags={"team": "payments"})
    assert views.matches(m, "fraud") and views.matches(m, "risk") and views.matches(m, "payments")
    assert views.matches(m, "team=payments") and not views.matches(m, "team=pay")
    assert not views.matches(m, "fraud vision")
