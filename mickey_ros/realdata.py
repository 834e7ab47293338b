"""Real photographs with metric ground truth -> ``mickey-ros eval-pairs`` lists (ROS-free, numpy + OpenCV).

The development sets of ``shared/realdata`` (its README gives sources, licences and ground-truth conventions) and
scikit-image's Middlebury motorcycle pair, converted into one folder per set::

    OUT/<set>/pairs.txt       the eval-pairs list (name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16)), '#' notes first
    OUT/<set>/image_dir.txt   one line: the absolute folder the names in pairs.txt are relative to
    OUT/<set>/images/         images the conversion writes (EuRoC undistorted, the motorcycle pair); the other
                              sets' lists name the images where they are

so that ``mickey-ros eval-pairs OUT/<set>/pairs.txt --image-dir "$(cat OUT/<set>/image_dir.txt)"`` scores a set.
The data are for research use only: OUT belongs outside the repository (:func:`check_out_dir`).

Sets (ground truth ``T_0to1``: ``X1 = R X0 + t``, metres, camera 0 = the pair's first image):

* ``kitti_seq1``, ``kitti_seq2``: KITTI odometry left grey frames ``image_l/NNNNNN.png``; K = ``P0[:, :3]`` of
  ``calib.txt`` for both frames; ``poses.txt`` holds camera-to-world of the left camera; pairs (i, i + 5) for
  i = 0, 2, ..., 44 (23 pairs); ``T_0to1 = inv(pose_j) @ pose_i``.
* ``middlebury``: rectified stereo pairs ``<scene>/im0.png``, ``<scene>/im1.png``; K0, K1 from ``cam0``, ``cam1``
  of ``calib.txt``; ``T_0to1 = [I | (-baseline / 1000, 0, 0)]`` (baseline in mm). ArtL, Teddy and Computer have
  nominal calibration only (up to ~1.5 deg off): kept, and named in the list's notes.
* ``euroc_stereo``: the EuRoC VI-sensor stereo pair, radial-tangential distortion, not rectified: each image is
  undistorted with OpenCV (``cv2.undistort``, K kept) into ``images/``; ``T_0to1 = inv(T_BS_cam1) @ T_BS_cam0``.
  Another camera or distortion model is refused (:class:`DatasetError`), never passed on as a pinhole pair.
* ``motorcycle``: ``skimage.data.stereo_motorcycle()`` (Middlebury 2014, quarter size) written as PNGs; f, the
  principal point, the right camera's cx offset and the baseline from its docstring (:data:`MOTORCYCLE`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mickey_ros.errors import DatasetError, InputError, IntrinsicsError
from mickey_ros.eval_pairs import format_pair_line
from mickey_ros.geometry.camera import check_intrinsics
from mickey_ros.geometry.se3 import invert_T

SETS = ("kitti_seq1", "kitti_seq2", "middlebury", "euroc_stereo", "motorcycle")
KITTI_GAP = 5  # frames between the two images of a KITTI pair
KITTI_STARTS = range(0, 46, 2)  # first frames of the KITTI pairs: 23 pairs on 51 frames
MIDDLEBURY_NOMINAL = ("ArtL", "Teddy", "Computer")  # scenes with nominal calibration only (shared/realdata README)
MOTORCYCLE = {"f": 994.978, "cx": 311.193, "cy": 254.877, "dcx": 31.086, "baseline_mm": 193.001}
"""``skimage.data.stereo_motorcycle`` docstring: focal length, principal point (px), the right camera's cx offset
(px) and the baseline (mm) of the shipped (down-sampled) images."""


@dataclass(frozen=True)
class ConvertedSet:
    """One converted set: its list, the folder its image names are relative to, and notes on its ground truth."""

    name: str
    pairs_file: Path
    image_dir: Path
    num_pairs: int
    notes: tuple[str, ...] = ()


# -- arguments -----------------------------------------------------------------------------------------------------
def parse_sets(text: str, name: str = "--sets", known: Sequence[str] = SETS) -> tuple[str, ...]:
    """``"kitti_seq1,middlebury"`` -> the set names, in ``known`` order; ``"all"`` -> every known set.

    Raises:
        InputError: an empty list or an unknown name (the message lists the known ones).
    """
    known = tuple(known)
    names = [part.strip() for part in text.split(",") if part.strip()]
    if names == ["all"]:
        return known
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        got = ", ".join(unknown) if unknown else repr(text)
        raise InputError(f"{name}: expected a comma-separated list of {', '.join(known)} (or all), got {got}")
    return tuple(n for n in known if n in names)


def check_realdata(path: str | Path, name: str = "--realdata") -> Path:
    """The real-data folder, which must exist.

    Raises:
        InputError: it is missing or not a folder.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"{name}: folder not found: {root} (expected the sets of shared/realdata/README.md)")
    return root


