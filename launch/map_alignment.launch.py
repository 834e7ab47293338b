"""ros2 launch mickey_ros map_alignment.launch.py cam_a:=/robot_a/camera cam_b:=/robot_b/camera \
    pose_a:=/robot_a/camera_pose pose_b:=/robot_b/camera_pose [map_a:=robot_a/map] [map_b:=robot_b/map]

Multi-robot map alignment: relocalize_node with robot A's camera as camera 0 and robot B's as camera 1, and
map_alignment_node fusing its relative poses with each camera's pose in its robot's map into the transform
``map_a -> map_b`` (TF where map_b has no other parent, and ``/mickey_map_alignment/map_alignment``).
"""
from __future__ import annotations

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mickey_ros")
    arg = LaunchConfiguration
    sim_time = {"use_sim_time": PythonExpression(["'", arg("use_sim_time"), "' == 'true'"])}

    return LaunchDescription([
        DeclareLaunchArgument("cam_a", default_value="/robot_a/camera", description="camera namespace of robot A"),
        DeclareLaunchArgument("cam_b", default_value="/robot_b/camera", description="camera namespace of robot B"),
        DeclareLaunchArgument("pose_a", default_value="/robot_a/camera_pose",
                              description="PoseStamped: robot A's camera optical frame in map_a"),
        DeclareLaunchArgument("pose_b", default_value="/robot_b/camera_pose",
                              description="PoseStamped: robot B's camera optical frame in map_b"),
        DeclareLaunchArgument("map_a", default_value="map_a"),
        DeclareLaunchArgument("map_b", default_value="map_b"),
        DeclareLaunchArgument("relocalize_config", default_value=os.path.join(share, "config", "relocalize.yaml")),
        DeclareLaunchArgument("alignment_config", default_value=os.path.join(share, "config", "map_alignment.yaml")),
        DeclareLaunchArgument("use_sim_time", default_value="false"),
        Node(
            package="mickey_ros",
            executable="relocalize_node",
            name="mickey_relocalizer",
            output="screen",
            parameters=[arg("relocalize_config"), sim_time],
            remappings=[
                ("image0", [arg("cam_a"), "/image_raw"]),
                ("camera_info0", [arg("cam_a"), "/camera_info"]),
                ("image1", [arg("cam_b"), "/image_raw"]),
                ("camera_info1", [arg("cam_b"), "/camera_info"]),
            ],
        ),
        Node(
            package="mickey_ros",
            executable="map_alignment_node",
            name="mickey_map_alignment",
            output="screen",
            parameters=[arg("alignment_config"), sim_time,
                        {"map_a_frame": arg("map_a"), "map_b_frame": arg("map_b")}],
            remappings=[
                ("relative_pose", "/mickey_relocalizer/relative_pose"),
                ("relative_pose_full", "/mickey_relocalizer/relative_pose_full"),
                ("camera_pose_a", arg("pose_a")),
                ("camera_pose_b", arg("pose_b")),
            ],
        ),
    ])
