"""Build or extend a keyframe map with `vpr_node` in mapping mode, from a camera or a bag.

Live camera:
    ros2 launch vpr_ros build_map.launch.py image:=/camera/image_raw map:=/maps/campus model:=model.pt
From a recording (in a second terminal; --clock publishes the bag time on /clock):
    ros2 launch vpr_ros build_map.launch.py use_sim_time:=true map:=/maps/campus model:=model.pt
    ros2 bag play /path/to/bag --clock

The map is saved on shutdown (Ctrl-C) and whenever `~/save_map` is called:
    ros2 service call /vpr_node/save_map std_srvs/srv/Trigger
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def _vpr_node(context):
    """`vpr_node` forced into mapping mode with saving on shutdown."""
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {
        "mode": "mapping",
        "save_map_on_shutdown": True,
        "map_path": ParameterValue(arg("map"), value_type=str),
        "use_compressed": arg("use_compressed").lower() == "true",
        "use_sim_time": arg("use_sim_time").lower() == "true",
    }
    for launch_argument in ("model", "backend"):
        value = arg(launch_argument)
        if value:
            overrides[launch_argument] = ParameterValue(value, value_type=str)
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
        DeclareLaunchArgument("map", description="map directory to create, or to extend when it "
                                                 "exists (a new session is recorded)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw",
                              description="camera image topic (raw); with use_compressed:=true "
                                          "the node subscribes to <image>/compressed"),
        DeclareLaunchArgument("model", default_value="",
                              description="model checkpoint (.pt) or exported .onnx; empty keeps "
                                          "the params_file value"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto, torch, onnxruntime or tensorrt; empty keeps the "
                                          "params_file value"),
        DeclareLaunchArgument("use_compressed", default_value="false", choices=["true", "false"],
                              description="subscribe to sensor_msgs/CompressedImage on <image>/compressed"),
        DeclareLaunchArgument("use_sim_time", default_value="false", choices=["true", "false"],
                              description="true when replaying a bag with ros2 bag play --clock"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the vpr_node parameters"),
        OpaqueFunction(function=_vpr_node),
    ])
