"""The custom message ``mickey_ros_msgs/msg/RelativePose``: its definition, a buildable interface package,
and registration in a rosbags typestore (so ``mickey-ros bag`` writes it with its schema, no ROS needed)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from mickey_ros.errors import InputError

PACKAGE = "mickey_ros_msgs"
MSG_NAMES = ("RelativePose",)

PACKAGE_XML = """<?xml version="1.0"?>
<?xml-model href="http://download.ros.org/schema/package_format3.xsd" schematypens="http://www.w3.org/2001/XMLSchema"?>
<package format="3">
  <name>mickey_ros_msgs</name>
  <version>0.1.0</version>
  <description>Messages of mickey_ros (MicKey metric relative pose).</description>
  <maintainer email="maintainers@mickey-ros.invalid">mickey_ros maintainers</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>builtin_interfaces</depend>
  <depend>std_msgs</depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export>
    <build_type>ament_cmake</build_type>
  </export>
</package>
"""

CMAKELISTS = """cmake_minimum_required(VERSION 3.8)
project(mickey_ros_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(builtin_interfaces REQUIRED)
find_package(std_msgs REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME}
  {msgs}
  DEPENDENCIES builtin_interfaces std_msgs geometry_msgs
)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
"""


def message_definition(name: str = "RelativePose") -> str:
    """Text of ``msg/<name>.msg`` as shipped in the package."""
    return resources.files("mickey_ros.ros").joinpath("msg", f"{name}.msg").read_text()


def make_interface_package(out_dir: str | Path) -> Path:
    """Write the ament_cmake package ``mickey_ros_msgs`` into ``out_dir`` (build it with colcon).

    Raises:
        InputError: the target exists and is not an earlier copy of this package.
    """
    root = Path(out_dir) / PACKAGE
    if root.exists() and not (root / "package.xml").is_file():
        raise InputError(f"make-interfaces: {root} exists and is not a {PACKAGE} package; choose another folder")
    try:
        (root / "msg").mkdir(parents=True, exist_ok=True)
        (root / "package.xml").write_text(PACKAGE_XML)
        (root / "CMakeLists.txt").write_text(CMAKELISTS.replace("{msgs}", " ".join(f'"msg/{m}.msg"' for m in MSG_NAMES)))
        for name in MSG_NAMES:
            (root / "msg" / f"{name}.msg").write_text(message_definition(name))
    except OSError as err:
        raise InputError(f"make-interfaces: cannot write {root}: {err.strerror}") from err
    return root


def register_in_typestore(typestore: Any) -> None:
    """Add ``mickey_ros_msgs/msg/RelativePose`` to a rosbags typestore."""
    from rosbags.typesys import get_types_from_msg

    types: dict[str, Any] = {}
    for name in MSG_NAMES:
        types.update(get_types_from_msg(message_definition(name), f"{PACKAGE}/msg/{name}"))
    typestore.register(types)