def check_out_dir(out: str | Path, repository: str | Path, name: str = "--out") -> Path:
    """An output folder outside ``repository`` (the data's licences forbid copies inside it).

    Raises:
        InputError: the folder is (inside) the repository, or exists as a file.
    """
    path, repo = Path(out).resolve(), Path(repository).resolve()
    if path == repo or repo in path.parents:
        raise InputError(f"{name}: {out} is inside the repository {repo}; the real data must not be copied there "
                         "(pick a folder outside it)")
    if path.exists() and not path.is_dir():
        raise InputError(f"{name}: {out} exists and is not a folder")
    return path


# -- conversion ----------------------------------------------------------------------------------------------------
def convert_sets(names: Sequence[str], realdata: str | Path, out: str | Path) -> list[ConvertedSet]:
    """Convert each named set of ``realdata`` into ``out/<set>/`` (module docstring).

    Raises:
        DatasetError: a set's folder is missing or one of its files is malformed (one line naming the file).
        InputError: an unknown set name.
        DependencyError: ``motorcycle`` without scikit-image.
    """
    converters = {"kitti_seq1": convert_kitti, "kitti_seq2": convert_kitti, "middlebury": convert_middlebury,
                  "euroc_stereo": convert_euroc}
    done = []
    for name in names:
        if name == "motorcycle":
            done.append(convert_motorcycle(Path(out) / name))
            continue
        if name not in converters:
            raise InputError(f"set: expected one of {', '.join(SETS)}, got {name!r}")
        src = Path(realdata) / name
        if not src.is_dir():
            raise DatasetError(f"{realdata}: no {name}/ folder (expected the sets of shared/realdata/README.md)")
        done.append(converters[name](src, Path(out) / name, name))
    return done


def convert_kitti(src: Path, out: Path, name: str = "kitti") -> ConvertedSet:
    """KITTI odometry folder (``calib.txt``, ``poses.txt``, ``image_l/``) -> pairs (i, i + :data:`KITTI_GAP`)."""
    K = kitti_intrinsics(src / "calib.txt")
    poses = kitti_poses(src / "poses.txt")
    lines = []
    for i in KITTI_STARTS:
        j = i + KITTI_GAP
        if j >= len(poses):
            break
        lines.append(format_pair_line(f"image_l/{i:06d}.png", f"image_l/{j:06d}.png", K, K,
                                      invert_T(poses[j]) @ poses[i]))
    if not lines:
        raise DatasetError(f"{src / 'poses.txt'}: expected at least {KITTI_GAP + 1} poses (frames i and "
                           f"i + {KITTI_GAP}), got {len(poses)}")
    return _write_set(out, name, lines, src, (f"frames (i, i + {KITTI_GAP}), i = 0, 2, 4, ...",))


def kitti_intrinsics(path: Path) -> np.ndarray:
    """``[3, 3]`` K = ``P0[:, :3]``: P0 is the first line of a KITTI ``calib.txt`` (12 numbers, ``P0:`` optional)."""
    return kitti_projection(path)[:, :3]


def kitti_projection(path: Path) -> np.ndarray:
    """``[3, 4]`` P0 of a KITTI ``calib.txt`` (its first line, row-major; ``P0[:, :3]`` checked as a K)."""
    rows = _read_rows(path, 12, "a 3x4 projection matrix (row-major)", labels=("P0:",))
    P0 = rows[0].reshape(3, 4)
    try:
        check_intrinsics(P0[:, :3], f"{path}: P0[:, :3]")
    except IntrinsicsError as err:
        raise DatasetError(str(err)) from err
    return P0


