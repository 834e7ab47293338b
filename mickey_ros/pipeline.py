"""Relocalizer: two images + intrinsics -> metric relative pose (the one entry point everything uses)."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import cv2
import numpy as np
import torch

from mickey_ros.errors import ImageError, InputError, MickeyError
from mickey_ros.geometry.camera import (
    PATCH_SIZE,
    backproject,
    check_intrinsics,
    check_intrinsics_fit,
    crop_to_multiple,
    rescale_intrinsics,
)
from mickey_ros.geometry.covariance import pose_covariance
from mickey_ros.geometry.se3 import make_T
from mickey_ros.geometry.two_view_ba import MIN_DEPTH, RefineConfig, refine_two_view, sampson_distance
from mickey_ros.onnx_backend import OnnxNetwork
from mickey_ros.solver import SolverConfig, solve_relative_pose

if TYPE_CHECKING:
    from mickey_ros.model import MicKey, MicKeyOutput

log = logging.getLogger(__name__)


@dataclass
class RelativePose:
    """Metric relative pose between camera 0 (reference) and camera 1 (query).

    ``T_0to1`` maps points from camera-0 coordinates into camera-1 coordinates: ``X1 = R X0 + t``
    (metres, OpenCV optical axes: x right, y down, z forward). On failure ``success`` is False,
    ``reason`` says why, ``T_0to1`` is the identity and the counts are 0.

    Attributes:
        success: True when a pose was estimated.
        reason: empty on success, otherwise a one-line reason ("too few matches: ...").
        T_0to1: ``[4, 4]`` float64 homogeneous transform camera 0 -> camera 1.
        confidence: soft-inlier count of the final pose (tau 0.15 m) / num_matches, in [0, 1].
        soft_inliers: the soft-inlier count itself (the official ``inliers`` value, <= 2048).
        num_inliers: hard inliers (residual <= 0.15 m) of the final pose among the sampled matches (when
            ``refined``: the matches the refinement was fitted to).
        num_matches: correspondences sampled in the winning draw (<= 2048).
        kpts3d0, kpts3d1: ``[M, 3]`` float64 metres, the sampled matches' 3D keypoints, each in its
            own camera frame (M = num_matches), ordered by sampling weight (descending).
        kpts2d0, kpts2d1: ``[M, 2]`` float64 pixels (x, y) in the *caller's* image (before crop/resize).
        inliers: ``[M]`` bool, hard-inlier mask of the final pose (when ``refined``: the refinement's matches).
        match_weights: ``[M]`` float64, the matching probability each sampled match was drawn with.
        depth0, depth1: ``[h, w]`` float32 depth maps (metres) on the 14-px grid, for visualisation.
        scores0, scores1: ``[h, w]`` float32 keypoint score maps on the 14-px grid.
        covariance: ``[6, 6]`` float64 covariance of the pose of camera 1 in camera 0 (x, y, z, rotX, rotY, rotZ;
            m^2, rad^2; rotations about camera 0's axes), propagated from the inliers
            (:func:`mickey_ros.geometry.covariance.pose_covariance`) times ``covariance_scale``; None when
            undetermined (fewer than 6 inliers, degenerate set) or on failure.
        refined: True when the two-view bundle adjustment (``Relocalizer(refine=...)``) refined ``T_0to1``; then
            ``inliers`` / ``num_inliers`` are the matches it was fitted to.
        refine_reason: empty when refined, otherwise why not ("not asked for", "too few matches to refine: ...").
    """

    success: bool
    reason: str
    T_0to1: np.ndarray
    confidence: float = 0.0
    soft_inliers: float = 0.0
    num_inliers: int = 0
    num_matches: int = 0
    kpts3d0: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kpts3d1: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    kpts2d0: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    kpts2d1: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=bool))
    match_weights: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    depth0: np.ndarray | None = None
    depth1: np.ndarray | None = None
    scores0: np.ndarray | None = None
    scores1: np.ndarray | None = None
    covariance: np.ndarray | None = None
    refined: bool = False
    refine_reason: str = ""

    @property
    def R(self) -> np.ndarray:
        """``[3, 3]`` float64 rotation camera 0 -> camera 1."""
        return self.T_0to1[:3, :3]

    @property
    def t(self) -> np.ndarray:
        """``[3]`` float64 translation camera 0 -> camera 1, metres."""
        return self.T_0to1[:3, 3]


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
BACKENDS = ("torch", "onnxruntime")
REFINE_MODES = ("auto", "on", "off")  # command-line / ROS spellings of Relocalizer(refine=...)
MIN_PATCHES = 3  # the network needs at least 3x3 patches of 14 px
# Calibration factor of the propagated covariance (see Relocalizer), for the bundled network with its default
# two-view refinement: the factor that puts 95 % of synthetic selection pairs (generator seed 13000) inside the 6-dof
# chi-square bound (training/evaluate.py, metrics["covariance"]["scale_for_95"] times the scale it ran with). Stage 9
# (shipped 2026-12-04, 420x322): 0.42, 0.26 and 0.26 on three draws of 120 pairs (--seed 0, 1, 2); 0.26, their median;
# the held-out pairs (120, seed 15000) need 0.20. Stage 8 refined needed 0.18 (0.34 with refine=False), stage 6 0.57.
# Other networks: calibrate with evaluate.py and pass covariance_scale.
DEFAULT_COVARIANCE_SCALE = 0.26
# Out-of-domain rule: a pose whose confidence (solver soft inliers / sampled matches) is below this is not returned
# (success=False with the reason). For the bundled network (docs/accuracy.md, "Knowing when not to answer"): on 120
# held-out synthetic pairs no pose is below 0.035 (the lowest 5 % of the good ones are below 0.077); the bundled demo's
# pure rotation pair has 0.027; the worst real pair (Middlebury, 13 deg off) 0.0215; KITTI's wrong-scale poses
# 0.024-0.113, as confident as good synthetic ones, so confidence cannot flag them. load_default_network() gives the
# bundled network this value as its ``min_confidence``; min_confidence="auto" uses a network's own value, else 0
# (the official network, whose inference stays as published; a random or your own network: calibrate, then pass it).
DEFAULT_MIN_CONFIDENCE = 0.022
DEFAULT_MAX_SIDE = 720  # px: long side of the official test size (720 x 540), the budget for DINOv2 backbones
WARMUP_SIZE = (294, 224)  # (W, H) px of warmup()'s synthetic pair when neither resize nor the training size is known
MIN_IMAGE_STD = 1.0 / 255.0  # an image whose pixel standard deviation is below one grey level has nothing to match
ASPECT_TOLERANCE = 0.05  # an image whose W/H is within 5 % of the training size's is resized to exactly that size


def training_size_target(width: int, height: int, input_size: tuple[int, int]) -> tuple[int, int] | None:
    """``(W, H)`` that brings a ``width x height`` image to a network's training input ``input_size`` (W, H
    pixels), up or down: exactly ``input_size`` when the aspect ratios agree within :data:`ASPECT_TOLERANCE`
    (as the trainer's ``data.resize`` did; K is rescaled per axis), else the training input's pixel count with the
    image's aspect kept: a 3.3:1 KITTI frame reaches a 420x322 network as 669x202, not as 420x127, whose few patch
    rows cost it most of its rotation accuracy. None when the image already has that size."""
    train_w, train_h = int(input_size[0]), int(input_size[1])
    if abs((width / height) / (train_w / train_h) - 1.0) <= ASPECT_TOLERANCE:
        target = (train_w, train_h)
    else:
        scale = math.sqrt(train_w * train_h / (width * height))
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    return None if target == (width, height) else target


def budget_size(width: int, height: int, max_side: int | None) -> tuple[int, int] | None:
    """``(W, H)`` keeping the aspect ratio with the long side ``max_side``, or None when the image fits."""
    if max_side is None or max(width, height) <= max_side:
        return None
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


@dataclass
class _View:
    """One preprocessed image: network input, its K, and the map back to the caller's pixels."""

    image: torch.Tensor  # [1, 3, H, W] float32 in [0, 1] on the device, cropped to multiples of 14
    K: np.ndarray  # [3, 3] float64 intrinsics of ``image``
    scale_xy: tuple[float, float]  # (W_net / W_in, H_net / H_in) before the crop; (1, 1) without resize
    unusable: str = ""  # why no pose can come from this image (e.g. near-constant), empty when usable
    out: MicKeyOutput | None = None


def refine_mode(mode: str, name: str = "refine") -> bool | str:
    """``"auto"``, ``"on"`` or ``"off"`` (a command line's or a ROS parameter's value) -> ``Relocalizer(refine=...)``.

    Raises:
        InputError: another value (the message names ``name``).
    """
    if mode not in REFINE_MODES:
        raise InputError(f"{name}: expected one of {', '.join(REFINE_MODES)}, got {mode!r}")
    return "auto" if mode == "auto" else mode == "on"


def min_confidence_value(value: float | str, net: Any, name: str = "min_confidence") -> float:
    """``"auto"`` (the network's own calibrated ``min_confidence``: :data:`DEFAULT_MIN_CONFIDENCE` for the bundled
    network, else 0), or a number in [0, 1] (also as text, as a command line or a ROS parameter gives it) -> the
    threshold.

    Raises:
        InputError: anything else (the message names ``name``).
    """
    if value == "auto":
        return float(getattr(net, "min_confidence", None) or 0.0)
    try:
        number = float(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0.0 <= number <= 1.0:
        raise InputError(f"{name}: expected 'auto' or a confidence in [0, 1] (0 = keep every pose), got {value!r}")
    return number


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; checks that an explicit cuda device exists.

    Raises:
        InputError: unknown device string or cuda requested without a GPU.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise InputError(f"device: expected 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device: 'cuda' requested but no CUDA GPU is available (use 'cpu' or 'auto')")
    return dev


def flip_average_depth(out: MicKeyOutput, out_flipped: MicKeyOutput) -> MicKeyOutput:
    """``out`` with its depth replaced by the per-patch mean of its own and the mirrored image's depth.

    Args:
        out: the network's outputs for an image (``depth [B, h * w]`` metres on the ``h x w`` patch grid).
        out_flipped: its outputs for the same image mirrored left-right (``image.flip(-1)``; the width is a multiple
            of 14, so patch column ``j`` of the mirror is column ``w - 1 - j`` of the image).

    Returns:
        ``out`` with ``depth [B, h * w] = (depth + mirrored-back flipped depth) / 2``; kpts, scores and
        descriptors unchanged.
    """
    if out.grid_hw != out_flipped.grid_hw or out.depth.shape != out_flipped.depth.shape:
        raise ValueError(f"flip_average_depth: grids differ: {out.grid_hw} vs {out_flipped.grid_hw}")
    mirrored = out_flipped.depth_map.flip(-1).reshape(out.depth.shape)
    return dataclasses.replace(out, depth=(out.depth + mirrored.to(out.depth.dtype)) / 2)


class Relocalizer:
    """Metric relative pose from two images and their intrinsics with a MicKey network.

    The network runs on ``device``; the backbone may run under bf16/fp16 autocast (``precision``)
    while the heads run in float32 and the geometry (back-projection, Kabsch) in float64.

    Args:
        net: a ``MicKey`` from ``build_model`` / ``load_checkpoint``, or an ``OnnxNetwork``
            (``mickey_ros.onnx_backend``; None with ``backend="onnxruntime"``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        seed: seed of the stochastic solver. Every call starts from this seed, so the same pair always gives
            the same pose; ``None`` draws fresh randomness per call.
        solver: solver settings (official test-time defaults).
        precision: ``"auto"`` (fp16 backbone on CUDA as the official code, fp32 on CPU), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (autocast of the backbone only).
        resize: optional ``(W, H)``: images are resized to it (bilinear) and K rescaled
            (half-pixel convention) before the crop to multiples of 14.
        max_side: what happens to an image when ``resize`` is not given. ``"auto"`` (default): a network whose
            checkpoint records its training input (``net.input_size``) gets every image at that size, up or down
            (:func:`training_size_target`, K rescaled, logged once per size); any other network has a 720-px
            budget (:data:`DEFAULT_MAX_SIDE`). An int: size budget, an image whose long side exceeds it is
            resized (aspect kept, K rescaled, logged once per size; smaller images are kept as they are) so that a
            12 MP camera never reaches the network at full size. ``None``: images are kept as they are.
        backend: ``"torch"``, or ``"onnxruntime"`` with ``onnx_path``: the network runs from a file written by
            ``mickey-ros export-onnx`` (``pip install -e ".[onnx]"``); ``precision`` is then the file's, and
            ``resize`` defaults to its export size (the file takes exactly that size).
        onnx_path: the ``.onnx`` file for ``backend="onnxruntime"``.
        covariance_scale: factor on the propagated covariance, calibrated on held-out pairs (``training/evaluate.py``
            reports the NEES and the factor that would make it consistent); default
            :data:`DEFAULT_COVARIANCE_SCALE`, calibrated for the bundled network.
        depth_flip: also run the network on each image mirrored left-right and use, per patch, the mean of the
            two depths (:func:`flip_average_depth`; keypoints, scores and descriptors stay the image's own). Twice
            the network time; off by default (the official network and its numbers stay as published). Measured
            for the bundled network in ``training/checkpoints/README.md``.
        refine: the two-view metric bundle adjustment after the solver (:mod:`mickey_ros.geometry.two_view_ba`:
            pixels of the matches as observations, the network's depths as priors with a per-view affine depth
            correction, then matches re-selected by the refined pose). ``"auto"`` (default): on for every network
            but the ``official`` preset (whose inference stays the official one); ``"on"``/``"off"`` (the
            command line's and the node's words) or True/False; or a
            :class:`RefineConfig`. The result says whether it applied (``refined``, ``refine_reason``).
        min_confidence: the out-of-domain rule: a pose whose confidence is below it gives ``success=False`` with
            the confidence in the reason (and in ``confidence``), not a pose. ``"auto"`` (default): the network's
            own calibrated ``min_confidence`` (the bundled network: :data:`DEFAULT_MIN_CONFIDENCE`), else 0; or a
            number in [0, 1] (0 keeps every pose).

    Images whose K cannot belong to them (field of view outside 1-179 deg, principal point far outside) raise
    ``IntrinsicsError``; a near-constant image or non-finite network outputs give ``success=False`` with the
    reason (no pose).
    """

    def __init__(
        self,
        net: MicKey | OnnxNetwork | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = 0,
        solver: SolverConfig | None = None,
        precision: str = "auto",
        resize: tuple[int, int] | None = None,
        max_side: int | str | None = "auto",
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        covariance_scale: float = DEFAULT_COVARIANCE_SCALE,
        depth_flip: bool = False,
        refine: bool | str | RefineConfig = "auto",
        min_confidence: float | str = "auto",
    ) -> None:
        if backend not in BACKENDS:
            raise InputError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "onnxruntime" and not isinstance(net, OnnxNetwork):
            if onnx_path is None or net is not None:
                raise InputError("onnx_path: backend 'onnxruntime' needs onnx_path (and net=None) or an OnnxNetwork")
            net = OnnxNetwork(onnx_path)
        if net is None:
            raise InputError("net: expected a MicKey network (or backend='onnxruntime' with onnx_path)")
        if isinstance(net, OnnxNetwork) and resize is None:
            resize = net.export_size  # the ONNX file takes exactly its export size
        if precision not in PRECISIONS:
            raise InputError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if resize is not None:
            if len(resize) != 2 or min(int(v) for v in resize) < MIN_PATCHES * PATCH_SIZE:
                raise InputError(
                    f"resize: expected W H of at least {MIN_PATCHES * PATCH_SIZE} pixels each, got {tuple(resize)}"
                )
            resize = (int(resize[0]), int(resize[1]))
        trained = getattr(net, "input_size", None) if max_side == "auto" else None
        #: (W, H) every image is brought to (the network's training size), or None: then max_side applies
        self.fit_size = None if trained is None else (int(trained[0]), int(trained[1]))
        if max_side == "auto":
            max_side = None if self.fit_size else DEFAULT_MAX_SIDE
        if max_side is not None and (isinstance(max_side, (bool, str)) or not isinstance(max_side, (int, np.integer))
                                     or max_side < MIN_PATCHES * PATCH_SIZE):
            raise InputError(f"max_side: expected 'auto', None or a long side of at least "
                             f"{MIN_PATCHES * PATCH_SIZE} pixels, got {max_side!r}")
        if isinstance(covariance_scale, bool) or not isinstance(covariance_scale, (int, float)) \
                or not np.isfinite(covariance_scale) or covariance_scale <= 0:
            raise InputError(f"covariance_scale: expected a positive number, got {covariance_scale!r}")
        self.covariance_scale = float(covariance_scale)
        if not isinstance(depth_flip, (bool, np.bool_)):
            raise InputError(f"depth_flip: expected True or False, got {depth_flip!r}")
        self.depth_flip = bool(depth_flip)
        if isinstance(refine, str):  # the command line's and the node's words: auto, on, off
            refine = refine_mode(refine)
        if isinstance(refine, str):  # "auto"
            refine = getattr(net, "preset", "custom") != "official"
        if isinstance(refine, (bool, np.bool_)):
            refine = RefineConfig() if refine else None
        elif not isinstance(refine, RefineConfig):
            raise InputError(f"refine: expected 'auto', 'on', 'off', True, False or a RefineConfig, got {refine!r}")
        #: the two-view bundle adjustment after the solver (:mod:`mickey_ros.geometry.two_view_ba`), or None
        self.refine: RefineConfig | None = refine
        #: poses with a lower confidence are refused (success=False): the out-of-domain rule
        self.min_confidence = min_confidence_value(min_confidence, net)
        self.max_side = None if max_side is None else int(max_side)
        self._budget_logged: set[tuple[int, int]] = set()
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        self.seed = seed
        self.solver = solver or SolverConfig()
        self.precision = precision
        self.resize = resize
        self._reference: _View | None = None

    # -- public API ------------------------------------------------------------------------------
    def estimate(self, image0: np.ndarray | torch.Tensor, K0: np.ndarray | torch.Tensor,
                 image1: np.ndarray | torch.Tensor, K1: np.ndarray | torch.Tensor) -> RelativePose:
        """Relative pose camera 0 -> camera 1 from two images.

        Args:
            image0, image1: uint8 ``[H, W, 3]`` RGB (or ``[H, W]`` grey) numpy arrays, float numpy in [0, 1],
                or torch tensors ``[3, H, W]`` (uint8 or float in [0, 1]). Sizes may differ.
            K0, K1: ``[3, 3]`` intrinsics of the given images (pixels).

        Returns:
            ``RelativePose`` with ``T_0to1`` (X1 = R X0 + t, metres); ``success=False`` with a reason when
            no pose could be estimated.

        Raises:
            ImageError, IntrinsicsError: malformed inputs (one-line messages naming image0/K1/...).
        """
        view0 = self._prepare(image0, K0, "image0", "K0")
        view1 = self._prepare(image1, K1, "image1", "K1")
        unusable = view0.unusable or view1.unusable
        if unusable:
            return RelativePose(success=False, reason=unusable, T_0to1=np.eye(4))
        view0.out = self._extract(view0)
        view1.out = self._extract(view1)
        return self._solve(view0, view1)

    def estimate_batch(self, pairs: Sequence[tuple[Any, Any, Any, Any]], return_errors: bool = False
                       ) -> list[RelativePose | MickeyError]:
        """``estimate`` on several pairs with the network run on all their images at once (offline throughput).

        Images of one size go through the backbone as one batch (the heads run per image); an image object shared
        by several pairs with the same K (a reference against many queries) is extracted once. Each pair is then
        solved on its own, from ``seed`` as in ``estimate``. On the CPU the backbone's rows are computed
        independently of the batch, so the poses equal ``estimate``'s exactly (tested); on a GPU, kernels chosen
        per batch size may round differently. An ONNX file with a fixed batch of 1 runs image by image.

        Args:
            pairs: ``(image0, K0, image1, K1)`` tuples, each as ``estimate`` takes them.
            return_errors: a pair with malformed input gives its ``MickeyError`` in the list instead of raising
                (the other pairs are still estimated).

        Returns:
            One ``RelativePose`` (or, with ``return_errors``, error) per pair, in order.

        Raises:
            ImageError, IntrinsicsError: malformed inputs (without ``return_errors``).
        """
        prepared: list[tuple[_View, _View] | MickeyError] = []
        shared: dict[int, list[tuple[np.ndarray, _View]]] = {}  # id(image) -> [(K, view)]: one view per image and K

        def view_of(image: Any, K: Any, name: str, k_name: str) -> _View:
            for K_seen, view in shared.get(id(image), []):
                if np.array_equal(np.asarray(K, dtype=np.float64), K_seen):
                    return view
            view = self._prepare(image, K, name, k_name)
            shared.setdefault(id(image), []).append((np.asarray(K, dtype=np.float64), view))
            return view

        for image0, K0, image1, K1 in pairs:
            try:
                prepared.append((view_of(image0, K0, "image0", "K0"), view_of(image1, K1, "image1", "K1")))
            except MickeyError as err:
                if not return_errors:
                    raise
                prepared.append(err)
        todo: dict[int, _View] = {}
        for pair in prepared:
            if not isinstance(pair, MickeyError) and not (pair[0].unusable or pair[1].unusable):
                todo.update({id(pair[0]): pair[0], id(pair[1]): pair[1]})
        self._extract_many(list(todo.values()))
        results: list[RelativePose | MickeyError] = []
        for pair in prepared:
            if isinstance(pair, MickeyError):
                results.append(pair)
            elif pair[0].unusable or pair[1].unusable:
                results.append(RelativePose(success=False, reason=pair[0].unusable or pair[1].unusable,
                                            T_0to1=np.eye(4)))
            else:
                results.append(self._solve(*pair))
        return results

    def warmup(self, width: int | None = None, height: int | None = None) -> float:
        """One full inference on a synthetic textured pair, result discarded; returns its wall time in seconds.

        The first inference of a process pays for kernel loading, thread-pool start and allocator growth (5.8 s
        against 0.4 s afterwards for the bundled network on a 2-core CPU); a node or a batch job calls this once
        before its first real pair. The pair is ``width x height`` pixels (default: ``resize`` if set, else the
        network's training size, else 294 x 224), so the shapes the real images reach are the ones warmed up.
        The solver's seed and any reference set with ``set_reference`` are left as they were.

        Raises:
            InputError: a size below the network's minimum.
        """
        if width is None or height is None:
            size = self.resize or getattr(self.net, "input_size", None) or WARMUP_SIZE
            width, height = (int(v) for v in size)
        if min(width, height) < MIN_PATCHES * PATCH_SIZE:
            raise InputError(f"warmup: expected a size of at least {MIN_PATCHES * PATCH_SIZE} px a side, "
                             f"got {width}x{height}")
        rng = np.random.default_rng(0)
        coarse = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)  # texture, not white noise
        shifted = np.roll(image, (3, 5), axis=(0, 1))
        f = 0.8 * width
        K = np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
        start = time.perf_counter()
        self.estimate(image, K, shifted, K)
        return time.perf_counter() - start

    def set_reference(self, image: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor) -> None:
        """Extract and keep the reference (camera 0) features for later ``estimate_query`` calls."""
        view = self._prepare(image, K, "reference image", "reference K")
        if not view.unusable:
            view.out = self._extract(view)
        self._reference = view

    def estimate_query(self, image: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor) -> RelativePose:
        """Pose reference -> query (``T_0to1`` with camera 0 = the reference), reusing its features.

        Raises:
            InputError: ``set_reference`` was not called first.
        """
        if self._reference is None:
            raise InputError("reference: call set_reference(image, K) before estimate_query")
        view1 = self._prepare(image, K, "query image", "query K")
        unusable = self._reference.unusable or view1.unusable
        if unusable:
            return RelativePose(success=False, reason=unusable, T_0to1=np.eye(4))
        view1.out = self._extract(view1)
        return self._solve(self._reference, view1)

    def network_input(self, image: np.ndarray | torch.Tensor,
                      K: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, np.ndarray, tuple[float, float]]:
        """An image as :meth:`estimate` hands it to the network (for diagnostics that run the network themselves).

        Args:
            image: as :meth:`estimate` takes it (``[H, W, 3]`` uint8 / float RGB, or a ``[3, H, W]`` tensor).
            K: ``[3, 3]`` intrinsics of ``image`` (pixels).

        Returns:
            ``(tensor, K_net, (sx, sy))``: the ``[1, 3, H', W']`` float32 network input in [0, 1] on the device
            (after ``resize`` or the size budget, cropped to multiples of 14 px), its ``[3, 3]`` float64
            intrinsics (pixels), and the resize factors ``(W_resized / W, H_resized / H)`` before the crop
            (``(1, 1)`` without a resize).

        Raises:
            ImageError, IntrinsicsError, InputError: what :meth:`estimate` raises for this image and K.
        """
        view = self._prepare(image, K, "image", "K")
        return view.image, view.K, view.scale_xy

    # -- steps -----------------------------------------------------------------------------------
    def _prepare(self, image: np.ndarray | torch.Tensor, K: np.ndarray | torch.Tensor,
                 name: str, k_name: str) -> _View:
        rgb = to_float_rgb(image, name)  # [H, W, 3] float32 numpy in [0, 1]
        K = check_intrinsics(K, k_name)
        height, width = rgb.shape[:2]
        if self.resize is None:
            check_network_size(height, width, name)  # the plainer error first
        check_intrinsics_fit(K, width, height, k_name)
        scale = (1.0, 1.0)
        if self.resize is not None:
            target = self.resize
        elif self.fit_size is not None:
            target = training_size_target(width, height, self.fit_size)
        else:
            target = budget_size(width, height, self.max_side)
        if self.resize is None and target is not None and (width, height) not in self._budget_logged:
            self._budget_logged.add((width, height))
            if self.fit_size is not None:
                log.info("%s: %dx%d resized to %dx%d for the network's %dx%d training size, K rescaled",
                         name, width, height, *target, *self.fit_size)
            else:
                log.info("%s: %dx%d is above the %d-px size budget (max_side): resized to %dx%d, K rescaled",
                         name, width, height, self.max_side, *target)
        if target is not None and target != (width, height):
            new_w, new_h = target
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
            scale = (new_w / width, new_h / height)
            K = rescale_intrinsics(K, *scale)
            height, width = new_h, new_w
        check_network_size(height, width, name)
        std = float(rgb.std())  # of what the network sees (after any resize: cheaper on large frames)
        unusable = (f"{name} is nearly constant (pixel std {std * 255:.2g} grey levels < 1): nothing to match"
                    if std < MIN_IMAGE_STD else "")
        crop_h, crop_w = crop_to_multiple(height, width)
        tensor = torch.from_numpy(np.ascontiguousarray(rgb[:crop_h, :crop_w])).permute(2, 0, 1)[None]
        return _View(image=tensor.to(self.device), K=K, scale_xy=scale, unusable=unusable)

    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if self.precision == "auto" and self.device.type == "cuda":
            dtype = torch.float16
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield

    @torch.no_grad()
    def _extract(self, view: _View) -> MicKeyOutput:
        return self._outputs(view.image, [view])[0]

    @torch.no_grad()
    def _extract_many(self, views: list[_View]) -> None:
        """``_extract`` on many views, batched per image size; sets each ``view.out`` (``[1, ...]`` tensors)."""
        if isinstance(self.net, OnnxNetwork) and not self.net.dynamic_batch:
            for view in views:
                view.out = self._extract(view)
            return
        groups: dict[tuple[int, ...], list[_View]] = {}
        for view in views:
            groups.setdefault(tuple(view.image.shape), []).append(view)
        for group in groups.values():
            for view, out in zip(group, self._outputs(torch.cat([view.image for view in group]), group)):
                view.out = out

    def _outputs(self, images: torch.Tensor, group: list[_View]) -> list[MicKeyOutput]:
        """The network's ``[1, ...]`` outputs per image of ``[B, 3, H, W]`` (``group``: their views, for K), with
        the mirror-averaged depth when ``depth_flip`` is on."""
        outs = self._run_many(images, group)
        if self.depth_flip:
            outs = [flip_average_depth(o, f) for o, f in zip(outs, self._run_many(images.flip(-1), group))]
        return outs

    def _run_many(self, images: torch.Tensor, group: list[_View]) -> list[MicKeyOutput]:
        """The network on ``[B, 3, H, W]`` images of one size (``group``: their views, for K): ``[1, ...]`` outputs."""
        if isinstance(self.net, OnnxNetwork):
            focal = torch.tensor([view.K[0, 0] for view in group], dtype=torch.float32)
            out = self.net(images, focal)
            return [dataclasses.replace(out, kpts=out.kpts[b:b + 1], depth=out.depth[b:b + 1],
                                        scores=out.scores[b:b + 1], descriptors=out.descriptors[b:b + 1])
                    for b in range(len(group))]
        with self._autocast():
            features = self.net.backbone_features(images)  # the batched part: the backbone dominates
        outs = []
        for b, view in enumerate(group):  # heads per image (their convolutions round differently per batch and
            # per memory layout: contiguous, as the features of a batch of one)
            focal = torch.tensor([view.K[0, 0]], dtype=torch.float32, device=self.device)
            outs.append(self.net.forward_heads(features[b:b + 1].contiguous().float(), focal))
        return outs

    @torch.no_grad()
    def _solve(self, view0: _View, view1: _View) -> RelativePose:
        out0, out1 = view0.out, view1.out
        assert out0 is not None and out1 is not None  # internal invariant: _extract ran
        P = self.net.match(out0, out1)[0].float()
        bad = _non_finite(out0, out1, P)
        if bad:
            return RelativePose(success=False, reason=f"network output not finite: {bad}", T_0to1=np.eye(4))
        K0 = torch.from_numpy(view0.K)[None].to(self.device)
        K1 = torch.from_numpy(view1.K)[None].to(self.device)
        pts0 = backproject(out0.kpts.double(), out0.depth.double(), K0)[0]
        pts1 = backproject(out1.kpts.double(), out1.depth.double(), K1)[0]
        generator = torch.Generator(device=self.device)
        if self.seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(self.seed))
        est = solve_relative_pose(pts0, pts1, P, self.solver, generator=generator)
        maps = dict(
            depth0=_grid_map(out0.depth, out0.grid_hw),
            depth1=_grid_map(out1.depth, out1.grid_hw),
            scores0=_grid_map(out0.scores, out0.grid_hw),
            scores1=_grid_map(out1.scores, out1.grid_hw),
        )
        if not est.success:
            return RelativePose(success=False, reason=est.reason, T_0to1=np.eye(4), **maps)
        if est.confidence < self.min_confidence:  # out of domain: no refinement, no pose
            return RelativePose(
                success=False, reason=f"confidence {est.confidence:.3f} below min_confidence {self.min_confidence:g}: "
                "the matches do not agree on one metric pose (a scene unlike the network's training data?)",
                T_0to1=np.eye(4), confidence=float(est.confidence), soft_inliers=float(est.soft_inliers),
                num_inliers=int(est.num_inliers), num_matches=int(est.num_matches), **maps)
        idx0, idx1 = est.idx0.to(self.device), est.idx1.to(self.device)
        kpts3d0, kpts3d1 = pts0[idx0].cpu().numpy(), pts1[idx1].cpu().numpy()
        R, t, inliers_t, refine_reason = est.R, est.t, est.inliers, "not asked for"
        if self.refine is not None:
            R, t, inliers_t, refine_reason = self._refine(out0.kpts[0, idx0], out1.kpts[0, idx1], pts0[idx0],
                                                                  pts1[idx1], est.inliers, est.weights, K0[0], K1[0],
                                                                  R, t)
        T_0to1 = make_T(R.cpu().numpy(), t.cpu().numpy())
        inliers = inliers_t.cpu().numpy().astype(bool)
        covariance = pose_covariance(kpts3d0[inliers], kpts3d1[inliers], T_0to1, float(view0.K[0, 0]),
                                     float(view1.K[0, 0]), scale=self.covariance_scale)
        return RelativePose(
            success=True,
            reason="",
            T_0to1=T_0to1,
            confidence=float(est.confidence),
            soft_inliers=float(est.soft_inliers),
            num_inliers=int(inliers.sum()),
            num_matches=int(est.num_matches),
            kpts3d0=kpts3d0,
            kpts3d1=kpts3d1,
            kpts2d0=_to_caller_pixels(out0.kpts[0, idx0], view0.scale_xy),
            kpts2d1=_to_caller_pixels(out1.kpts[0, idx1], view1.scale_xy),
            inliers=inliers,
            covariance=covariance,
            match_weights=est.weights.double().cpu().numpy(),
            refined=not refine_reason,
            refine_reason=refine_reason,
            **maps,
        )


    def _refine(self, kpts0: torch.Tensor, kpts1: torch.Tensor, X0: torch.Tensor, X1: torch.Tensor,
                inliers: torch.Tensor, weights: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor, R: torch.Tensor,
                t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        """Two-view bundle adjustment of the solver's pose (:func:`refine_two_view`), on the solver's inliers, then
        ``reselect_rounds`` times on the sampled matches the refined pose explains (Sampson distance <=
        ``reselect_px`` network pixels and 3D residual <= ``reselect_m``).

        Args:
            kpts0, kpts1: ``[M, 2]`` network-input pixels of the winning draw's matches; X0, X1: ``[M, 3]`` their
                3D keypoints (metres, each in its camera; z is the predicted depth); inliers: ``[M]`` the solver's
                mask; weights: ``[M]`` their matching probabilities.
            K0, K1: ``[3, 3]`` network-input intrinsics; R, t: the solver's pose (``X1 = R X0 + t``, metres).

        Returns:
            ``(R, t, inliers, reason)``: the refined pose, the ``[M]`` mask of the matches it was fitted to and ``""``;
            or the solver's pose and mask with the reason the refinement did not apply.
        """
        cfg = self.refine
        assert cfg is not None  # internal invariant: called only when refining
        cpu = torch.device("cpu")  # hundreds of small float64 operations: faster on the CPU than as GPU kernels
        k0, k1 = kpts0.double().to(cpu), kpts1.double().to(cpu)
        X0, X1 = X0.double().to(cpu), X1.double().to(cpu)
        d0, d1 = X0[:, 2], X1[:, 2]
        K0, K1, R0, t0 = K0.double().to(cpu), K1.double().to(cpu), R.double().to(cpu), t.double().to(cpu)
        mask = inliers.to(cpu)
        # each match's cost weighted by its matching probability relative to the solver inliers' median (at most 1)
        w = weights.double().to(cpu)
        w = (w / w[mask].median().clamp_min(1e-30)).clamp(max=1.0) if cfg.probability_weights else torch.ones_like(w)
        res = refine_two_view(k0[mask], k1[mask], d0[mask], d1[mask], K0, K1, R0, t0, cfg, w[mask])
        if not res.success:
            return R, t, inliers, res.reason
        for _ in range(cfg.reselect_rounds if cfg.reselect_px is not None else 0):
            moved = X0 @ res.R.T + res.t
            near = ((moved - X1).norm(dim=-1) <= cfg.reselect_m) & (moved[:, 2] > MIN_DEPTH)  # in front of camera 1
            again = near & (sampson_distance(k0, k1, K0, K1, res.R, res.t) <= cfg.reselect_px)
            res2 = refine_two_view(k0[again], k1[again], d0[again], d1[again], K0, K1, res.R, res.t, cfg, w[again])
            if not res2.success:  # fewer than MIN_POINTS explained, or no better: keep the last refined pose
                break
            res, mask = res2, again
        return res.R.to(R.device), res.t.to(R.device), mask.to(inliers.device), ""


def _non_finite(out0: MicKeyOutput, out1: MicKeyOutput, P: torch.Tensor) -> str:
    """Names of the network outputs holding NaN or Inf (``"depth0, match probabilities"``), empty if none."""
    names = []
    for k, out in ((0, out0), (1, out1)):
        for field_name in ("kpts", "depth", "scores", "descriptors"):
            if not bool(torch.isfinite(getattr(out, field_name)).all()):
                names.append(f"{field_name}{k}")
    if not bool(torch.isfinite(P).all()):
        names.append("match probabilities")
    return ", ".join(names)


def check_network_size(height: int, width: int, name: str = "image") -> None:
    """Raise ImageError when an image (after any resize) holds fewer than 3x3 patches of 14 px."""
    least = MIN_PATCHES * PATCH_SIZE
    if height < least or width < least:
        raise ImageError(
            f"{name}: expected at least {least}x{least} pixels ({MIN_PATCHES}x{MIN_PATCHES} patches of "
            f"{PATCH_SIZE}), got {width}x{height} (WxH)"
        )


def to_float_rgb(image: np.ndarray | torch.Tensor, name: str = "image") -> np.ndarray:
    """Normalise an input image to float32 ``[H, W, 3]`` RGB numpy in [0, 1].

    Accepts uint8 ``[H, W, 3]`` / ``[H, W]`` numpy, float numpy ``[H, W, 3]`` in [0, 1], and torch
    tensors ``[3, H, W]`` (uint8, or float in [0, 1]).

    Raises:
        ImageError: any other shape/dtype, or float values outside [0, 1].
    """
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ImageError(f"{name}: expected a torch tensor [3, H, W], got shape {list(t.shape)}")
        image = t.permute(1, 2, 0).numpy()
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{name}: expected a numpy array [H, W, 3] or a torch tensor [3, H, W], got {type(image).__name__}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"{name}: expected an RGB image [H, W, 3], got shape {list(image.shape)}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float32)
        if not np.all(np.isfinite(out)) or out.min() < 0.0 or out.max() > 1.0:
            raise ImageError(f"{name}: expected float values in [0, 1], got range [{out.min():g}, {out.max():g}]")
        return out
    raise ImageError(f"{name}: expected dtype uint8 or float in [0, 1], got {image.dtype}")


def _grid_map(values: torch.Tensor, grid_hw: tuple[int, int]) -> np.ndarray:
    """``[1, N]`` per-patch values -> ``[h, w]`` float32 numpy map."""
    return values[0].reshape(grid_hw).float().cpu().numpy()


def _to_caller_pixels(kpts: torch.Tensor, scale_xy: tuple[float, float]) -> np.ndarray:
    """Undo the optional resize (half-pixel convention): ``x_in = (x_net + 0.5) / sx - 0.5``."""
    k = kpts.double().cpu().numpy().copy()
    sx, sy = scale_xy
    if (sx, sy) != (1.0, 1.0):
        k[:, 0] = (k[:, 0] + 0.5) / sx - 0.5
        k[:, 1] = (k[:, 1] + 0.5) / sy - 0.5
    return k
