"""fleet.prometheus: the demo's copy of the alert rules differs only in the `for:` asked."""

from __future__ import annotations

import pytest
import yaml

from fleet.prometheus import ALERT_RULES, rules_with_for
from stream.exceptions import EdgeInferError


def _rules(text: str) -> dict[str, dict]:
    doc = yaml.safe_load(text)
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_only_the_named_for_changes() -> None:
    shipped = _rules(ALERT_RULES.read_text())
    assert "EdgeAgentDown" in shipped
    changed = _rules(rules_with_for(ALERT_RULES, {"EdgeAgentDown": "7s"}))
    assert changed["EdgeAgentDown"]["for"] == "7s"
    assert changed["EdgeAgentDown"]["expr"] == shipped["EdgeAgentDown"]["expr"]
    for name, rule in shipped.items():
        if name != "EdgeAgentDown":
            assert changed[name] == rule


def test_an_unknown_alert_is_an_error() -> None:
    with pytest.raises(EdgeInferError, match="NoSuchAlert"):
        rules_with_for(ALERT_RULES, {"NoSuchAlert": "1s"})
