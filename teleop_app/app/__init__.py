"""The desktop app (PyQt6): the Qt composition root. Widgets hold no logic: they call the Qt-free
services (`teleop_app.live`, `teleop_app.settings`, `teleop_app.devices`) and show snapshots.

- `main_window.MainWindow`: the window (control panel, 3D view, status bar) over a `LiveSession`;
- `keys`: LeRobot's episode keys, STOP on Space, teleop keys forwarded to the keyboard device;
- `widgets`: the window's parts and the status bar's words;
- `world_view` (meshes from `mesh_cache`): the embedded 3D view.

`refine-dp app` (`teleop_app.app_cli`) starts it.
"""
