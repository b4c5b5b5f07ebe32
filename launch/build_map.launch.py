"""Build or extend a keyframe map with `vpr_node` in mapping mode, from a camera or a bag.

Live camera:
    ros2 launch vpr_ros build_map.launch.py image:=/camera/image_raw map:=/maps/campus model:=model.pt
From a recording (in a second terminal; --clock publishes the bag time on /clock):
    ros2 launch vpr_ros build_map.launch.py use_sim_time:=true map:=/maps/campus model:=model.pt
    ros2 bag play /path/to/bag --clock

It is localize.launch.py with mode:=mapping and save_map_on_shutdown:=true; every other argument
(image, model, backend, use_compressed, use_sim_time, params_file) is passed through. The map is
saved on shutdown (Ctrl-C), every `autosave_interval` seconds and whenever `~/save_map` is called:
    ros2 service call /vpr_node/save_map vpr_ros_interfaces/srv/SaveMap
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    localize = PathJoinSubstitution([FindPackageShare("vpr_ros"), "launch", "localize.launch.py"])
    return LaunchDescription([
        DeclareLaunchArgument("map", description="map directory to create, or to extend when it "
                                                 "exists (a new session is recorded)"),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(localize),
            launch_arguments={"mode": "mapping", "save_map_on_shutdown": "true",
                              "map": LaunchConfiguration("map")}.items()),
    ])
