"""The HTTP edge: REST API, Prometheus metrics, health and the supervisor panel."""

from controller.api.app import create_app
from controller.api.auth import Gate
from controller.api.deps import EngineLike

__all__ = ["EngineLike", "Gate", "create_app"]
