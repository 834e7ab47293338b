"""training/make_synthetic.py: bags read back by an independent decoder; depth maps agree with the TF poses."""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rosbags.rosbag2")
pytest.importorskip("skimage.data")
mcap_reader = pytest.importorskip("mcap.reader")
mcap_decoder = pytest.importorskip("mcap_ros2.decoder")

from mickey_ros.geometry.se3 import invert_T, make_T, quat_wxyz_to_matrix, quat_xyzw_to_wxyz  # noqa: E402
from training.data import synthetic  # noqa: E402

from conftest import REPO  # noqa: E402

SCENES, FRAMES, W, H, SEED = 2, 4, 112, 84, 7
TOPICS = {"/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw", "/tf", "/tf_static"}


@dataclass
class View:
    """One image of a bag with what the bag says about it."""

    stamp: int
    K: np.ndarray  # [3, 3]
    image: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres, NaN = no hit
    T_map_camera: np.ndarray  # [4, 4] composed from /tf and /tf_static


def _decode(bag: Path) -> dict[str, list[tuple[int, Any]]]:
    out: dict[str, list[tuple[int, Any]]] = {}
    (mcap_file,) = bag.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[mcap_decoder.DecoderFactory()])
        for _, channel, message, decoded in reader.iter_decoded_messages():
            out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out


def _stamp(header: Any) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _transform(msg: Any, order: str = "xyzw") -> np.ndarray:
    """``[4, 4]`` pose of the child in the parent; ``order="wxyz"`` misreads the quaternion (negative control)."""
    (tf,) = msg.transforms
    r, t = tf.transform.rotation, tf.transform.translation
    q = np.array([r.x, r.y, r.z, r.w])
    return make_T(quat_wxyz_to_matrix(q if order == "wxyz" else quat_xyzw_to_wxyz(q)), [t.x, t.y, t.z])


def _views(msgs: dict[str, list[tuple[int, Any]]], static: bool = True, order: str = "xyzw") -> list[View]:
    """The bag's images with ``T_map_camera = T_map_base(stamp) @ T_base_camera``; ``static=False`` drops the
    extrinsic (negative control)."""
    ((_, tf_static),) = msgs["/tf_static"]
    T_base_camera = _transform(tf_static, order) if static else np.eye(4)
    T_map_base = {_stamp(m.transforms[0].header): _transform(m, order) for _, m in msgs["/tf"]}
    views = []
    for (_, image), (_, info), (_, depth) in zip(msgs["/camera/image_raw"], msgs["/camera/camera_info"],
                                                 msgs["/camera/depth/image_raw"]):
        stamp = _stamp(image.header)
        views.append(View(stamp, np.array(info.k).reshape(3, 3),
                          np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3),
                          np.frombuffer(bytes(depth.data), "<f4").reshape(depth.height, depth.width),
                          T_map_base[stamp] @ T_base_camera))
    return views


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic")
    summary = synthetic.generate(out, scenes=SCENES, frames=FRAMES, width=W, height=H, seed=SEED)
    assert (summary.scenes, summary.bags, summary.frames) == (SCENES, 2 * SCENES, 2 * SCENES * FRAMES)
    return out


@pytest.fixture(scope="module")
def decoded(dataset) -> dict[tuple[int, str], dict[str, list[tuple[int, Any]]]]:
    return {(s, rec): _decode(dataset / f"scene_{s:03d}" / rec) for s in range(SCENES) for rec in ("rec0", "rec1")}


