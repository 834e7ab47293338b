"""ros2 launch mickey_ros relocalize.launch.py cam0:=/front cam1:=/rear [config:=...] [use_sim_time:=true] [rviz:=true]

Starts relocalize_node with its inputs remapped to ``<cam>/image_raw`` and ``<cam>/camera_info`` of the two
camera namespaces (or give full topics with image0:=, info0:=, image1:=, info1:=), parameters from
``config/relocalize.yaml`` (or ``config:=``), and optionally RViz with ``rviz/mickey.rviz``.
Reference mode and on-demand triggering are parameters (``reference_image``, ``reference_mode``, ``mode``, ...: set
them in the config file); in reference mode the node listens to camera 1 (``cam1:=``) only.
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mickey_ros")
    arg = LaunchConfiguration

    def topic(name: str, cam: str, suffix: str) -> PythonExpression:
        # an explicit topic argument wins over "<camera namespace>/<suffix>"
        return PythonExpression(["'", arg(name), "' or '", arg(cam), "/", suffix, "'"])

    return LaunchDescription([
        DeclareLaunchArgument("cam0", default_value="/camera0", description="namespace of camera 0 (reference)"),
        DeclareLaunchArgument("cam1", default_value="/camera1", description="namespace of camera 1 (query)"),
        DeclareLaunchArgument("image0", default_value="", description="full image topic of camera 0 (overrides cam0)"),
        DeclareLaunchArgument("info0", default_value="", description="full CameraInfo topic of camera 0"),
        DeclareLaunchArgument("image1", default_value="", description="full image topic of camera 1 (overrides cam1)"),
        DeclareLaunchArgument("info1", default_value="", description="full CameraInfo topic of camera 1"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "relocalize.yaml")),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        DeclareLaunchArgument("rviz", default_value="false"),
        Node(
            package="mickey_ros",
            executable="relocalize_node",
            name="mickey_relocalizer",
            output="screen",
            parameters=[arg("config"), {"use_sim_time": PythonExpression(["'", arg("use_sim_time"), "' == 'true'"])}],
            remappings=[
                ("image0", topic("image0", "cam0", "image_raw")),
                ("camera_info0", topic("info0", "cam0", "camera_info")),
                ("image1", topic("image1", "cam1", "image_raw")),
                ("camera_info1", topic("info1", "cam1", "camera_info")),
            ],
        ),
        Node(
            package="rviz2",
            executable="rviz2",
            arguments=["-d", os.path.join(share, "rviz", "mickey.rviz")],
            condition=IfCondition(arg("rviz")),
        ),
    ])
