"""Static checks of the ROS 2 interface that need no ROS install: parameters, YAML, launch files,
package.xml dependencies."""
import ast
import dataclasses
import importlib.util
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from vpr_ros.localization.config import EngineConfig
from vpr_ros.ros.parameters import (ENGINE_PARAMETER_DOCS, RUNTIME_PARAMETERS, NodeSettings,
                                    check_runtime_update, parameter_specs,
                                    settings_from_parameters)
from vpr_ros.ros.pose_sources import TfFrames, tf_frames

REPO = Path(__file__).resolve().parents[1]
ROS_DIR = REPO / "vpr_ros" / "ros"
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
PYTHON_TYPES = {"bool": bool, "integer": int, "double": float, "string": str}


def _yaml_parameters() -> dict:
    document = yaml.safe_load((REPO / "config" / "vpr_node.yaml").read_text(encoding="utf-8"))
    assert list(document) == ["/**"], ("the YAML must hold one wildcard section (`/**:`) so a "
                                       "renamed or namespaced node still reads it")
    return document["/**"]["ros__parameters"]


# --- parameters ----------------------------------------------------------------------------

def test_yaml_holds_exactly_the_declared_parameters():
    declared = [spec.name for spec in parameter_specs()]
    assert len(declared) == len(set(declared)), "parameter names collide"
    yaml_keys = list(_yaml_parameters())
    assert sorted(set(yaml_keys) - set(declared)) == [], "YAML keys the node does not declare"
    assert sorted(set(declared) - set(yaml_keys)) == [], "declared parameters missing in YAML"


def test_yaml_values_have_the_declared_type_and_range():
    """rclpy refuses a YAML int for a double parameter, so types must match exactly."""
    values = _yaml_parameters()
    for spec in parameter_specs():
        assert type(values[spec.name]) is PYTHON_TYPES[spec.type_name], spec.name
        spec.check(values[spec.name])
    settings_from_parameters(values)


def test_every_parameter_has_a_description_and_numbers_have_a_range():
    for spec in parameter_specs():
        assert len(spec.description) > 15, spec.name
        if spec.type_name in ("integer", "double"):
            assert spec.minimum is not None and spec.minimum < spec.maximum, spec.name
        if spec.choices:
            assert spec.default in spec.choices, spec.name
        spec.check(spec.default)


def test_engine_parameters_are_exactly_the_engine_config_fields():
    engine_fields = [f.name for f in dataclasses.fields(EngineConfig)]
    node_fields = [f.name for f in dataclasses.fields(NodeSettings)]
    assert sorted(ENGINE_PARAMETER_DOCS) == sorted(engine_fields)
    assert not set(engine_fields) & set(node_fields)


def test_parameter_values_become_engine_config_and_node_settings():
    node, engine = settings_from_parameters({"mode": "mapping", "top_k": 5, "map_path": "/maps/a",
                                             "sequence_length": 7})
    assert (engine.mode, engine.top_k, engine.sequence_length) == ("mapping", 5, 7)
    assert node.map_path == "/maps/a"
    assert engine.score_threshold == EngineConfig().score_threshold


def test_yaml_keeps_the_engine_defaults_where_they_were_measured():
    values = _yaml_parameters()
    assert values["rerank"] == EngineConfig().rerank == "none"


def test_only_mode_may_change_at_runtime_and_it_is_validated():
    assert RUNTIME_PARAMETERS == ("mode",)
    assert check_runtime_update("mode", "mapping") is None
    assert "must be one of localization, mapping" in check_runtime_update("mode", "slam")
    assert "must be a string" in check_runtime_update("mode", 1)
    assert "read once at start-up" in check_runtime_update("top_k", 5)
    assert check_runtime_update("use_sim_time", True) is None, "rclpy's own parameter"


def test_tf_frames_per_mode():
    settings = NodeSettings(map_frame="map", odom_frame="odom", tf_timeout=0.2)
    assert tf_frames(settings, "mapping") == TfFrames("map", "base_link", 0.2)
    assert tf_frames(settings, "localization") == TfFrames("odom", "base_link", 0.2)
    assert NodeSettings().odom_frame == "", "no odometry on TF unless the robot has it"
    assert tf_frames(NodeSettings(), "localization") is None


