"""Every `alerts:` example in docs/alerts.md loads without a warning, the flood-and-air one is
examples/alerts-flood-air.yaml, and the JSON shown for events is what evaluation produces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from policies.alerts import load_alerts

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "alerts.md").read_text()
BLOCKS = [b for b in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)
          if b.startswith("alerts:")]
JSON_LINES = [line for b in re.findall(r"```json\n(.*?)```", DOC, flags=re.S)
              for line in b.splitlines() if line.strip()]


def test_the_doc_has_its_examples() -> None:
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("block", BLOCKS, ids=[f"example-{i}" for i in range(len(BLOCKS))])
def test_each_doc_example_loads_without_warnings(block: str) -> None:
    rules, warnings = load_alerts(yaml.safe_load(block)["alerts"], timezone="Asia/Ho_Chi_Minh")
    assert rules.rules
    assert warnings == []


def test_the_doc_opens_with_the_example_file() -> None:
    example = (ROOT / "examples" / "alerts-flood-air.yaml").read_text()
    assert BLOCKS[0] == example[example.index("alerts:"):]


def test_the_example_names_the_issue_s_event_types() -> None:
    rules, _ = load_alerts(yaml.safe_load(BLOCKS[0])["alerts"], timezone="UTC")
    names = {r.name for r in rules.rules}
    assert {"flood_warning", "flood_alarm", "flood_rising", "air_quality_poor",
            "sensor_stale", "heat_stress", "noise_night"} <= names


def test_the_json_shown_is_valid_and_platform_shaped() -> None:
    assert len(JSON_LINES) >= 6
    for line in JSON_LINES:
        obj = json.loads(line)
        if "alerts" in obj:
            assert all({"type", "severity", "device", "since"} <= set(a) for a in obj["alerts"])
            continue
        assert obj["kind"] == "event" and obj["gateway"] and obj["severity"]
        assert {"rule", "kind", "point", "since", "reason"} <= set(obj["detail"])
        if obj["type"].endswith("_cleared"):
            assert obj["severity"] == "info" and "duration_s" in obj["detail"]
