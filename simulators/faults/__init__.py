"""Fault timelines: one YAML file of what goes wrong on a simulated floor, and when (docs/faults.md)."""

from simulators.faults.player import Played, fault_steps, play
from simulators.faults.timeline import FaultEntry, Timeline, TimelineError, load_timeline, parse_timeline

__all__ = ["FaultEntry", "Played", "Timeline", "TimelineError", "fault_steps", "load_timeline",
           "parse_timeline", "play"]
