"""pip / ament_python-compatible install of the Python package (the messages in msg/ are built by CMake, see
tools/build-messages.sh and CMakeLists.txt)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "anytime_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Confidence-adaptive anytime HRNet (segmentation, pose) for ROS 2, with deadlines and preemption",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # msg/ and action/ in the source tree are git-ignored links to the generated interfaces (tools/build-messages.sh);
    # they are not part of a wheel. A real ROS 2 install builds them with colcon (CMakeLists.txt).
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"], exclude=[f"{PACKAGE}.msg", f"{PACKAGE}.action"]),
    package_data={PACKAGE: ["assets/*/*.jpg", "assets/*/*.md", "models/csrc/*.cpp"]},
    # torch is deliberately unpinned here: GPU users keep their own build. The dev/CI install path
    # (tools/setup-venv.sh) pins the CPU build torch==2.13.0 before installing this package.
    install_requires=["torch>=2.1", "numpy>=1.24"],
    # "ros": what the ROS adapter needs besides ROS 2 itself (rclpy etc. come from the ROS install, or from the PyPI
    # wheels of tools/requirements-ros.txt in the dev venv): OpenCV for compressed images and video, rosbags for bags.
    # "train": the train/evaluate commands (OpenCV augmentations in DataLoader workers, YAML run configs, progress
    # bars, plots, scipy for MPII's .mat files, and cityscapesscripts' own label table and evaluation).
    extras_require={
        "test": ["pytest>=7"],
        "ros": ["opencv-python-headless>=4.8", "rosbags>=0.10"],
        "train": ["opencv-python-headless>=4.8", "pyyaml>=6", "tqdm>=4.60", "matplotlib>=3.7", "scipy>=1.10",
                  "cityscapesscripts>=2.2"],
    },
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/rviz", glob("rviz/*.rviz")),
    ],
    entry_points={
        "console_scripts": [
            "anytime-perception = anytime_perception.cli:main",
            "anytime_node = anytime_perception.ros.node:main",
            "anytime_player = anytime_perception.ros.player:main",
            "anytime-demo = anytime_perception.ros.demo:main",
        ],
    },
)
