"""Start `vpr_node` to relocalize against a prior map and report loop-closure candidates.

    ros2 launch vpr_ros localize.launch.py image:=/camera/image_raw map:=/path/to/map model:=model.pt

Every node parameter comes from `params_file` (default: the package's config/vpr_node.yaml);
the launch arguments override only the parameters they name, and only when given, so an empty
`map:=` or `backend:=` keeps the value from the YAML file.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

STRING_OVERRIDES = (("model", "model"), ("map", "map_path"), ("backend", "backend"))
"""(launch argument, node parameter) pairs passed on only when the argument is not empty."""


def _vpr_node(context):
    """The node, with overrides built from the launch arguments as given on the command line."""
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {
        "mode": arg("mode"),
        "use_compressed": arg("use_compressed").lower() == "true",
        "use_sim_time": arg("use_sim_time").lower() == "true",
    }
    if arg("save_map_on_shutdown"):
        overrides["save_map_on_shutdown"] = arg("save_map_on_shutdown").lower() == "true"
    for launch_argument, parameter in STRING_OVERRIDES:
        value = arg(launch_argument)
        if value:
            overrides[parameter] = ParameterValue(value, value_type=str)
    image = arg("image")
    return [Node(
        package="vpr_ros",
        executable="vpr_node",
        name="vpr_node",
        output="screen",
        emulate_tty=True,
        parameters=[arg("params_file"), overrides],
        remappings=[("image", image), ("image/compressed", image + "/compressed")],
    )]


def generate_launch_description():
    default_params = PathJoinSubstitution([FindPackageShare("vpr_ros"), "config", "vpr_node.yaml"])
    return LaunchDescription([
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (raw); with use_compressed:=true "
                                          "the node subscribes to <image>/compressed"),
        DeclareLaunchArgument("model", default_value="",
                              description="model checkpoint (.pt) or exported .onnx; empty keeps "
                                          "the params_file value"),
        DeclareLaunchArgument("map", default_value="",
                              description="keyframe map directory; empty keeps the params_file value"),
        DeclareLaunchArgument("mode", default_value="localization",
                              choices=["localization", "mapping"],
                              description="localization: fixed prior map; mapping: add keyframes"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, torch, onnxruntime or tensorrt; empty keeps the "
                                          "params_file value"),
        DeclareLaunchArgument("use_compressed", default_value="false", choices=["true", "false"],
                              description="subscribe to sensor_msgs/CompressedImage on <image>/compressed"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="use /clock (set true when replaying with ros2 bag play --clock)"),
        DeclareLaunchArgument("save_map_on_shutdown", default_value="",
                              choices=["", "true", "false"],
                              description="save the map on Ctrl-C; empty keeps the params_file value"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the vpr_node parameters"),
        OpaqueFunction(function=_vpr_node),
    ])