@pytest.mark.parametrize("values, message", [
    ({"top_k": 0}, r"top_k must be in \[1, 1000\]"),
    ({"score_threshold": 1}, "score_threshold must be a double"),
    ({"mode": "slam"}, "mode must be one of localization, mapping"),
    ({"backend": "cuda"}, "backend must be one of"),
    ({"toppk": 3}, r"unknown vpr_node parameters \['toppk'\]"),
])
def test_bad_parameter_values_are_refused_with_the_parameter_named(values, message):
    with pytest.raises(ValueError, match=message):
        settings_from_parameters(values)


def test_mapping_saves_on_shutdown_by_default_and_autosaves():
    assert NodeSettings().save_map_on_shutdown and NodeSettings().autosave_interval > 0


def test_node_declares_every_parameter_from_the_ros_free_list():
    """node.py must declare parameters only by looping over parameter_specs()."""
    tree = ast.parse((ROS_DIR / "node.py").read_text(encoding="utf-8"))
    declares = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr == "declare_parameter"]
    assert len(declares) == 1
    loops = [n for n in ast.walk(tree) if isinstance(n, ast.For)
             and any(d is c for c in ast.walk(n) for d in declares)]
    assert loops and ast.unparse(loops[0].iter) in ("specs", "parameter_specs()")
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "parameter_specs" in calls and "settings_from_parameters" in calls


# --- launch files --------------------------------------------------------------------------

def _launch_arguments(path: Path) -> dict:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    arguments = {}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "DeclareLaunchArgument":
            keywords = {k.arg: k.value for k in call.keywords}
            arguments[ast.literal_eval(call.args[0])] = keywords
    return arguments


def _node_keywords(path: Path) -> dict:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "Node"]
    assert len(nodes) == 1
    return {k.arg: k.value for k in nodes[0].keywords}


def test_launch_files_exist_and_are_installed_by_setup_py():
    names = {p.name for p in LAUNCH_FILES}
    assert {"localize.launch.py", "build_map.launch.py"} <= names
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert 'glob("launch/*.launch.py")' in setup and 'glob("config/*.yaml")' in setup
    assert '"vpr_node = vpr_ros.ros.entry:main"' in setup


def test_localize_launch_starts_vpr_node_with_the_params_file():
    keywords = _node_keywords(REPO / "launch" / "localize.launch.py")
    assert ast.literal_eval(keywords["package"]) == "vpr_ros"
    assert ast.literal_eval(keywords["executable"]) == "vpr_node"
    assert ast.literal_eval(keywords["name"]) == "vpr_node"
    assert "params_file" in ast.unparse(keywords["parameters"])
    assert "image/compressed" in ast.unparse(keywords["remappings"])


def test_localize_launch_declares_the_documented_arguments():
    arguments = _launch_arguments(REPO / "launch" / "localize.launch.py")
    assert {"image", "model", "map", "mode", "params_file", "backend", "use_compressed"} <= set(arguments)
    assert all("description" in keywords for keywords in arguments.values())


def test_build_map_launch_is_localize_in_mapping_mode():
    source = (REPO / "launch" / "build_map.launch.py").read_text(encoding="utf-8")
    include = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Call)
                   and ast.unparse(n.func) == "IncludeLaunchDescription")
    assert "localize.launch.py" in source
    passed = next(k.value.func.value for k in include.keywords if k.arg == "launch_arguments")
    arguments = {ast.literal_eval(key): value for key, value in zip(passed.keys, passed.values)}
    assert ast.literal_eval(arguments["mode"]) == "mapping"
    assert ast.literal_eval(arguments["save_map_on_shutdown"]) == "true"
    assert set(arguments) <= set(_launch_arguments(REPO / "launch" / "localize.launch.py"))


def test_launch_overrides_name_declared_parameters():
    declared = {spec.name for spec in parameter_specs()} | {"use_sim_time"}
    tree = ast.parse((REPO / "launch" / "localize.launch.py").read_text(encoding="utf-8"))
    keys = {n.slice.value for n in ast.walk(tree) if isinstance(n, ast.Subscript)
            and ast.unparse(n.value) == "overrides" and isinstance(n.slice, ast.Constant)} | {
        ast.literal_eval(k) for n in ast.walk(tree) if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "overrides" for t in n.targets)
        for k in n.value.keys}
    assert "save_map_on_shutdown" in keys and keys <= declared
    module = ast.parse((REPO / "launch" / "localize.launch.py").read_text(encoding="utf-8"))
    pairs = next(n.value for n in module.body if isinstance(n, ast.Assign)
                 and ast.unparse(n.targets[0]) == "STRING_OVERRIDES")
    assert {parameter for _, parameter in ast.literal_eval(pairs)} <= declared


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_loads_with_ros_launch(path):
    pytest.importorskip("launch_ros", reason="ROS 2 launch_ros is not installed here")
    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)