# -- reprojection --------------------------------------------------------------------------------------------
def _bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``[N]`` bilinear samples of ``image [H, W]`` at ``uv [N, 2]`` inside ``[0, W-1] x [0, H-1]``."""
    x0 = np.minimum(np.floor(uv[:, 0]).astype(int), image.shape[1] - 2)
    y0 = np.minimum(np.floor(uv[:, 1]).astype(int), image.shape[0] - 2)
    fx, fy = uv[:, 0] - x0, uv[:, 1] - y0
    return ((1 - fx) * (1 - fy) * image[y0, x0] + fx * (1 - fy) * image[y0, x0 + 1]
            + (1 - fx) * fy * image[y0 + 1, x0] + fx * fy * image[y0 + 1, x0 + 1])


def _project(K: np.ndarray, T_cam_map: np.ndarray, X_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    X = X_map @ T_cam_map[:3, :3].T + T_cam_map[:3, 3]
    return (X / X[:, 2:]) @ K.T[:, :2], X[:, 2]


def _back_project(K: np.ndarray, T_map_cam: np.ndarray, uv: np.ndarray, z: np.ndarray) -> np.ndarray:
    X = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(K).T * z[:, None]
    return X @ T_map_cam[:3, :3].T + T_map_cam[:3, 3]


@dataclass
class Reprojection:
    """Every pixel of view A with a depth, carried into view B."""

    uv_a: np.ndarray  # [N, 2] pixels of A
    X_map: np.ndarray  # [N, 3] their 3D points
    uv_b: np.ndarray  # [N, 2] where they land in B (subpixel)
    z_b: np.ndarray  # [N] their depth in B predicted by the poses
    inside: np.ndarray  # [N] bool: in front of B and inside its image
    depth_b: np.ndarray  # [N] B's depth map (bilinear) at uv_b, NaN outside
    visible: np.ndarray  # [N] bool: inside and B's depth agrees with z_b to 2 cm (not occluded)

    def fraction(self) -> float:
        """Share of A's pixels that B sees too (co-visibility)."""
        return float(self.visible.mean())


def reproject(a: View, b: View) -> Reprojection:
    v, u = np.mgrid[0:a.depth.shape[0], 0:a.depth.shape[1]]
    uv_a, z_a = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64), a.depth.ravel().astype(np.float64)
    has = np.isfinite(z_a)
    uv_a, z_a = uv_a[has], z_a[has]
    X_map = _back_project(a.K, a.T_map_camera, uv_a, z_a)
    uv_b, z_b = _project(b.K, invert_T(b.T_map_camera), X_map)
    hb, wb = b.depth.shape
    inside = (z_b > 0.05) & (uv_b[:, 0] >= 0) & (uv_b[:, 0] <= wb - 1) & (uv_b[:, 1] >= 0) & (uv_b[:, 1] <= hb - 1)
    depth_b = np.full(len(uv_b), np.nan)
    depth_b[inside] = _bilinear(b.depth.astype(np.float64), uv_b[inside])
    visible = inside & (np.abs(depth_b - z_b) < 0.02)
    return Reprojection(uv_a, X_map, uv_b, z_b, inside, depth_b, visible)


def _pairs(decoded, scene: int, **mutation) -> tuple[list[View], list[View]]:
    return _views(decoded[scene, "rec0"], **mutation), _views(decoded[scene, "rec1"], **mutation)


def _best_cross_pair(rec0: list[View], rec1: list[View]) -> tuple[View, View, float]:
    fractions = [(reproject(a, b).fraction(), i, j) for i, a in enumerate(rec0) for j, b in enumerate(rec1)]
    best, i, j = max(fractions)
    return rec0[i], rec1[j], best