def kitti_poses(path: Path) -> np.ndarray:
    """``[N, 4, 4]`` camera-to-world poses of a KITTI ``poses.txt`` (one 3x4 row-major pose per line, metres)."""
    rows = _read_rows(path, 12, "a 3x4 camera-to-world pose (row-major)")
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :] = rows.reshape(-1, 3, 4)
    return poses


def convert_middlebury(src: Path, out: Path, name: str = "middlebury") -> ConvertedSet:
    """Middlebury scenes (``<scene>/calib.txt``, ``im0.png``, ``im1.png``) -> one stereo pair per scene."""
    scenes = sorted(p.parent.name for p in src.glob("*/calib.txt"))
    if not scenes:
        raise DatasetError(f"{src}: no <scene>/calib.txt (expected Middlebury 2014 scene folders)")
    lines = []
    for scene in scenes:
        K0, K1, baseline_m = middlebury_calib(src / scene / "calib.txt")
        T = np.eye(4)
        T[0, 3] = -baseline_m  # camera 1 sits +baseline along camera 0's x axis
        lines.append(format_pair_line(f"{scene}/im0.png", f"{scene}/im1.png", K0, K1, T))
    nominal = [s for s in scenes if s in MIDDLEBURY_NOMINAL]
    notes = (f"nominal calibration only (up to ~1.5 deg off), kept: {', '.join(nominal)}",) if nominal else ()
    return _write_set(out, name, lines, src, notes)


def middlebury_calib(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(K0 [3, 3], K1 [3, 3], baseline metres)`` of a Middlebury ``calib.txt`` (``cam0=[...]``, mm baseline)."""
    text = _read_text(path)
    fields = dict(re.findall(r"(\w+)\s*=\s*(\[[^\]]*\]|\S+)", text))
    Ks = []
    for key in ("cam0", "cam1"):
        values = fields.get(key, "").strip("[]").replace(";", " ").split()
        try:
            Ks.append(check_intrinsics(np.array([float(v) for v in values]).reshape(3, 3), f"{path}: {key}"))
        except (ValueError, IntrinsicsError) as err:
            raise DatasetError(f"{path}: {key}: expected a 3x3 matrix '[fx 0 cx; 0 fy cy; 0 0 1]', "
                               f"got {fields.get(key)!r}") from err
    try:
        baseline_mm = float(fields["baseline"])
    except (KeyError, ValueError) as err:
        raise DatasetError(f"{path}: baseline: expected a number (mm), got {fields.get('baseline')!r}") from err
    if not baseline_mm > 0:
        raise DatasetError(f"{path}: baseline: expected a positive number (mm), got {baseline_mm:g}")
    return Ks[0], Ks[1], baseline_mm / 1000.0


def convert_euroc(src: Path, out: Path, name: str = "euroc_stereo") -> ConvertedSet:
    """EuRoC ``cam0``/``cam1`` (``sensor.yaml``, ``data/<stamp>.png``): the pairs of equal stamps, undistorted."""
    import cv2

    cams = [euroc_sensor(src / cam / "sensor.yaml") for cam in ("cam0", "cam1")]
    stamps = sorted({p.name for p in (src / "cam0" / "data").glob("*.png")}
                    & {p.name for p in (src / "cam1" / "data").glob("*.png")})
    if not stamps:
        raise DatasetError(f"{src}: no image in both cam0/data and cam1/data (expected <timestamp>.png pairs)")
    T = invert_T(cams[1][2]) @ cams[0][2]  # camera 0 -> body -> camera 1
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for stamp in stamps:
        names = []
        for cam, (K, dist, _) in zip(("cam0", "cam1"), cams):
            path = src / cam / "data" / stamp
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise DatasetError(f"{path}: cannot decode the image (expected a PNG)")
            names.append(f"{cam}_{stamp}")
            if not cv2.imwrite(str(images / names[-1]), cv2.undistort(image, K, dist)):
                raise DatasetError(f"{images / names[-1]}: cannot write the undistorted image")
        lines.append(format_pair_line(names[0], names[1], cams[0][0], cams[1][0], T))
    return _write_set(out, name, lines, images, ("undistorted with cv2.undistort (radial-tangential, K kept)",))


def euroc_sensor(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K [3, 3], distortion [k1, k2, p1, p2], T_BS [4, 4] camera-to-body)`` of a EuRoC ``sensor.yaml``.

    Raises:
        DatasetError: not a pinhole camera with radial-tangential distortion, or a malformed field.
    """
    import yaml

    text = "\n".join(line for line in _read_text(path).splitlines() if not line.startswith("%YAML"))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise DatasetError(f"{path}: cannot parse the YAML ({type(err).__name__})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a EuRoC sensor.yaml mapping")
    for key, expected in (("camera_model", "pinhole"), ("distortion_model", "radial-tangential")):
        if data.get(key) != expected:
            raise DatasetError(f"{path}: {key}: expected {expected!r} (undistorted here with OpenCV), "
                               f"got {data.get(key)!r}")
    try:
        fu, fv, cu, cv = (float(v) for v in data["intrinsics"])
        dist = np.array([float(v) for v in data["distortion_coefficients"]])
        T_BS = np.array([float(v) for v in data["T_BS"]["data"]]).reshape(4, 4)
        K = check_intrinsics(np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]]), f"{path}: intrinsics")
    except (KeyError, TypeError, ValueError, IntrinsicsError) as err:
        raise DatasetError(f"{path}: expected intrinsics [fu, fv, cu, cv], distortion_coefficients [k1, k2, p1, p2] "
                           f"and T_BS data (16 numbers)") from err
    if dist.size != 4:
        raise DatasetError(f"{path}: distortion_coefficients: expected [k1, k2, p1, p2], got {dist.size} numbers")
    return K, dist, T_BS