# --- package.xml ---------------------------------------------------------------------------

def _imported_top_modules(paths) -> set:
    modules = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    return modules


def _is_ros_package(module: str) -> bool:
    return module in ("rclpy", "tf2_ros", "launch", "launch_ros") or \
        module.endswith(("_msgs", "_srvs", "_interfaces"))


def test_package_xml_declares_every_ros_package_the_node_and_launch_files_import():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "vpr_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_depends = {e.text for e in root.iter("exec_depend")} | {e.text for e in root.iter("depend")}
    imported = _imported_top_modules(sorted(ROS_DIR.glob("*.py")) + LAUNCH_FILES)
    ros_packages = {m for m in imported if _is_ros_package(m)}
    assert {"rclpy", "sensor_msgs", "nav_msgs", "tf2_ros", "launch_ros",
            "vpr_ros_interfaces"} <= ros_packages
    assert sorted(ros_packages - exec_depends) == []


ROS_MODULES = {"node.py", "lifecycle_node.py", "tf_poses.py"}
"""The rclpy adapters; tf_poses.py (tf2_ros, not on PyPI) is imported only for pose_source tf."""


def test_only_the_adapters_import_ros():
    """Every other module of vpr_ros.ros is ROS-free, so it is unit tested without rclpy."""
    for path in sorted(ROS_DIR.glob("*.py")):
        if path.name not in ROS_MODULES:
            ros = {m for m in _imported_top_modules([path]) if _is_ros_package(m)}
            assert ros == set(), f"{path.name} imports {ros}"


def test_node_imports_tf2_only_lazily():
    """tf2_ros is not on PyPI: node.py must import without it (pose_source odometry or none)."""
    for name in ("node.py", "lifecycle_node.py"):
        tree = ast.parse((ROS_DIR / name).read_text(encoding="utf-8"))
        top_level = _imported_top_modules_of(tree.body)
        assert "tf2_ros" not in top_level and "vpr_ros.ros.tf_poses" not in top_level, name


def _imported_top_modules_of(statements) -> set:
    modules = set()
    for node in statements:
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module)
    return modules


def test_interfaces_package_declares_what_its_messages_use():
    root = ET.parse(REPO / "vpr_ros_interfaces" / "package.xml").getroot()
    assert root.findtext("name") == "vpr_ros_interfaces"
    assert root.find("export/build_type").text == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    depends = {e.text for e in root.iter("depend")}
    cmake = (REPO / "vpr_ros_interfaces" / "CMakeLists.txt").read_text(encoding="utf-8")
    used = set()
    for path in sorted((REPO / "vpr_ros_interfaces").glob("*/*.*")):
        assert f'"{path.parent.name}/{path.name}"' in cmake, f"{path.name} is not generated"
        used |= {line.split("/")[0] for line in path.read_text(encoding="utf-8").splitlines()
                 if "/" in line.split("#")[0].split(" ")[0]}
    assert used <= depends, f"undeclared message packages {used - depends}"
    assert used <= set(cmake.split("DEPENDENCIES")[1].split(")")[0].split())


def test_code_is_python_3_10_syntax():
    if sys.version_info < (3, 10):
        pytest.skip("needs Python >= 3.10 to parse with feature_version")
    for path in sorted(ROS_DIR.glob("*.py")) + LAUNCH_FILES:
        ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 10))


def test_interface_doc_lists_every_parameter_topic_and_service():
    doc = (REPO / "docs" / "ros_interface.md").read_text(encoding="utf-8")
    missing = [spec.name for spec in parameter_specs() if f"| `{spec.name}` |" not in doc]
    assert missing == []
    for name in ("~/relocalization", "~/loop_closures", "~/match_image", "/diagnostics",
                 "~/save_map", "~/reset", "~/set_mapping_mode", '"schema"'):
        assert name in doc, name
