"""Small data shipped with mickey_ros (demo images; generated, Apache-2.0)."""
