"""``data.pair_limits``: other baseline / angle limits for some training folders (streets beside rooms), checked in
one line, applied to exactly the places of the folder named."""
from __future__ import annotations

import pytest

pytest.importorskip("rosbags")
pytest.importorskip("skimage")

from training import config as config_mod  # noqa: E402
from training.data import synthetic  # noqa: E402
from training.data.build import build_dataset  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    synthetic.generate(root / "rooms", scenes=1, frames=8, width=84, height=63, seed=1, depth=False)
    synthetic.generate(root / "streets", scenes=1, frames=8, width=84, height=63, seed=1, depth=False, kind="street")
    return root


def _dataset(folders, tmp_path, *overrides):
    rooms, streets = str(folders / "rooms"), str(folders / "streets")
    cfg = config_mod.resolve(None, [f"data.train=[{rooms}, {streets}]", "data.max_baseline_m=1.0",
                                    "data.max_angle_deg=60", *overrides])
    return build_dataset(cfg, "train", tmp_path), rooms, streets


def test_a_folder_gets_its_own_limits_and_the_others_keep_theirs(folders, tmp_path):
    plain, _, streets = _dataset(folders, tmp_path)
    limited, _, _ = _dataset(folders, tmp_path, f"data.pair_limits={{{streets}: {{max_baseline_m: 6.0}}}}")
    by_kind = {}
    for name, ds in (("plain", plain), ("limited", limited)):
        for pair in ds.pairs:
            kind = "street" if pair.place.startswith("streets") else "room"
            by_kind.setdefault((name, kind), []).append(pair.baseline_m)
    assert max(by_kind["plain", "room"]) <= 1.0 and max(by_kind.get(("plain", "street"), [0])) <= 1.0
    assert by_kind["limited", "room"] == by_kind["plain", "room"]  # rooms untouched
    assert 1.0 < max(by_kind["limited", "street"]) <= 6.0  # a drive's pairs metres apart
    assert len(by_kind["limited", "street"]) > len(by_kind.get(("plain", "street"), []))


@pytest.mark.parametrize(("limits", "match"), [
    ("{data/elsewhere: {max_baseline_m: 6.0}}",
     r"data\.pair_limits\['data/elsewhere'\]: expected a folder listed in data\.train or data\.val as written there"),
    ("{STREETS: {max_baseline: 6.0}}", r"data\.pair_limits\['.*streets'\]: unknown key 'max_baseline' \(known: "
                                       r"min_baseline_m, max_baseline_m, max_angle_deg\)"),
    ("{STREETS: {max_baseline_m: far}}", r"data\.pair_limits\['.*streets'\]\.max_baseline_m: expected a number, "
                                         r"got 'far'"),
])
def test_bad_pair_limits_are_one_line(folders, tmp_path, limits, match):
    with pytest.raises(config_mod.ConfigError, match=match):
        _dataset(folders, tmp_path, "data.pair_limits=" + limits.replace("STREETS", str(folders / "streets")))


def test_pair_limits_must_be_a_mapping():
    with pytest.raises(config_mod.ConfigError, match=r"data\.pair_limits: expected a mapping, got \[1, 2\]"):
        config_mod.resolve(None, ["data.pair_limits=[1, 2]"])
