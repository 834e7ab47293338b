"""Approximate-time pairing of two cameras and their CameraInfo (mickey_ros.ros.sync)."""
from __future__ import annotations

import pytest

from mickey_ros.errors import InputError
from mickey_ros.ros.sync import FrameSynchronizer, PairSynchronizer, pair_stream

MS = 1_000_000


def _frames(cam: int, stamps_ms, info: bool = True):
    for t in stamps_ms:
        yield (f"image{cam}", t * MS, f"img{cam}@{t}")
        if info:
            yield (f"info{cam}", t * MS, f"info{cam}@{t}")


def _interleave(*streams):
    return sorted((m for s in streams for m in s), key=lambda m: (m[1], m[0]))


def test_pairs_cameras_within_slop_and_each_image_with_its_info():
    msgs = _interleave(_frames(0, [0, 100, 200]), _frames(1, [20, 120, 290]))
    pairs = list(pair_stream(msgs, slop=0.05))
    assert [(p.stamp0 // MS, p.stamp1 // MS) for p in pairs] == [(0, 20), (100, 120)]  # 200 vs 290: > 50 ms
    assert pairs[0].image0 == "img0@0" and pairs[0].info0 == "info0@0"
    assert pairs[1].image1 == "img1@120" and pairs[1].info1 == "info1@120"


def test_info_arriving_after_its_image_still_pairs():
    sync = PairSynchronizer(slop=0.05)
    assert sync.add("image0", 10 * MS, "a") is None
    assert sync.add("image1", 10 * MS, "b") is None
    assert sync.add("info1", 10 * MS, "bi") is None
    pair = sync.add("info0", 10 * MS, "ai")
    assert pair is not None and (pair.image0, pair.info0, pair.image1, pair.info1) == ("a", "ai", "b", "bi")


def test_newest_pair_wins_and_older_frames_are_dropped():
    sync = PairSynchronizer(slop=0.05)
    for t in (0, 100):  # camera 0 has two frames waiting
        sync.add("image0", t * MS, f"a{t}")
        sync.add("info0", t * MS, f"ai{t}")
    sync.add("info1", 95 * MS, "bi")
    pair = sync.add("image1", 95 * MS, "b")
    assert (pair.stamp0, pair.stamp1) == (100 * MS, 95 * MS)
    assert sync.pending("image0") == 0 and sync.pending("info0") == 0
    # a late camera-1 frame matching the dropped t=0 frame gives nothing
    sync.add("info1", 1 * MS, "late_i")
    assert sync.add("image1", 1 * MS, "late") is None


def test_missing_camera_info_never_pairs_and_queues_stay_bounded():
    sync = PairSynchronizer(slop=0.05, queue_size=5)
    pairs = [sync.add(s, t, m) for s, t, m in _interleave(_frames(0, range(0, 1000, 10), info=False),
                                                          _frames(1, range(0, 1000, 10)))]
    assert all(p is None for p in pairs)
    assert sync.pending("image0") == 5 and sync.pending("image1") == 5
    assert sync.dropped >= 2 * (100 - 5)


def test_info_at_the_stamp_is_preferred_and_waited_for():
    sync = PairSynchronizer(slop=0.05, info_slop=0.001)
    sync.add("info0", -30 * MS, "old0")  # cached, but the image's own CameraInfo may still come
    sync.add("info1", -30 * MS, "old1")
    sync.add("image0", 0, "a")
    assert sync.add("image1", 0, "b") is None  # both images are the newest of their camera: wait
    assert sync.add("info0", 0, "ai") is None
    pair = sync.add("info1", 0, "bi")
    assert (pair.info0, pair.info1) == ("ai", "bi") and sync.info_substituted == 0


def test_an_image_whose_info_is_not_coming_gets_the_cached_one():
    """A newer CameraInfo (5 ms later: not this image's) means the image's own is not coming: the cached latest
    one is used and counted."""
    sync = PairSynchronizer(slop=0.05, info_slop=0.001)
    sync.add("image0", 0, "a")
    sync.add("info0", 5 * MS, "ai")
    sync.add("image1", 0, "b")
    pair = sync.add("info1", 0, "bi")
    assert (pair.image0, pair.info0, pair.info1) == ("a", "ai", "bi") and sync.info_substituted == 1


def test_late_starting_camera_info_pairs_as_soon_as_it_arrives():
    """Images before the first CameraInfo wait for it (the issue-13 late driver), then pair with it: live, the
    newest waiting pair goes first and the older backlog is dropped (counted), as for any pair."""
    sync = PairSynchronizer(slop=0.005, info_slop=0.001, queue_size=10)
    pairs = []
    for k in range(3):  # camera 0's driver publishes no CameraInfo yet
        t = 33 * k * MS
        pairs += [sync.add("image0", t, f"a{k}"), sync.add("image1", t, f"b{k}"), sync.add("info1", t, "bi")]
    assert all(p is None for p in pairs) and sync.pending("image0") == 3
    for k in range(3, 8):
        t = 33 * k * MS
        pairs += [sync.add("image0", t, f"a{k}"), sync.add("info0", t, "ai"), sync.add("image1", t, f"b{k}"),
                  sync.add("info1", t, "bi")]
    got = [p for p in pairs if p is not None]
    assert [(p.image0, p.image1) for p in got] == [("a2", "b2")] + [(f"a{k}", f"b{k}") for k in range(3, 8)]
    assert got[0].info0 == "ai" and sync.info_substituted == 1  # a2 took the first (later) CameraInfo
    assert sync.dropped == 6  # a0, a1, b0, b1 and the two CameraInfo of b0, b1: older than the first pair


def test_frame_synchronizer_uses_the_cached_info_for_a_camera_info_of_its_own_rate():
    """CameraInfo at 1 Hz with stamps of its own (a static publisher): every image still becomes a frame."""
    sync = FrameSynchronizer(info_slop=0.001, queue_size=5)
    sync.add("info", 0, "K")
    frames = [sync.add("image", t * MS, f"im{t}") for t in (100, 133, 166, 200)]
    # each image is emitted once the next one shows its own CameraInfo is not coming
    assert [f.image if f else None for f in frames] == [None, "im100", "im133", "im166"]
    assert sync.info_substituted == 3 and all(f.info == "K" for f in frames if f)


def test_bad_arguments():
    with pytest.raises(InputError, match="stream: expected one of image0, info0, image1, info1"):
        PairSynchronizer().add("image2", 0, None)
    with pytest.raises(InputError, match="slop: expected seconds >= 0"):
        PairSynchronizer(slop=-1)
    with pytest.raises(InputError, match="queue_size: expected an integer >= 1"):
        PairSynchronizer(queue_size=0)
