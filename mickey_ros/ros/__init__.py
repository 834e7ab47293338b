"""ROS 2 glue. Imports nothing on purpose, so rclpy-free submodules work without ROS."""
