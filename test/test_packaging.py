"""setup.py builds a wheel without packaging warnings, and the wheel holds every data file the code reads: the bundled
network, the demo pairs, the message definition (package and ROS share), launch, config, RViz, package.xml."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import REPO

# what setup.py reads: the package, its data folders and the ROS share files (copied from git's file list, so a
# working tree's caches and scratch files never reach the build)
SOURCES = ("setup.py", "setup.cfg", "package.xml", "LICENSE", "README.md", "resource/", "mickey_ros/", "launch/",
           "config/", "rviz/", "msg/")

DATA = {
    "mickey_ros/data/default_small.pt",
    "mickey_ros/data/demo/pairs.txt",
    "mickey_ros/data/demo/intrinsics.txt",
    "mickey_ros/data/demo/gt_pose.txt",
    *(f"mickey_ros/data/demo/im{k}.png" for k in range(6)),
    "mickey_ros/ros/msg/RelativePose.msg",
}
SHARE = {
    "share/ament_index/resource_index/packages/mickey_ros",
    "share/mickey_ros/package.xml",
    "share/mickey_ros/msg/RelativePose.msg",
    "share/mickey_ros/launch/relocalize.launch.py",
    "share/mickey_ros/launch/map_alignment.launch.py",
    "share/mickey_ros/config/relocalize.yaml",
    "share/mickey_ros/config/map_alignment.yaml",
    "share/mickey_ros/rviz/mickey.rviz",
}


@pytest.mark.slow  # builds a wheel (a few seconds, no network: --no-build-isolation)
def test_wheel_builds_without_warnings_and_installs_the_data_files(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    listed = subprocess.run(["git", "ls-files", "-z"], capture_output=True, cwd=REPO, check=True).stdout.decode()
    src = tmp_path / "src"
    for name in filter(None, listed.split("\0")):
        if name in SOURCES or name.startswith(tuple(s for s in SOURCES if s.endswith("/"))):
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # its "byte-compiling is
    # disabled" lines are the environment's, not the package's
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                           "--disable-pip-version-check", "-v", "-w", str(tmp_path / "wheel")],
                          capture_output=True, text=True, cwd=src, env=env, timeout=300)
    output = (proc.stdout + proc.stderr).replace(str(tmp_path), "<tmp>")  # the test's name says "warnings"
    assert proc.returncode == 0, output[-3000:]
    warnings = [line.strip() for line in output.splitlines() if "warn" in line.lower()]
    assert warnings == [], "\n".join(warnings)

    (wheel,) = (tmp_path / "wheel").glob("mickey_ros-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data_root = next(n.split("/data/")[0] for n in names if ".data/data/" in n) + "/data/"
    missing = sorted(DATA - names) + sorted(SHARE - {n[len(data_root):] for n in names if n.startswith(data_root)})
    assert missing == [], f"not in the wheel: {missing}"
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "mickey_ros").rglob("*.py")
               if p.relative_to(REPO).as_posix() in listed.split("\0")}
    assert modules - names == set(), "modules missing from the wheel"
    assert not any("__pycache__" in n for n in names)