# -- tests ---------------------------------------------------------------------------------------------------
def test_bags_decode_with_the_independent_mcap_decoder(dataset, decoded):
    for s in range(SCENES):
        record = json.loads((dataset / f"scene_{s:03d}" / "scene.json").read_text())
        K = np.array(record["K"])
        assert (record["width"], record["height"], record["seed"]) == (W, H, SEED)
        assert 0.6 * W < K[0, 0] == K[1, 1] < 0.95 * W and abs(K[0, 2] - (W - 1) / 2) < 0.03 * W
        starts = []
        for rec in ("rec0", "rec1"):
            msgs = decoded[s, rec]
            assert set(msgs) == TOPICS
            images, infos = msgs["/camera/image_raw"], msgs["/camera/camera_info"]
            depths = msgs["/camera/depth/image_raw"]
            assert len(images) == len(infos) == len(depths) == FRAMES
            stamps = [_stamp(m.header) for _, m in images]
            starts.append(stamps[0])
            assert np.all(np.diff(stamps) == 100_000_000)  # 10 Hz
            for (t_img, img), (t_info, info), (t_depth, depth) in zip(images, infos, depths):
                assert t_img == t_info == t_depth == _stamp(img.header) == _stamp(info.header) == _stamp(depth.header)
                for msg in (img, info, depth):
                    assert msg.header.frame_id == "camera_optical_frame"
                    assert (msg.width, msg.height) == (W, H)
                assert (img.encoding, img.step, len(img.data)) == ("rgb8", 3 * W, 3 * W * H)
                assert (depth.encoding, depth.step, len(depth.data)) == ("32FC1", 4 * W, 4 * W * H)
                assert img.is_bigendian == depth.is_bigendian == 0
                z = np.frombuffer(bytes(depth.data), "<f4")
                assert np.isfinite(z).all() and z.min() > 0.3 and z.max() < 15.0  # a closed room, metres
                assert info.distortion_model == "plumb_bob" and not np.any(info.d)
                np.testing.assert_array_equal(np.array(info.k).reshape(3, 3), K)
                np.testing.assert_array_equal(np.array(info.p).reshape(3, 4), np.hstack([K, np.zeros((3, 1))]))
            ((t_static, static),) = msgs["/tf_static"]
            (tf,) = static.transforms
            assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "camera_optical_frame")
            assert t_static <= stamps[0]
            tf_stamps = [t for t, _ in msgs["/tf"]]
            assert all((m.transforms[0].header.frame_id, m.transforms[0].child_frame_id) == ("map", "base_link")
                       for _, m in msgs["/tf"])
            assert tf_stamps == [_stamp(m.transforms[0].header) for _, m in msgs["/tf"]]
            assert np.all(np.diff(tf_stamps) == 20_000_000)  # 50 Hz, between and around the images
            assert tf_stamps[0] < stamps[0] and tf_stamps[-1] > stamps[-1] and set(stamps) <= set(tf_stamps)
            # the TF tree in the bag gives the ground truth written to scene.json
            truth = record["recordings"][rec]["frames"]
            assert len(truth) == FRAMES
            for view, gt in zip(_views(msgs), truth):
                assert view.stamp == gt["stamp_ns"]
                np.testing.assert_allclose(view.T_map_camera, gt["T_map_camera"], atol=1e-9)
        assert starts[1] - starts[0] == 100 * 10**9


def test_depth_agrees_with_tf_poses_within_one_pixel(dataset, decoded):
    for s in range(SCENES):
        rec0, rec1 = _pairs(decoded, s)
        a_cross, b_cross, _ = _best_cross_pair(rec0, rec1)
        record = json.loads((dataset / f"scene_{s:03d}" / "scene.json").read_text())
        scene = synthetic.make_scene(np.random.default_rng((record["seed"], record["scene_index"])))
        for a, b, min_fraction in ((rec0[0], rec0[1], 0.8), (rec1[0], rec1[-1], 0.6), (a_cross, b_cross, 0.2)):
            r = reproject(a, b)
            assert r.fraction() > min_fraction
            # Round trip through B's depth map: B's pixel uv_b, at B's (interpolated) depth, lands back on A's pixel.
            vis = r.visible
            back, _ = _project(a.K, invert_T(a.T_map_camera),
                               _back_project(b.K, b.T_map_camera, r.uv_b[vis], r.depth_b[vis]))
            error_px = np.linalg.norm(back - r.uv_a[vis], axis=1)
            assert error_px.max() < 1.0 and np.median(error_px) < 0.05
            # Exact ray cast through the subpixel uv_b: it hits A's 3D point (to 0.1 mm) where B sees it (a few
            # points within 2 cm behind an occluding edge are hidden after all), and it never ends beyond the
            # point, i.e. no point of A lands in free space in front of B's surfaces (wrong poses would).
            exact = synthetic.cast_depth(scene, b.K, b.T_map_camera, r.uv_b[r.inside])
            assert np.mean(np.abs(exact[vis[r.inside]] - r.z_b[vis]) < 1e-4) > 0.99
            assert np.all(exact <= r.z_b[r.inside] + 1e-4)


