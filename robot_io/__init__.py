import os
import sys

# Headless rendering by default: MuJoCo picks its OpenGL backend from MUJOCO_GL when `mujoco` is
# first imported, which happens below this package, so the default must be set here (see README).
# Linux only: MuJoCo rejects MUJOCO_GL=egl on macOS and Windows at import time.
if sys.platform.startswith("linux"):
    os.environ.setdefault("MUJOCO_GL", "egl")
