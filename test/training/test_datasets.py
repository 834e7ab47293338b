"""training.data.datasets: item format, crop/resize bookkeeping, lazy bag reads (also in DataLoader workers)
and the Map-free pairs (overlap filtering, evaluation pairs, T_0to1)."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("rosbags.rosbag2")

from mickey_ros.errors import DatasetError  # noqa: E402
from mickey_ros.geometry.camera import rescale_intrinsics  # noqa: E402
from mickey_ros.geometry.se3 import make_T  # noqa: E402
from test_bag_index import H, K, W, image_pixels, write_bag  # noqa: E402
from test_mapfree import R_of, write_scene  # noqa: E402
from training.data.bag_index import BagSource, PairConfig, index_bags, make_pairs  # noqa: E402
from training.data.datasets import BagPairDataset, MapFreePairDataset, SceneBalancedSampler  # noqa: E402

KEYS = {"image0", "image1", "K_color0", "K_color1", "Kori_color0", "Kori_color1", "T_0to1", "pair_id", "pair_names",
        "scene_id"}
# written frames: image i at 0.05 + 0.2 i s (test_bag_index.write_bag)
STAMPS = [int(0.05e9 + 0.2e9 * i) for i in range(10)]


def _pixels_of(name: str) -> np.ndarray:
    return image_pixels(STAMPS.index(int(name.rsplit("@", 1)[1])))


@pytest.fixture(scope="module")
def bag_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    sources = [BagSource(write_bag(root / "scene_a" / "rec0")),
               BagSource(write_bag(root / "scene_a" / "rec1", storage="sqlite3", compressed=True),
                         image_topic="/camera/image_raw/compressed")]
    index = index_bags(sources)
    return index, make_pairs(index, PairConfig(min_baseline_m=0.1, max_baseline_m=0.5))


def _check_item(item, index, pair):
    assert set(item) == KEYS
    for k in KEYS - {"pair_id", "pair_names", "scene_id"}:
        assert item[k].dtype == torch.float32, k
    f0, f1 = index.frames[pair.frame0], index.frames[pair.frame1]
    assert item["pair_names"] == (f0.name, f1.name) and item["scene_id"] == "scene_a"
    np.testing.assert_allclose(item["T_0to1"].numpy(), index.T_0to1(pair.frame0, pair.frame1).astype(np.float32))


def test_bag_items_crop_to_multiples_of_14_and_keep_pixels(bag_dataset):
    index, pairs = bag_dataset
    ds = BagPairDataset(index, pairs)
    crossing = [i for i, p in enumerate(pairs) if index.frames[p.frame0].recording != index.frames[p.frame1].recording]
    assert crossing, "expected pairs across the mcap and the sqlite3 recording"
    for i in (0, crossing[0], len(ds) - 1):
        item = ds[i]
        _check_item(item, index, pairs[i])
        assert item["pair_id"] == i
        assert item["image0"].shape == item["image1"].shape == (3, 42, 56)  # 60x45 cropped top-left
        for v in "01":
            expected = _pixels_of(item["pair_names"][int(v)])[:42, :56]
            got = (item[f"image{v}"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(item[f"K_color{v}"].numpy(), K.astype(np.float32))
            np.testing.assert_array_equal(item[f"Kori_color{v}"].numpy(), K.astype(np.float32))
        assert 0.0 <= item["image0"].min() and item["image0"].max() <= 1.0
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_bag_items_resize_rescales_K(bag_dataset):
    index, pairs = bag_dataset
    ds = BagPairDataset(index, pairs, resize=(75, 50))
    item = ds[0]
    assert item["image0"].shape == (3, 42, 70)  # 75x50, then cropped to 70x42
    K_expected = rescale_intrinsics(K, 75 / W, 50 / H).astype(np.float32)
    np.testing.assert_allclose(item["K_color0"].numpy(), K_expected, rtol=1e-6)
    np.testing.assert_array_equal(item["Kori_color0"].numpy(), K.astype(np.float32))
    resized = cv2.resize(_pixels_of(item["pair_names"][0]), (75, 50), interpolation=cv2.INTER_LINEAR)[:42, :70]
    got = (item["image0"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(got, resized)


def test_bag_dataset_pickles_and_runs_in_dataloader_workers(bag_dataset):
    index, pairs = bag_dataset
    ds = BagPairDataset(index, pairs)
    crossing = [i for i, p in enumerate(pairs) if index.frames[p.frame0].recording != index.frames[p.frame1].recording]
    ids = [0, crossing[0], 1, crossing[-1]]
    direct = [ds[i] for i in ids]  # opens both bags' readers in this process
    clone = pickle.loads(pickle.dumps(ds))  # without the open readers
    assert not clone._readers and len(ds._readers) == 2
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(clone, ids), batch_size=2, num_workers=2)
    batches = list(loader)
    assert [n for b in batches for n in b["pair_id"].tolist()] == ids
    for key in ("image0", "image1", "T_0to1", "K_color1"):
        torch.testing.assert_close(torch.cat([b[key] for b in batches]), torch.stack([d[key] for d in direct]),
                                   rtol=0, atol=0)
    # a forked worker inherits open readers: it must open its own, not reuse the parent's handles
    fork_loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, ids), batch_size=4, num_workers=2,
                                              multiprocessing_context="fork")
    (batch,) = list(fork_loader)
    torch.testing.assert_close(batch["image1"], torch.stack([d["image1"] for d in direct]), rtol=0, atol=0)
    ds.close()
    assert not ds._readers


def test_bag_dataset_reports_a_changed_bag(tmp_path):
    bag = write_bag(tmp_path / "p" / "r")
    index = index_bags(BagSource(bag))
    ds = BagPairDataset(index, make_pairs(index))
    import shutil

    shutil.rmtree(bag)
    write_bag(bag, image_stamps=[s + 1 for s in STAMPS])
    with pytest.raises(DatasetError, match=r"message not found; the bag changed since it was indexed"):
        ds[0]


def test_scene_balanced_sampler(bag_dataset):
    index, pairs = bag_dataset
    ds = BagPairDataset(index, pairs)
    sampler = SceneBalancedSampler(ds, n_per_scene=7, seed=3)
    a = list(sampler)
    assert len(a) == len(sampler) == 7 and all(0 <= i < len(ds) for i in a)
    assert a == list(sampler)
    sampler.set_epoch(1)
    assert a != list(sampler)


def test_scene_balanced_sampler_draws_equally_from_scenes_of_unequal_size(mapfree_root):
    root, _ = mapfree_root
    ds = MapFreePairDataset(root, "train")
    assert ds.scene_ids == ["s00000"] * 3 + ["s00001"]  # precondition: two scenes, 3 pairs and 1 pair
    sampler = SceneBalancedSampler(ds, n_per_scene=7, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == 14
        scenes = [ds.scene_ids[i] for i in drawn]
        assert scenes.count("s00000") == scenes.count("s00001") == 7  # per scene, not per pair (3:1)
        assert drawn.count(3) == 7 and set(drawn) - {3} <= {0, 1, 2}
        assert scenes != sorted(scenes) and scenes != sorted(scenes, reverse=True)  # shuffled across scenes


# -- Map-free ---------------------------------------------------------------------------------------------------
MF_W, MF_H = 60, 45


def _mf_pixels(scene: str, name: str) -> np.ndarray:
    seed = sum(map(ord, scene + name))
    return np.random.default_rng(seed).integers(0, 256, size=(MF_H, MF_W, 3), dtype=np.uint8)


def _write_images(scene_dir: Path) -> None:
    for line in (scene_dir / "poses.txt").read_text().splitlines():
        name = line.split()[0]
        (scene_dir / name).parent.mkdir(exist_ok=True)
        ok, png = cv2.imencode(".png", _mf_pixels(scene_dir.name, name)[:, :, ::-1])  # lossless, despite .jpg
        (scene_dir / name).write_bytes(png.tobytes())


def _T_w2c(gts, name):
    if name.startswith("seq0"):
        return np.eye(4)
    q, t = gts[int(name[-9:-4])]
    return make_T(R_of(q), t)


@pytest.fixture(scope="module")
def mapfree_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mapfree")
    intr = f"50 51 29.5 22 {MF_W} {MF_H}"
    gts = {}
    for split, name, seq1 in (("train", "s00000", range(6)), ("train", "s00001", range(4)),
                              ("val", "s00460", range(12))):
        gts[name] = write_scene(root / split, name, list(seq1), intr=intr, ref_intr=f"48 48 30 22 {MF_W} {MF_H}")
        _write_images(root / split / name)
    idxs = np.array([[1, 0, 1, 1], [1, 1, 1, 2], [0, 0, 1, 3], [1, 2, 1, 4], [1, 3, 1, 5]])
    np.savez(root / "train" / "s00000" / "overlaps.npz", idxs=idxs, overlaps=np.array([0.0, 0.3, 0.5, 1.0, 0.8]))
    return root, gts  # s00001 has no overlaps.npz: evaluation pairs


def test_mapfree_overlap_pairs_strictly_inside(mapfree_root):
    root, gts = mapfree_root
    ds = MapFreePairDataset(root, "train", scenes=["s00000"])
    assert [it["pair_names"] for it in (ds[i] for i in range(len(ds)))] == [
        ("seq1/frame_00001.jpg", "seq1/frame_00002.jpg"), ("seq0/frame_00000.jpg", "seq1/frame_00003.jpg"),
        ("seq1/frame_00003.jpg", "seq1/frame_00005.jpg")]  # 0.0 and 1.0 excluded
    ds = MapFreePairDataset(root, "train", min_overlap=0.4, max_overlap=0.8, scenes=["s00000"])
    assert len(ds) == 1 and ds[0]["pair_names"] == ("seq0/frame_00000.jpg", "seq1/frame_00003.jpg")
    both = MapFreePairDataset(root, "train")  # s00001 without overlaps.npz: reference vs every 5th query
    assert both.scene_ids == ["s00000"] * 3 + ["s00001"]
    assert both[3]["pair_names"] == ("seq0/frame_00000.jpg", "seq1/frame_00000.jpg")
    with pytest.raises(DatasetError, match=r"no pairs"):
        MapFreePairDataset(root, "train", min_overlap=0.9, scenes=["s00000"])


def test_mapfree_items_and_T_0to1(mapfree_root):
    root, gts = mapfree_root
    ds = MapFreePairDataset(root, "train", scenes=["s00000"])
    X_world = np.array([0.3, -0.2, 2.0, 1.0])
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == KEYS and item["scene_id"] == "s00000" and item["pair_id"] == i
        n0, n1 = item["pair_names"]
        X0, X1 = _T_w2c(gts["s00000"], n0) @ X_world, _T_w2c(gts["s00000"], n1) @ X_world
        np.testing.assert_allclose(item["T_0to1"].double().numpy() @ X0, X1, atol=1e-5)
        assert item["image0"].shape == (3, 42, 56) and item["image0"].dtype == torch.float32
        got = (item["image1"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(got, _mf_pixels("s00000", n1)[:42, :56])
        K0 = np.array([[48, 0, 30], [0, 48, 22], [0, 0, 1]] if n0.startswith("seq0") else
                      [[50, 0, 29.5], [0, 51, 22], [0, 0, 1]], dtype=np.float32)
        np.testing.assert_array_equal(item["Kori_color0"].numpy(), K0)
        np.testing.assert_array_equal(item["K_color0"].numpy(), K0)


def test_mapfree_eval_pairs_and_resize(mapfree_root):
    root, gts = mapfree_root
    ds = MapFreePairDataset(root, "val", resize=(84, 56), pairs="eval")
    assert [ds[i]["pair_names"][1] for i in range(len(ds))] == [f"seq1/frame_{i:05d}.jpg" for i in (0, 5, 10)]
    item = ds[1]
    assert item["pair_names"][0] == "seq0/frame_00000.jpg" and item["scene_id"] == "s00460"
    q, t = gts["s00460"][5]
    np.testing.assert_allclose(item["T_0to1"].numpy(), make_T(R_of(q), t), atol=1e-6)  # reference = identity
    assert item["image1"].shape == (3, 56, 84)
    K1 = np.array([[50, 0, 29.5], [0, 51, 22], [0, 0, 1]], dtype=np.float64)
    np.testing.assert_allclose(item["K_color1"].numpy(), rescale_intrinsics(K1, 84 / MF_W, 56 / MF_H), rtol=1e-6)
    assert len(MapFreePairDataset(root, "val", pairs="eval", sample_factor=1)) == 12
    train_eval = MapFreePairDataset(root, "train", pairs="eval", scenes=["s00000"])
    assert [train_eval[i]["pair_names"][1] for i in range(len(train_eval))] == ["seq1/frame_00000.jpg",
                                                                                 "seq1/frame_00005.jpg"]


def test_mapfree_missing_image_is_a_dataset_error(tmp_path):
    write_scene(tmp_path / "val", "s00001", [0, 1], intr=f"50 50 29 22 {MF_W} {MF_H}",
                ref_intr=f"50 50 29 22 {MF_W} {MF_H}")
    ds = MapFreePairDataset(tmp_path, "val", pairs="eval")
    with pytest.raises(DatasetError, match=r"image .*seq0/frame_00000.jpg: missing or unreadable"):
        ds[0]


def test_build_dataset_applies_the_overlap_limits_of_the_sc_config(mapfree_root, tmp_path):
    """training/configs/official_sc.yaml (the mickey_sc recipe): Map-free train pairs with overlap in (0.4, 0.8)."""
    from conftest import REPO
    from training import config as config_mod
    from training.data.build import build_dataset

    root, _ = mapfree_root
    cfg = config_mod.resolve(REPO / "training" / "configs" / "official_sc.yaml", [f"data.root={root}",
                                                                                   "data.resize=null"])
    assert (cfg["data"]["min_overlap"], cfg["data"]["max_overlap"], cfg["train"]["curriculum"]) == (0.4, 0.8, False)
    ds = build_dataset(cfg, "train", tmp_path)
    names = [ds[i]["pair_names"] for i in range(len(ds)) if ds.scene_ids[i] == "s00000"]
    assert names == [("seq0/frame_00000.jpg", "seq1/frame_00003.jpg")]  # 0.5 only; 0.0, 0.3, 0.8, 1.0 excluded
    default = build_dataset(config_mod.resolve(None, ["data.kind=mapfree", f"data.root={root}"]), "train", tmp_path)
    assert default.scene_ids.count("s00000") == 3


def test_overlap_limits_are_refused_for_bags_and_checked(tmp_path):
    from training import config as config_mod
    from training.data.build import build_dataset

    with pytest.raises(Exception, match=r"^data\.min_overlap=0\.4, data\.max_overlap=1: pair overlap scores exist "
                                        r"only for data\.kind=mapfree"):
        build_dataset(config_mod.resolve(None, ["data.min_overlap=0.4"]), "train", tmp_path)
    with pytest.raises(Exception, match=r"expected 0 <= min < max <= 1, got 0.8 and 0.4"):
        build_dataset(config_mod.resolve(None, ["data.kind=mapfree", "data.root=x", "data.min_overlap=0.8",
                                                "data.max_overlap=0.4"]), "train", tmp_path)
