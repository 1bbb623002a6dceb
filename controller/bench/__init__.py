"""`floorctl bench`: the controller measured against the bare protocol stacks it stands on.

One module per benchmark (mqtt_commands, opcua_commands, divert, surge, timing_writer, memory), the
shared tools (measure, command_path, processes, context) and the runner that puts them together.
"""

from controller.bench.runner import run_bench

__all__ = ["run_bench"]
