"""Simulator backends: batched MuJoCo on the CPU (default) and MuJoCo Warp (optional extra)."""
