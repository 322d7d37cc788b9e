"""Command sources above the command interface: heuristic task planners and scripted sequences
(teleop devices and the deployed diffusion policy satisfy the same `CommandSource` protocol)."""