@pytest.mark.parametrize("mutation", [{"static": False}, {"order": "wxyz"}], ids=["no-extrinsic", "quat-wxyz"])
def test_the_reprojection_check_catches_a_broken_tf_tree(decoded, mutation):
    """Negative control: with the extrinsic dropped or the quaternion misread, views no longer agree."""
    rec0, rec1 = _pairs(decoded, 0)
    good_a, good_b, good = _best_cross_pair(rec0, rec1)
    bad0, bad1 = _pairs(decoded, 0, **mutation)
    i, j = [v.stamp for v in rec0].index(good_a.stamp), [v.stamp for v in rec1].index(good_b.stamp)
    assert good > 0.2
    assert reproject(bad0[i], bad1[j]).fraction() < 0.5 * good
    assert reproject(bad0[0], bad0[-1]).fraction() < 0.5 * reproject(rec0[0], rec0[-1]).fraction()


def test_recordings_overlap_across_visits(decoded):
    for s in range(SCENES):
        rec0, rec1 = _pairs(decoded, s)
        fractions = np.array([[reproject(a, b).fraction() for b in rec1] for a in rec0])
        assert fractions.max() > 0.2, fractions
        assert (fractions > 0.1).sum() >= FRAMES, fractions  # more than one lucky pair


def test_same_seed_same_bytes_other_seed_other_images(dataset, decoded, tmp_path):
    def images(out: Path, rec: str) -> list[bytes]:
        return [bytes(m.data) for _, m in _decode(out / "scene_000" / rec)["/camera/image_raw"]]

    synthetic.generate(tmp_path / "same", scenes=1, frames=FRAMES, width=W, height=H, seed=SEED)
    synthetic.generate(tmp_path / "other", scenes=1, frames=FRAMES, width=W, height=H, seed=SEED + 1)
    for rec in ("rec0", "rec1"):
        assert images(tmp_path / "same", rec) == [bytes(m.data) for _, m in decoded[0, rec]["/camera/image_raw"]]
        assert all(x != y for x, y in zip(images(tmp_path / "other", rec), images(tmp_path / "same", rec)))
    # seeds give independent streams: seed + 1 is not the first run's next scene
    assert images(tmp_path / "other", "rec0") != [bytes(m.data) for _, m in decoded[1, "rec0"]["/camera/image_raw"]]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "training/make_synthetic.py", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_cli_writes_a_dataset_and_rejects_bad_arguments(tmp_path):
    out = tmp_path / "out"
    ok = _cli(str(out), "--scenes", "1", "--frames", "3", "--width", "112", "--height", "84", "--no-depth")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().splitlines()[-1].startswith("make_synthetic: scenes 1, bags 2, frames 6, ")
    msgs = _decode(out / "scene_000" / "rec1")
    assert set(msgs) == TOPICS - {"/camera/depth/image_raw"} and len(msgs["/camera/image_raw"]) == 3
    for args, expected in (
        ([str(tmp_path / "new"), "--width", "0"], "--width: expected an integer >= 8, got 0"),
        ([str(tmp_path / "new"), "--frames", "many"], "argument --frames: invalid int value: 'many'"),
        ([str(out), "--scenes", "1"], "is not empty (pass --overwrite"),
    ):
        bad = _cli(*args)
        assert bad.returncode == 2
        assert len(bad.stderr.strip().splitlines()) == 1 and expected in bad.stderr, bad.stderr
        assert "Traceback" not in bad.stderr
    again = _cli(str(out), "--scenes", "1", "--frames", "2", "--width", "112", "--height", "84", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert len(_decode(out / "scene_000" / "rec0")["/camera/image_raw"]) == 2
