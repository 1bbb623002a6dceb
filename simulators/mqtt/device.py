"""What every simulated MQTT device shares: its own broker connection with a last-will, command
dedupe, the retained state, fault injection, and a one-job-at-a-time work queue.

Each device works like its real counterpart: it acknowledges a command when it takes it on, works
on one job at a time in arrival order, and reports the outcome on its `done` topic. All delays go
through the device's SimClock, so one speed factor scales the whole floor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from controller.contract.kinds import DeviceKind
from controller.contract.mqtt import (
    ANSWERED_WHILE_SILENT,
    Action,
    Channel,
    Connection,
    Headers,
    Topics,
    WireError,
    decode,
    encode,
    object_field,
    text_field,
)
from controller.contract.reasons import NEEDS_PERSON, Reason
from controller.site import Site
from simulators.clock import SimClock
from simulators.mqtt.link import PluggableLink

log = logging.getLogger(__name__)

COMMAND_MEMORY = 10_000  # accepted command ids a device remembers for dedupe (LRU); refusals are forgotten
STATE_MIN_INTERVAL_S = 0.1  # wall seconds between routine state publishes; faults go out at once
LINK_WAIT_S = 5.0


@dataclass(frozen=True, slots=True)
class FloorContext:
    """What the floor hands each simulated device."""

    site: Site
    broker_url: str
    speed: float
    seed: int
    counters: Counter[str]

    @property
    def topics(self) -> Topics:
        return Topics(self.site.broker.topic_root)


@dataclass(slots=True)
class Record:
    """The answers a device gave to a command id it accepted, replayed when the id comes again."""

    command_id: str
    ack: dict[str, Any] = field(default_factory=dict)
    done: dict[str, Any] | None = None


@dataclass(slots=True)
class DeviceJob:
    record: Record
    action: str
    params: dict[str, Any]
    detail: Any = None  # what the device made of the params (e.g. the parsed label)

    @property
    def command_id(self) -> str:
        return self.record.command_id


class SimulatedDevice:
    kind: ClassVar[DeviceKind]
    fault_codes: ClassVar[frozenset[str] | None] = None  # None: any code is a valid fault
    silent_while_faulted: ClassVar[bool] = False  # True: a faulted device answers nothing at all

    def __init__(self, device_id: str, context: FloorContext) -> None:
        self.device_id = device_id
        self.clock = SimClock(context.speed, seed=_device_seed(context.seed, device_id))
        self.counters = context.counters
        self.executions: Counter[str] = Counter()  # command id -> times executed (dedupe keeps it at 1)
        self.commands_from: Counter[str] = Counter()  # commands received, by the header's sender
        self.last_command_from: dict[str, float] = {}  # and when each sender's last one arrived
        self.fault: str | None = None
        topics = context.topics
        self._topics = topics
        self._headers = Headers(device_id)
        self._topic = {channel: topics.device(self.kind, device_id, channel) for channel in Channel}
        self._memory: OrderedDict[str, Record] = OrderedDict()
        self._queue: deque[DeviceJob] = deque()
        self._current: DeviceJob | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._state_sent_at = -1.0
        self._state_timer: asyncio.TimerHandle | None = None
        self.link = PluggableLink(
            context.broker_url,
            client_id=f"{context.site.site}-sim-{device_id}",
            settings=context.site.broker.for_device(device_id),  # its own account when the site has them
            subscriptions=[self._topic[Channel.CMD], topics.inject(device_id), topics.controller_state],
            on_message=self._on_message,
            on_connected=self._on_connected,
            will=lambda: (self._topic[Channel.STATE], self._state_payload(Connection.CONNECTIONBROKEN)),
            quiet=True,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.device_id} {self.state}>"

    # --------------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        await self.link.start()

    async def stop(self) -> None:
        self._cancel_work()
        if self._state_timer is not None:
            self._state_timer.cancel()
        await self.link.stop(farewell=(self._topic[Channel.STATE], self._state_payload(Connection.OFFLINE)))

    async def disconnect(self) -> None:
        """Cut this device's link as a pulled cable would; the broker publishes its last-will."""
        self.link.cut()
        await self.link.wait_disconnected(LINK_WAIT_S)

    async def reconnect(self) -> None:
        self.link.restore()
        await self.link.wait_connected(LINK_WAIT_S)

    # ---------------------------------------------------------------------------------- faults
    def inject(self, fault: str) -> None:
        if not fault or (self.fault_codes is not None and fault not in self.fault_codes):
            allowed = ", ".join(sorted(self.fault_codes or ())) or "any non-empty code"
            raise ValueError(f"{self.device_id}: unknown fault {fault!r} (known: {allowed})")
        if fault == self.fault:
            return
        self.fault = fault
        self._on_fault(fault)
        self._state_changed(urgent=True)
        self._announce(fault, active=True)

    def clear(self) -> None:
        fault, self.fault = self.fault, None
        if fault is None:
            return
        self._on_clear(fault)
        self._state_changed(urgent=True)
        self._announce(fault, active=False)
        self._next()

    def _on_fault(self, fault: str) -> None:
        """A broken unit cannot finish what it was doing: fail the current and queued jobs."""
        self._cancel_work()
        for job in self._drain():
            self._finish(job, "failed", reason=fault)

    def _on_clear(self, fault: str) -> None:
        pass

    def _announce(self, fault: str, *, active: bool) -> None:
        """Push a fault's start or end to listeners, after the retained state says it (printers alert)."""

    # ---------------------------------------------------------------------------------- status
    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    @property
    def state(self) -> str:
        return "faulted" if self.fault else "busy" if self.busy else "idle"

    def state_detail(self) -> dict[str, Any]:
        """Kind-specific fields of the retained state."""
        return {}

    def _state_payload(self, connection: Connection) -> bytes:
        topic = self._topic[Channel.STATE]
        message: dict[str, Any] = {"header": self._headers.next(topic), "connection": connection}
        if connection == Connection.CONNECTIONBROKEN:
            # The last-will is fixed at connect time: it cannot know the state at the moment of the cut.
            message.update(state="unknown", fault=None)
        else:
            message.update(state=self.state, fault=self.fault, **self.state_detail())
        return encode(message)

    def _state_changed(self, urgent: bool = False) -> None:
        if not self.link.connected:
            return  # the birth state on reconnect carries it
        loop = asyncio.get_running_loop()
        due = self._state_sent_at + STATE_MIN_INTERVAL_S
        if urgent or loop.time() >= due:
            self._publish_state()
        elif self._state_timer is None:
            self._state_timer = loop.call_at(due, self._publish_state)

    def _publish_state(self) -> None:
        if self._state_timer is not None:
            self._state_timer.cancel()
            self._state_timer = None
        self._state_sent_at = asyncio.get_running_loop().time()
        self.link.publish(self._topic[Channel.STATE], self._state_payload(Connection.ONLINE), retain=True)

    def _publish(self, channel: Channel, body: dict[str, Any]) -> None:
        topic = self._topic[channel]
        self.link.publish(topic, encode({"header": self._headers.next(topic), **body}))

    # -------------------------------------------------------------------------------- inbound
    def _on_connected(self, session_present: bool) -> None:
        self._publish_state()

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        if topic == self._topic[Channel.CMD]:
            self._on_command(payload)
        elif topic == self._topics.controller_state:
            self._on_controller_state(payload, retained)
        elif topic == self._topics.inject(self.device_id):
            self._on_inject(payload)
        else:
            self.counters["unexpected_topic"] += 1

    def _on_controller_state(self, payload: bytes, retained: bool) -> None:
        # Sparkplug-style: a controller that comes (back) online gets every device's state again.
        # The retained copy seen at subscribe time is old news: the birth state already went out.
        if retained or not payload:
            return
        try:
            online = decode(payload).get("connection") == Connection.ONLINE
        except WireError as exc:
            self._malformed("controller state", exc)
            return
        if online:
            self._publish_state()

    def _on_inject(self, payload: bytes) -> None:
        try:
            message = json.loads(payload)
            if type(message) is not dict or "fault" not in message:
                raise ValueError('expected {"fault": code | null}')
            fault = message["fault"]
            if fault is None:
                self.clear()
            elif type(fault) is str:
                self.inject(fault)
            else:
                raise ValueError("fault must be a string or null")
        except ValueError as exc:
            self._malformed("inject", exc)

    def _on_command(self, payload: bytes) -> None:
        try:
            message = decode(payload)
            command_id = text_field(message, "command_id")
            action = text_field(message, "action")
            params = object_field(message, "params")
        except WireError as exc:
            self._malformed("command", exc)
            return
        header = message.get("header")
        sender = str(header.get("device_id")) if isinstance(header, dict) else "unknown"
        self.commands_from[sender] += 1
        self.last_command_from[sender] = time.time()
        if self.fault and self.silent_while_faulted and action not in ANSWERED_WHILE_SILENT:
            self.counters["ignored_while_faulted"] += 1
            return
        record = self._memory.get(command_id)
        if record is not None:  # a retry or a QoS1 redelivery: answer again, never execute again
            self._memory.move_to_end(command_id)
            self.counters["duplicate_command"] += 1
            self._publish(Channel.ACK, record.ack)
            if record.done is not None:
                self._publish(Channel.DONE, record.done)
            return
        record = Record(command_id)
        job = DeviceJob(record, action, params)
        reason = self._judge(job)
        if reason is not None:
            # Refusals are not remembered: the same id after the fault clears is judged afresh.
            self._publish(Channel.ACK, {"command_id": command_id, "status": "rejected", "reason": reason})
            return
        self._memory[command_id] = record
        if len(self._memory) > COMMAND_MEMORY:
            self._memory.popitem(last=False)
        record.ack = {"command_id": command_id, "status": "accepted"}
        self._publish(Channel.ACK, record.ack)
        self.executions[command_id] += 1
        if action == Action.RESET:
            self._reset(job)
        else:
            self._execute(job)

    def _malformed(self, what: str, exc: Exception) -> None:
        self.counters["malformed_payload"] += 1
        if self.counters["malformed_payload"] <= 10:
            log.warning("%s: malformed %s ignored: %s", self.device_id, what, exc)

    def _judge(self, job: DeviceJob) -> str | None:
        """The rejection reason for a new command, or None to accept it. A `reset` is judged on the
        fault alone; while faulted a device refuses everything else with the fault's code (a
        printer hears only what it answers while silent, see `_on_command`)."""
        if job.action == Action.RESET:
            return Reason.OPERATOR_REQUIRED if self.fault in NEEDS_PERSON else None
        if self.fault and not self.silent_while_faulted:
            return self.fault
        return self._accept(job)

    def _reset(self, job: DeviceJob) -> None:
        """Clear the fault (if any) at once, ahead of anything queued; done names what it cleared."""
        fault = self.fault
        self.clear()
        self._finish(job, result={"fault": fault})

    # ------------------------------------------------------------------------ device behaviour
    def _accept(self, job: DeviceJob) -> str | None:
        """Validate a new command; return the rejection reason, or None to accept it."""
        raise NotImplementedError

    def _execute(self, job: DeviceJob) -> None:
        """Carry out an accepted command (usually: queue it)."""
        raise NotImplementedError

    def _work_time(self, job: DeviceJob) -> float | None:
        """Floor seconds the job takes, or None if it never finishes by itself."""
        raise NotImplementedError

    def _complete(self, job: DeviceJob) -> None:
        raise NotImplementedError

    def _finish(self, job: DeviceJob, outcome: str = "done", *, reason: str | None = None,
                result: dict[str, Any] | None = None) -> None:
        done: dict[str, Any] = {"command_id": job.command_id, "outcome": outcome, "result": result or {}}
        if reason is not None:
            done["reason"] = reason
        job.record.done = done
        self._publish(Channel.DONE, done)

    # ------------------------------------------------------------------------------ work queue
    def _enqueue(self, job: DeviceJob) -> None:
        self._queue.append(job)
        self._next()
        self._state_changed()

    def _next(self) -> None:
        if self._current is not None or self.fault or not self._queue:
            return
        self._current = self._queue.popleft()
        self._begin(self._current)
        self._state_changed()

    def _begin(self, job: DeviceJob) -> None:
        delay = self._work_time(job)
        if delay is not None:
            self._timer = asyncio.get_running_loop().call_later(self.clock.wall(delay), self._work_done, job)

    def _work_done(self, job: DeviceJob) -> None:
        self._timer = None
        self._current = None
        self._complete(job)
        self._next()
        self._state_changed()

    def _cancel_work(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drain(self) -> list[DeviceJob]:
        """Take the current and queued jobs off the device (the caller finishes them)."""
        jobs = ([self._current] if self._current is not None else []) + list(self._queue)
        self._current = None
        self._queue.clear()
        return jobs


def _device_seed(seed: int, device_id: str) -> int:
    """One random stream per device, so a device's behaviour does not depend on message interleaving."""
    value = seed
    for char in device_id:
        value = (value * 1_000_003 + ord(char)) % (1 << 61)
    return value