def convert_motorcycle(out: Path, name: str = "motorcycle") -> ConvertedSet:
    """``skimage.data.stereo_motorcycle()`` -> ``images/im0.png``, ``images/im1.png`` and their pair."""
    import cv2

    from mickey_ros.deps import require

    left, right, _ = require("skimage.data", "test", "the motorcycle set").stereo_motorcycle()
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for file, rgb in (("im0.png", left), ("im1.png", right)):
        if not cv2.imwrite(str(images / file), np.ascontiguousarray(rgb[:, :, ::-1])):
            raise DatasetError(f"{images / file}: cannot write the image")
    m = MOTORCYCLE
    K0 = np.array([[m["f"], 0.0, m["cx"]], [0.0, m["f"], m["cy"]], [0.0, 0.0, 1.0]])
    K1 = K0.copy()
    K1[0, 2] += m["dcx"]
    T = np.eye(4)
    T[0, 3] = -m["baseline_mm"] / 1000.0
    return _write_set(out, name, [format_pair_line("im0.png", "im1.png", K0, K1, T)], images,
                      ("skimage.data.stereo_motorcycle(), calibration from its docstring",))


# -- helpers -------------------------------------------------------------------------------------------------------
def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DatasetError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: cannot read ({type(err).__name__})") from err


def _read_rows(path: Path, width: int, what: str, labels: Sequence[str] = ()) -> np.ndarray:
    """``[N, width]`` float64 from the non-blank lines (a leading ``label:`` token dropped where it is in
    ``labels``; only the lines so labelled count then)."""
    rows = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split()
        if not fields or (fields[0].endswith(":") and fields[0] not in labels):
            continue
        fields = fields[1:] if fields[0] in labels else fields
        try:
            row = [float(v) for v in fields]
        except ValueError:
            row = []
        if len(row) != width or not np.all(np.isfinite(row)):
            raise DatasetError(f"{path}:{number}: expected {width} numbers ({what}), got {line.strip()[:60]!r}")
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: expected lines of {width} numbers ({what}), got none")
    return np.array(rows)


def _write_set(out: Path, name: str, lines: list[str], image_dir: Path, notes: Sequence[str]) -> ConvertedSet:
    out.mkdir(parents=True, exist_ok=True)
    image_dir = Path(image_dir).resolve()
    header = [f"# {name}: {len(lines)} pair{'' if len(lines) == 1 else 's'} for mickey-ros eval-pairs, written by "
              "mickey_ros.realdata",
              "# name0 name1 rot0 rot1 K0(9) K1(9) T_0to1(16); T_0to1: X1 = R X0 + t, metres",
              f"# image dir: {image_dir}", *(f"# {note}" for note in notes)]
    (out / "pairs.txt").write_text("\n".join(header + lines) + "\n")
    (out / "image_dir.txt").write_text(f"{image_dir}\n")
    return ConvertedSet(name, out / "pairs.txt", image_dir, len(lines), tuple(notes))
