"""mickey_ros: an ament_python ROS 2 package that is also pip-installable.

torch is required as ``torch>=2.1``. Install the CPU build first where no GPU exists
(``pip install torch==2.13.0``); a range that the installed torch satisfies installs nothing more.
"""
from glob import glob

from setuptools import find_namespace_packages, setup

package_name = "mickey_ros"


def _data(folder: str, pattern: str = "*") -> tuple[str, list[str]]:
    return (f"share/{package_name}/{folder}", [p for p in glob(f"{folder}/{pattern}") if not p.endswith("README.md")])


setup(
    name=package_name,
    version="0.1.0",
    # the data folders (mickey_ros/data/demo, mickey_ros/ros/msg) have no __init__.py: listed as namespace packages
    # so that setuptools installs their files without a "package would be ignored" warning
    packages=find_namespace_packages(include=["mickey_ros", "mickey_ros.*"], exclude=["*.__pycache__"]),
    package_data={"mickey_ros.data": ["*.pt"], "mickey_ros.data.demo": ["*"], "mickey_ros.ros.msg": ["*.msg"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        _data("launch", "*.py"),
        _data("config", "*.yaml"),
        _data("rviz", "*.rviz"),
        _data("msg", "*.msg"),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "torch>=2.1",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        # pure Python rosbag2 I/O: `mickey-ros bag` and the training data work after the main install.
        # 0.11.0 and 0.11.9 pass the bag tests; 0.10.9 mis-pairs a bag with an invalid stamp, older ones lack
        # Writer(storage_plugin=...)
        "rosbags>=0.11",
    ],
    extras_require={
        "test": ["pytest>=7", "rosbags-image>=0.9", "mcap-ros2-support>=0.5", "scikit-image>=0.21",
                 "tensorboard", "tqdm"],
        "train": ["tensorboard", "tqdm", "rosbags-image>=0.9", "scikit-image>=0.21"],
        "ros": ["rosbags-image>=0.9"],
        # `mickey-ros export-onnx` (onnx) and the onnxruntime backend; none of them depends on torch
        "onnx": ["onnx>=1.16", "onnxruntime>=1.18"],
    },
    zip_safe=True,
    maintainer="mickey_ros maintainers",
    maintainer_email="maintainers@mickey-ros.invalid",
    description="MicKey metric relative pose for ROS 2",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "mickey-ros = mickey_ros.cli:main",
            # through console.py: a missing rclpy is one line with the install command, not a traceback
            "relocalize_node = mickey_ros.ros.console:relocalize_node",
            "map_alignment_node = mickey_ros.ros.console:map_alignment_node",
        ],
    },
)
