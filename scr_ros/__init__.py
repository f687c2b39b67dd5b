"""scr_ros: visual relocalization by scene coordinate regression, for ROS 2 and without it.

The path of an image: :mod:`scr_ros.imaging` (grey, resize) -> :mod:`scr_ros.encoders`
(frozen CNN, features every 8 px) -> :mod:`scr_ros.heads` (scene-specific MLP, a 3D point per
feature) -> :mod:`scr_ros.ransac` (PnP-RANSAC) -> a camera-to-world pose. Maps are built by
:class:`scr_ros.mapping.MapBuilder` and stored by :mod:`scr_ros.mapfile`.

Only :mod:`scr_ros.ros` imports ROS; everything else runs on plain Python.
"""

__version__ = "0.1.0"
