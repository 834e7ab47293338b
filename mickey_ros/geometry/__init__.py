"""Geometry: cameras, SE(3), Kabsch, Map-free metrics."""
