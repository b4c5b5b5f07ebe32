# Source from the repository root (scripts/test.sh does): a Python with ROS 2 Jazzy's rclpy,
# Fast DDS and message packages from PyPI, and vpr_ros_interfaces built against them, so the
# vpr_node tests run under a real rclpy without a ROS 2 install.
#
# The wheels go into a venv ($VPR_ROS_ROS_VENV, default .ros-venv in the repository) made with
# --system-site-packages: it sees the test Python's packages (torch, faiss, vpr_ros's
# dependencies) while the shared Python stays free of ROS. What rclpy needs from its
# environment:
# - LD_LIBRARY_PATH: the wheels' shared libraries (<venv>/lib and site-packages/ros_*.libs);
#   the ros-wheels-bootstrapper .pth of the wheels re-executes Python once with it set, so
#   nothing to do here but add vpr_ros_interfaces' lib/ (the bootstrapper keeps what is set).
# - PYTHONPATH: vpr_ros_interfaces' generated Python package.
# - AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH: the venv and vpr_ros_interfaces' prefix, for
#   ament_index look-ups and for cmake to find ament_cmake and rosidl.
# - RMW_IMPLEMENTATION: rmw_fastrtps_cpp, the one middleware the wheels bring.
# - ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a ROS_DOMAIN_ID of this run: DDS discovery
#   stays on this machine and apart from other runs.
# Exports ROS_PYTHON, the interpreter to run the tests with.

ROS_VENV=${VPR_ROS_ROS_VENV:-$PWD/.ros-venv}
if [ ! -x "$ROS_VENV/bin/python" ]; then
  python3 -m venv --system-site-packages "$ROS_VENV"
fi
ROS_PYTHON=$ROS_VENV/bin/python
if ! "$ROS_PYTHON" -m pip install --quiet -r scripts/ros-jazzy-requirements.txt; then
  echo "ros_env.sh: cannot install the ROS 2 Jazzy wheels (scripts/ros-jazzy-requirements.txt)" \
       "into $ROS_VENV; they exist for CPython 3.11 on x86_64 Linux only" >&2
  return 1
fi

# The wheels' exported cmake targets name the include directories of the machine that built
# them (/opt/python/cp311-cp311/...); point them at this Python's, or cmake refuses them.
python_include=$("$ROS_PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
numpy_include=$("$ROS_PYTHON" -c 'import numpy; print(numpy.get_include())')
{ grep -rlE --include='*.cmake' '/opt/python/cp[0-9]+-cp[0-9]+/' "$ROS_VENV/share" || true; } \
  | xargs -r sed -i -E \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/include/python[0-9.]+#$python_include#g" \
    -e "s#/opt/python/cp[0-9]+-cp[0-9]+/lib/python[0-9.]+/site-packages/numpy/_core/include#$numpy_include#g"

interfaces_prefix=$ROS_VENV/vpr_ros_interfaces
export VIRTUAL_ENV=$ROS_VENV
export PATH=$ROS_VENV/bin:$PATH
export AMENT_PREFIX_PATH=$interfaces_prefix:$ROS_VENV
export CMAKE_PREFIX_PATH=$interfaces_prefix:$ROS_VENV
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-$(( $$ % 100 + 1 ))}

# the build tree belongs to this checkout (cmake refuses one configured from another source)
cmake -S vpr_ros_interfaces -B build/vpr_ros_interfaces -DBUILD_TESTING=OFF \
  -DCMAKE_INSTALL_PREFIX="$interfaces_prefix" -DPython3_EXECUTABLE="$ROS_PYTHON" >/dev/null \
  && cmake --build build/vpr_ros_interfaces -j 2 >/dev/null \
  && cmake --install build/vpr_ros_interfaces >/dev/null \
  || { echo "ros_env.sh: building vpr_ros_interfaces failed; rerun the cmake commands above" \
            "without >/dev/null to see why" >&2; return 1; }
interfaces_site=$(echo "$interfaces_prefix"/lib/python3*/site-packages)
export PYTHONPATH=$interfaces_site${PYTHONPATH:+:$PYTHONPATH}
export LD_LIBRARY_PATH=$interfaces_prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export ROS_PYTHON
