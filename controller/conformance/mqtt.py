"""The MQTT devices' conformance checks (docs/devices.md, MQTT devices): pick lights, printers and
pack stations, judged from what they publish through the broker in answer to what the checks send
as the controller would.

Every check is a small function registered in CHECKS, in the order it runs on a device. Those marked
`motion` light a pick light, print a label, start a pack or knock the device off the broker for a
moment; they run only with --allow-motion.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from adapters.mqtt.results import check_result
from controller.conformance.checks import CheckList, Failed, Skipped, Unreachable
from controller.conformance.mqtt_probe import Heard, MqttProbe
from controller.contract.kinds import DeviceKind
from controller.contract.mqtt import Action, Channel, Connection, Topics, WireError, decode
from controller.contract.reasons import Reason, code_of
from controller.domain.label import shipping_label
from controller.site import Site

PICK_LIGHT, PRINTER, PACK_STATION = DeviceKind.PICK_LIGHT, DeviceKind.PRINTER, DeviceKind.PACK_STATION
EVERY_KIND = (PICK_LIGHT, PRINTER, PACK_STATION)
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
VERSION = re.compile(r"^1\.\d+$")
STATES = frozenset({"idle", "busy", "faulted"})
CHANNELS: dict[str, frozenset[str]] = {
    PICK_LIGHT: frozenset({Channel.ACK, Channel.DONE, Channel.STATE}),
    PACK_STATION: frozenset({Channel.ACK, Channel.DONE, Channel.STATE}),
    PRINTER: frozenset({Channel.ACK, Channel.DONE, Channel.STATE, Channel.ALERT}),
}
PRINTER_FLAGS = ("paper_out", "ribbon_out", "head_open", "paused", "buffer_full")
TEST_FAULT = "conformance_fault"  # injected into simulators that take fault injection
COME_BACK_S = 10.0  # how long a device knocked off the broker may take to publish its birth again


@dataclass(frozen=True, slots=True)
class MqttOptions:
    allow_motion: bool = False
    quiet_s: float = 1.0  # how long silence must last to count as "no answer"
    client_ids: dict[str, str] = field(default_factory=dict)  # device id -> its MQTT client id (last-will)


class MqttDevice:
    """One device under test, as the checks see it: send a command, wait for its answers."""

    def __init__(self, probe: MqttProbe, site: Site, kind: DeviceKind, device_id: str, options: MqttOptions,
                 run_id: str) -> None:
        self.probe = probe
        self.site = site
        self.kind = kind
        self.device_id = device_id
        self.options = options
        self.topics = Topics(site.broker.topic_root)
        self.ack_s = site.timeouts.ack_s
        self._ids = itertools.count(1)
        self._run_id = run_id

    def topic(self, channel: str) -> str:
        return self.topics.device(self.kind, self.device_id, channel)

    def new_id(self, what: str) -> str:
        return f"conformance.{self._run_id}.{what}.{next(self._ids)}"

    async def send(self, action: str, params: dict[str, Any] | None = None, *, command_id: str | None = None
                   ) -> str:
        command_id = command_id or self.new_id(action)
        body: dict[str, Any] = {"command_id": command_id, "action": action}
        if params is not None:
            body["params"] = params
        await self.probe.publish(self.topic(Channel.CMD), body)
        return command_id

    async def answer(self, channel: str, command_id: str, timeout: float, *, since: int = 0,
                     what: str = "") -> tuple[dict[str, Any], Heard]:
        """The next `ack` or `done` for `command_id` from position `since`; Failed if none comes."""
        heard = await self.probe.wait(self.topic(channel), _for(command_id), timeout, since)
        if heard is None:
            raise Failed(f"no {channel} for {what or command_id} within {timeout:g} s "
                         f"(on {self.topic(channel)})")
        return _message(heard), heard

    async def accepted(self, command_id: str, what: str, *, since: int = 0) -> tuple[dict[str, Any], Heard]:
        ack, heard = await self.answer(Channel.ACK, command_id, self.ack_s, since=since, what=what)
        if ack.get("status") != "accepted":
            raise Failed(f"{what} was refused: ack {_show(ack)}")
        return ack, heard

    async def rejected(self, command_id: str, what: str, code: str) -> dict[str, Any]:
        """The ack must refuse with `code`; no done may follow."""
        ack, _ = await self.answer(Channel.ACK, command_id, self.ack_s, what=what)
        if ack.get("status") != "rejected":
            raise Failed(f"{what} must be rejected with {code}, got ack {_show(ack)}")
        reason = ack.get("reason")
        if type(reason) is not str or code_of(reason) != code:
            raise Failed(f"{what} must be rejected with reason {code}, got {reason!r}")
        await self.silent(Channel.DONE, command_id, f"{what} (rejected)")
        return ack

    async def done(self, command_id: str, what: str, timeout: float, *, since: int = 0) -> dict[str, Any]:
        done, _ = await self.answer(Channel.DONE, command_id, timeout, since=since, what=what)
        return done

    async def silent(self, channel: str, command_id: str | None, what: str, *,
                     since: int | None = None) -> None:
        """Nothing on `channel` (for `command_id`, or at all) for quiet_s."""
        topic = self.topic(channel)
        start = self.probe.mark(topic) if since is None else since
        match = _for(command_id) if command_id else (lambda heard: True)
        heard = await self.probe.wait(topic, match, self.options.quiet_s, start)
        if heard is not None:
            raise Failed(f"{what}: expected no {channel}, got {_show(_lenient(heard))}")

    async def fresh_state(self, what: str = "its state") -> tuple[dict[str, Any], Heard]:
        """Announce the controller ONLINE (live, not retained) and take the state the device answers."""
        topic = self.topic(Channel.STATE)
        mark = self.probe.mark(topic)
        await self.probe.publish(self.topics.controller_state, {"connection": Connection.ONLINE})
        heard = await self.probe.wait(topic, lambda h: not h.retain, self.ack_s, mark)
        if heard is None:
            raise Failed(f"no state on {topic} within {self.ack_s:g} s after the controller said ONLINE "
                         f"(asked for {what})")
        message = _message(heard)
        _raise(check_header(message, self.device_id) + check_state(message, self.kind), f"{what}")
        return message, heard

    async def inject(self, fault: str | None) -> None:
        await self.probe.publish(self.topics.inject(self.device_id), json.dumps({"fault": fault}).encode())

    async def state_where(self, match: Callable[[dict[str, Any]], bool], timeout: float, since: int
                          ) -> dict[str, Any] | None:
        def wanted(heard: Heard) -> bool:
            message = _lenient(heard)
            return message is not None and match(message)

        heard = await self.probe.wait(self.topic(Channel.STATE), wanted, timeout, since)
        return None if heard is None else _message(heard)


CHECKS: CheckList[MqttDevice] = CheckList()


# --- state ----------------------------------------------------------------------------------------

@CHECKS.add("state.birth", kinds=EVERY_KIND)
async def birth_state(device: MqttDevice) -> str:
    """The retained state (the device's birth): retained, QoS 1, ONLINE, the fields of its kind."""
    topic = device.topic(Channel.STATE)
    heard = await device.probe.wait(topic, lambda h: h.retain, device.ack_s)
    if heard is None:
        raise Failed(f"no retained state on {topic}: the device is not connected, or publishes its state "
                     "without the retain flag")
    message = _message(heard)
    if message.get("connection") in (Connection.CONNECTIONBROKEN, Connection.OFFLINE):
        raise Failed(f"the device is offline: the broker holds {message['connection']} on {topic}")
    _raise(_qos(heard) + check_header(message, device.device_id) + check_state(message, device.kind),
           "the retained state")
    return f"ONLINE, {message.get('state')}, message_id {message['header'].get('message_id')}"


@CHECKS.add("state.fresh_on_controller_online", kinds=EVERY_KIND)
async def fresh_state(device: MqttDevice) -> str:
    """When the controller says ONLINE, the device publishes its state again, retained."""
    message, heard = await device.fresh_state("a fresh state")
    _raise(_qos(heard), "the fresh state")
    if message.get("connection") != Connection.ONLINE:
        raise Failed(f"the fresh state says connection {message.get('connection')!r}, not ONLINE")
    # Subscribing again delivers what the broker holds: it must be this state (or a later one).
    topic = device.topic(Channel.STATE)
    mark = device.probe.mark(topic)
    await device.probe.subscribe(topic)
    retained = await device.probe.wait(topic, lambda h: h.retain, device.ack_s, mark)
    if retained is None:
        raise Failed(f"the fresh state was not published retained: the broker holds nothing on {topic}")
    held = _message(retained)["header"].get("message_id")
    sent = message["header"]["message_id"]
    if type(held) is not int or held < sent:
        raise Failed(f"the broker holds an older state (message_id {held!r}) than the fresh one ({sent}): "
                     "the fresh state was published without the retain flag")
    return f"state {message['state']}, retained"


# --- acknowledgement, completion, reasons -------------------------------------------------------------

@CHECKS.add("ack.before_done", kinds=EVERY_KIND)
async def ack_before_done(device: MqttDevice) -> str:
    """A command is acknowledged (accepted) before its completion: `reset` on a healthy device."""
    command_id = await device.send(Action.RESET)
    ack, ack_heard = await device.accepted(command_id, "reset")
    done, done_heard = await device.answer(Channel.DONE, command_id, device.ack_s, what="reset")
    problems = _qos(ack_heard) + _qos(done_heard) + check_header(ack, device.device_id) \
        + check_header(done, device.device_id) + check_done(done, Action.RESET, {})
    _raise(problems, "reset")
    if done_heard.at < ack_heard.at:
        raise Failed("the done of reset arrived before its ack")
    if done.get("outcome") != "done" or done.get("result") != {"fault": None}:
        raise Failed(f"reset of a healthy device must end done with {{\"fault\": null}}, got {_show(done)}")
    return "reset: ack accepted, then done {\"fault\": null}"


BAD_PARAMS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    PICK_LIGHT: (Action.SHOW, [
        {"location": "CONFORMANCE", "qty": "2"}, {"location": "CONFORMANCE", "qty": 2.0},
        {"location": "CONFORMANCE", "qty": True}, {"location": "CONFORMANCE", "qty": 0},
        {"location": "", "qty": 1}, {"qty": 1}, {"location": "CONFORMANCE", "qty": 1, "colour": 5}]),
    PRINTER: (Action.PRINT, [{"zpl": 42}, {}, {"zpl": ["^XA^FDx^FS^XZ"]}]),
    PACK_STATION: (Action.PACK, [
        {"order_id": "conformance", "tote_id": "CONF-T1", "items": 2.5},
        {"order_id": "conformance", "tote_id": "CONF-T1", "items": "2"},
        {"order_id": "conformance", "tote_id": "CONF-T1", "items": True},
        {"order_id": "conformance", "tote_id": "CONF-T1", "items": -1},
        {"order_id": "", "tote_id": "CONF-T1", "items": 1}, {"order_id": "conformance", "items": 1}]),
}


@CHECKS.add("rejected.without_done", kinds=EVERY_KIND)
async def rejected_without_done(device: MqttDevice) -> str:
    """A refused command gets its ack `rejected` with a reason, and no done."""
    action, variants = BAD_PARAMS[device.kind]
    command_id = await device.send(action, variants[0])
    ack = await device.rejected(command_id, f"{action} {json.dumps(variants[0])}", Reason.BAD_PARAMS)
    return f"{action} with bad params: rejected ({ack['reason']}), no done"


@CHECKS.add("reason.bad_params", kinds=EVERY_KIND)
async def reason_bad_params(device: MqttDevice) -> str:
    """Every wrongly typed or missing parameter (2.0, "2" or true for an integer) is refused bad_params."""
    action, variants = BAD_PARAMS[device.kind]
    sent = [(await device.send(action, params), f"{action} {json.dumps(params)}") for params in variants]
    problems = await _all_refused(device, sent, Reason.BAD_PARAMS)
    if problems:
        if device.kind == PICK_LIGHT:
            await device.send(Action.CLEAR)  # switch off whatever it wrongly showed
        raise Failed("; ".join(problems))
    return f"{len(variants)} {action} commands refused bad_params"


@CHECKS.add("reason.unknown_action", kinds=EVERY_KIND)
async def reason_unknown_action(device: MqttDevice) -> str:
    """An action the device does not have is refused unknown_action, with no done."""
    command_id = await device.send("conformance_no_such_action")
    await device.rejected(command_id, "action 'conformance_no_such_action'", Reason.UNKNOWN_ACTION)
    return "rejected unknown_action"


async def _all_refused(device: MqttDevice, sent: list[tuple[str, str]], code: str) -> list[str]:
    """Each (command id, description) refused with `code`, no done; what went otherwise, in words."""

    async def one(command_id: str, what: str) -> str | None:
        try:
            await device.rejected(command_id, what, code)
        except Failed as exc:
            return str(exc)
        return None

    outcomes = await asyncio.gather(*(one(command_id, what) for command_id, what in sent))
    return [problem for problem in outcomes if problem]


BAD_LABELS = {
    "an empty label": "",
    "text before ^XA": "label ^XA^FO10,10^FDx^FS^XZ",
    "no ^XZ": "^XA^FO10,10^FDx^FS",
    "two labels": "^XA^FO10,10^FDx^FS^XZ^XA^FO10,10^FDy^FS^XZ",
    "an unknown command": "^XA^FO10,10^QQ1^FDx^FS^XZ",
    "~HS inside a label": "^XA~HS^FO10,10^FDx^FS^XZ",
    "^FD without ^FS": "^XA^FO10,10^FDx^FO10,60^FDy^FS^XZ",
    "no field": "^XA^PW812^LL1218^XZ",
}


@CHECKS.add("reason.bad_zpl", kinds=[PRINTER])
async def reason_bad_zpl(device: MqttDevice) -> str:
    """Every label the contract says to refuse is refused bad_zpl, and nothing is printed."""
    sent = [(await device.send(Action.PRINT, {"zpl": zpl}), f"print with {what}") for what,
            zpl in BAD_LABELS.items()]
    _raise(await _all_refused(device, sent, Reason.BAD_ZPL), "print")
    return f"{len(BAD_LABELS)} bad labels refused bad_zpl"


@CHECKS.add("rejected.not_remembered", kinds=EVERY_KIND)
async def rejected_not_remembered(device: MqttDevice) -> str:
    """A refused id is forgotten: the same id sent again is judged afresh (here: a `reset`, accepted)."""
    command_id = await device.send("conformance_no_such_action")
    await device.rejected(command_id, "action 'conformance_no_such_action'", Reason.UNKNOWN_ACTION)
    mark = device.probe.mark(device.topic(Channel.ACK))
    await device.send(Action.RESET, command_id=command_id)
    await device.accepted(command_id, "reset with the refused command's id", since=mark)
    done = await device.done(command_id, "reset with the refused command's id", device.ack_s)
    if done.get("outcome") != "done":
        raise Failed(f"reset with the refused command's id must end done, got {_show(done)}")
    return "the refused id was executed when sent again as a reset"


@CHECKS.add("malformed.no_answer", kinds=EVERY_KIND)
async def malformed_no_answer(device: MqttDevice) -> str:
    """A command that cannot be read (not JSON, no command_id, params not an object) gets no answer."""
    ack_topic = device.topic(Channel.ACK)
    mark = device.probe.mark(ack_topic)
    cmd = device.topic(Channel.CMD)
    await device.probe.publish(cmd, b"this is not JSON")
    await device.probe.publish(cmd, {"action": Action.RESET})
    command_id = device.new_id("malformed")
    await device.probe.publish(cmd, {"command_id": command_id, "action": Action.RESET, "params": []})
    await device.silent(Channel.ACK, None, "unreadable commands", since=mark)
    alive = await device.send(Action.RESET)
    await device.accepted(alive, "a reset after the unreadable commands")
    return "three unreadable commands dropped, the next one answered"


@CHECKS.add("dedupe.answers_again", kinds=EVERY_KIND)
async def dedupe_answers_again(device: MqttDevice) -> str:
    """A finished command sent again (same id) gets its ack and its done again, with a fresh header."""
    command_id = await device.send(Action.RESET)
    first_ack, _ = await device.accepted(command_id, "reset")
    first = await device.done(command_id, "reset", device.ack_s)
    ack_mark = device.probe.mark(device.topic(Channel.ACK))
    done_mark = device.probe.mark(device.topic(Channel.DONE))
    await device.send(Action.RESET, command_id=command_id)
    again_ack, _ = await device.accepted(command_id, "the same reset again", since=ack_mark)
    again = await device.done(command_id, "the same reset again", device.ack_s, since=done_mark)
    if _body(again) != _body(first):
        raise Failed(f"the done sent again differs from the first: {_show(again)} vs {_show(first)}")
    if again_ack["header"].get("message_id") == first_ack["header"].get("message_id"):
        raise Failed("the ack sent again carries the first ack's header (message_id): it must be fresh")
    return "ack and done again, same done, fresh header"


# --- kind by kind -----------------------------------------------------------------------------------

@CHECKS.add("clear.dark_unit", kinds=[PICK_LIGHT])
async def clear_dark_unit(device: MqttDevice) -> str:
    """`clear` is acknowledged and done with `{}`; the unit is then dark and idle."""
    command_id = await device.send(Action.CLEAR)
    await device.accepted(command_id, "clear")
    done = await device.done(command_id, "clear", device.ack_s)
    if done.get("outcome") != "done" or done.get("result") != {}:
        raise Failed(f"clear must end done with {{}}, got {_show(done)}")
    state, _ = await device.fresh_state("the state after clear")
    if state.get("display") is not None or state.get("state") != "idle":
        raise Failed(f"after clear the unit must be dark and idle, its state says {_show(state)}")
    return "done {}, then dark and idle"


@CHECKS.add("host_status", kinds=[PRINTER])
async def host_status(device: MqttDevice) -> str:
    """`host_status` (~HS) is answered at once with the six flags, as the printer's state shows them."""
    state, _ = await device.fresh_state("the printer's state")
    command_id = await device.send(Action.HOST_STATUS)
    await device.accepted(command_id, "host_status")
    done = await device.done(command_id, "host_status", device.ack_s)
    _raise(check_done(done, Action.HOST_STATUS, {}), "host_status")
    result = done["result"]
    differs = [key for key in (*PRINTER_FLAGS, "labels_remaining") if result.get(key) != state.get(key)]
    if differs and state.get("state") == "idle":
        raise Failed(f"host_status says {_show(result)} but the state says "
                     f"{ {key: state.get(key) for key in differs} }")
    return f"labels_remaining {result['labels_remaining']}, paused {result['paused']}"


@CHECKS.add("cancel.nothing_held", kinds=[PRINTER])
async def cancel_nothing_held(device: MqttDevice) -> str:
    """`cancel` on an idle printer is done with `{"cancelled": 0}`."""
    state, _ = await device.fresh_state("the printer's state")
    command_id = await device.send(Action.CANCEL)
    await device.accepted(command_id, "cancel")
    done = await device.done(command_id, "cancel", device.ack_s)
    _raise(check_done(done, Action.CANCEL, {}), "cancel")
    if state.get("state") == "idle" and done["result"]["cancelled"] != 0:
        raise Failed(f"an idle printer cancelled {done['result']['cancelled']} labels")
    return f"done {json.dumps(done['result'])}"


@CHECKS.add("fault.refuses_then_reset", kinds=[PICK_LIGHT, PACK_STATION])
async def fault_refuses_then_reset(device: MqttDevice) -> str:
    """Faulted (by fault injection): commands are refused with the fault's code; `reset` clears it."""
    state_mark = device.probe.mark(device.topic(Channel.STATE))
    await device.inject(TEST_FAULT)
    try:
        faulted = await device.state_where(lambda m: m.get("fault") == TEST_FAULT, device.ack_s, state_mark)
        if faulted is None:
            raise Skipped(f"the device takes no fault injection on {device.topics.inject(device.device_id)} "
                          "(simulators only)")
        if faulted.get("state") != "faulted":
            raise Failed(f"a faulted device's state must say faulted, it says {_show(faulted)}")
        action, params = ((Action.CLEAR, None) if device.kind == PICK_LIGHT else
                          (Action.PACK, {"order_id": "conformance", "tote_id": "CONF-T1", "items": 1}))
        refused = await device.send(action, params)
        await device.rejected(refused, f"{action} while faulted", TEST_FAULT)
        state_mark = device.probe.mark(device.topic(Channel.STATE))
        reset = await device.send(Action.RESET)
        await device.accepted(reset, "reset while faulted")
        done = await device.done(reset, "reset while faulted", device.ack_s)
        if done.get("outcome") != "done" or done.get("result") != {"fault": TEST_FAULT}:
            raise Failed(f"reset must end done with {{\"fault\": \"{TEST_FAULT}\"}}, got {_show(done)}")
        healthy = await device.state_where(lambda m: m.get("fault") is None, device.ack_s, state_mark)
        if healthy is None or healthy.get("state") != "idle":
            raise Failed(f"after the reset the device must publish its state idle with no fault, got "
                         f"{_show(healthy) if healthy else 'nothing'}")
    finally:
        await device.inject(None)
    return f"{action} refused {TEST_FAULT}; reset done {{\"fault\": \"{TEST_FAULT}\"}}, then idle"


@CHECKS.add("fault.silent_printer", kinds=[PRINTER])
async def fault_silent_printer(device: MqttDevice) -> str:
    """Faulted (head_open, by fault injection): silent but to cancel and reset, alerts, then answers again."""
    state_topic, alert_topic = device.topic(Channel.STATE), device.topic(Channel.ALERT)
    state_mark, alert_mark = device.probe.mark(state_topic), device.probe.mark(alert_topic)
    await device.inject(Reason.HEAD_OPEN)
    try:
        faulted = await device.state_where(lambda m: m.get("fault") == Reason.HEAD_OPEN, device.ack_s,
                                           state_mark)
        if faulted is None:
            raise Skipped(f"the printer takes no fault injection on {device.topics.inject(device.device_id)} "
                          "(simulators only)")
        if (faulted.get("state"), faulted.get("head_open"), faulted.get("paused")) != ("faulted", True, True):
            raise Failed("a printer with its head open must say faulted, head_open and paused: "
                         f"{_show(faulted)}")
        await _alert(device, alert_mark, active=True)
        silent = await device.send(Action.HOST_STATUS)
        await device.silent(Channel.ACK, silent, "host_status while the head is open")
        reset = await device.send(Action.RESET)
        await device.rejected(reset, "reset while the head is open", Reason.OPERATOR_REQUIRED)
        cancel = await device.send(Action.CANCEL)
        await device.accepted(cancel, "cancel while the head is open")
        done = await device.done(cancel, "cancel while the head is open", device.ack_s)
        _raise(check_done(done, Action.CANCEL, {}), "cancel while faulted")
        state_mark, alert_mark = device.probe.mark(state_topic), device.probe.mark(alert_topic)
    finally:
        await device.inject(None)
    healthy = await device.state_where(lambda m: m.get("fault") is None, device.ack_s, state_mark)
    if healthy is None:
        raise Failed("no state with fault null after the head was closed")
    await _alert(device, alert_mark, active=False)
    await device.send(Action.HOST_STATUS, command_id=silent)
    await device.accepted(silent, "the host_status it ignored while faulted, sent again")
    return "silent to host_status, reset refused operator_required, cancel answered, alerts, answers again"


async def _alert(device: MqttDevice, since: int, *, active: bool) -> None:
    heard = await device.probe.wait(device.topic(Channel.ALERT), lambda h: True, device.ack_s, since)
    if heard is None:
        when = "started" if active else "ended"
        raise Failed(f"no alert on {device.topic(Channel.ALERT)} when head_open {when}")
    alert = _message(heard)
    _raise(_qos(heard) + check_header(alert, device.device_id), "the alert")
    if alert.get("alert") != Reason.HEAD_OPEN or alert.get("active") is not active \
            or type(alert.get("message")) is not str:
        raise Failed(f"the alert must be {{\"alert\": \"head_open\", \"active\": {str(active).lower()}, "
                     f"\"message\": ...}}, got {_show(alert)}")


# --- motion: the light lights, the printer prints, the packer packs --------------------------------------

SHOW = {"location": "CONFORMANCE", "qty": 1, "colour": "green"}
PACK = {"order_id": "conformance-1", "tote_id": "CONF-T1", "items": 3}


@CHECKS.add("show.done", kinds=[PICK_LIGHT], motion=True)
async def show_done(device: MqttDevice) -> str:
    """`show` lights the pick (its state shows it) and ends done with `picked` and `short` (someone
    confirms)."""
    done_mark = device.probe.mark(device.topic(Channel.DONE))
    command_id = await device.send(Action.SHOW, SHOW)
    await device.accepted(command_id, "show")
    state, _ = await device.fresh_state("the state while the pick is shown")
    confirmed = device.probe.heard(device.topic(Channel.DONE))[done_mark:]
    if not any(_for(command_id)(h) for h in confirmed) and state.get("display") != SHOW:
        raise Failed(f"while the pick is shown the state must say display {json.dumps(SHOW)}, got "
                     f"{_show(state)}")
    done = await device.done(command_id, "show (press confirm on the unit)", device.site.timeouts.pick_s,
                             since=done_mark)
    _raise(check_done(done, Action.SHOW, SHOW), "show")
    return f"shown, then done {json.dumps(done['result'])}"


@CHECKS.add("clear.ends_pick", kinds=[PICK_LIGHT], motion=True)
async def clear_ends_pick(device: MqttDevice) -> str:
    """`clear` ends the pick shown (failed `cleared`) before its own done."""
    shown = await device.send(Action.SHOW, SHOW)
    await device.accepted(shown, "show")
    clear = await device.send(Action.CLEAR)
    await device.accepted(clear, "clear")
    cleared_done, cleared_heard = await device.answer(Channel.DONE, shown, device.ack_s,
                                                      what="the pick cleared")
    own, own_heard = await device.answer(Channel.DONE, clear, device.ack_s, what="clear")
    if own_heard.at < cleared_heard.at or _position(device, own_heard) < _position(device, cleared_heard):
        raise Failed("clear's own done came before the done of the pick it cleared")
    if own.get("outcome") != "done" or own.get("result") != {}:
        raise Failed(f"clear must end done with {{}}, got {_show(own)}")
    if cleared_done.get("outcome") == "done":
        return "the operator confirmed before the clear arrived; clear done {}"
    if cleared_done.get("outcome") != "failed" or code_of(str(cleared_done.get("reason"))) != Reason.CLEARED:
        raise Failed(f"the pick cleared must end failed with reason cleared, got {_show(cleared_done)}")
    return "pick failed cleared, then clear done {}"


@CHECKS.add("print.label", kinds=[PRINTER], motion=True)
async def print_label(device: MqttDevice) -> str:
    """floorctl's own shipping label is printed: done with `labels_remaining` one lower."""
    before = (await device.fresh_state("the printer's state"))[0].get("labels_remaining")
    command_id = await device.send(Action.PRINT, {"zpl": LABEL})
    await device.accepted(command_id, "print of floorctl's label")
    done = await device.done(command_id, "print", device.site.timeouts.print_s)
    _raise(check_done(done, Action.PRINT, {}), "print")
    after = done["result"]["labels_remaining"]
    if type(before) is int and before > 0 and after != before - 1:
        raise Failed(f"labels_remaining went from {before} to {after} for one label")
    return f"printed, labels_remaining {after}"


@CHECKS.add("cancel.drops_waiting", kinds=[PRINTER], motion=True)
async def cancel_drops_waiting(device: MqttDevice) -> str:
    """`cancel` ends the labels waiting failed `cancelled`, each once, then its own done counts them."""
    prints = [await device.send(Action.PRINT, {"zpl": LABEL}) for _ in range(3)]
    for command_id in prints:
        await device.accepted(command_id, "print")
    cancel = await device.send(Action.CANCEL)
    await device.accepted(cancel, "cancel")
    own, own_heard = await device.answer(Channel.DONE, cancel, device.ack_s, what="cancel")
    _raise(check_done(own, Action.CANCEL, {}), "cancel")
    cancelled = []
    for command_id in prints:
        done, heard = await device.answer(Channel.DONE, command_id, device.site.timeouts.print_s,
                                          what="print")
        if done.get("outcome") == "failed":
            if code_of(str(done.get("reason"))) != Reason.CANCELLED:
                raise Failed(f"a label dropped by cancel must fail with reason cancelled, got {_show(done)}")
            if _position(device, heard) > _position(device, own_heard):
                raise Failed("cancel's own done came before the done of a label it dropped")
            cancelled.append(command_id)
    await asyncio.sleep(device.options.quiet_s)
    twice = [c for c in prints if len(_dones(device, c)) > 1]
    if twice:
        raise Failed(f"{len(twice)} print(s) got more than one done")
    if own["result"]["cancelled"] != len(cancelled):
        raise Failed(f"cancel says it dropped {own['result']['cancelled']} labels, {len(cancelled)} ended "
                     "cancelled")
    return f"{len(cancelled)} of 3 labels cancelled, cancel done {json.dumps(own['result'])}"


@CHECKS.add("pack.done", kinds=[PACK_STATION], motion=True)
async def pack_done(device: MqttDevice) -> str:
    """`pack` shows the order on the station and ends done with the order, tote and items as given."""
    command_id = await device.send(Action.PACK, PACK)
    await device.accepted(command_id, "pack")
    done = await device.done(command_id, "pack (confirm it on the station)", device.site.timeouts.pack_s)
    _raise(check_done(done, Action.PACK, PACK), "pack")
    return f"done {json.dumps(done['result'])}"


@CHECKS.add("dedupe.executes_once", kinds=EVERY_KIND, motion=True)
async def dedupe_executes_once(device: MqttDevice) -> str:
    """The same command sent twice is executed once: no second pick, label or pack."""
    return await {PICK_LIGHT: _once_pick, PRINTER: _once_print, PACK_STATION: _once_pack}[device.kind](device)


async def _twice(device: MqttDevice, action: str, params: dict[str, Any]) -> str:
    command_id = await device.send(action, params)
    await device.accepted(command_id, action)
    mark = device.probe.mark(device.topic(Channel.ACK))
    await device.send(action, params, command_id=command_id)
    await device.accepted(command_id, f"the same {action} again", since=mark)
    return command_id


def _dones(device: MqttDevice, command_id: str) -> list[dict[str, Any]]:
    return [_message(h) for h in device.probe.heard(device.topic(Channel.DONE)) if _for(command_id)(h)]


def _same_dones(device: MqttDevice, command_id: str, action: str) -> None:
    dones = _dones(device, command_id)
    if any(_body(d) != _body(dones[0]) for d in dones[1:]):
        endings = ", ".join(_show(_body(d)) for d in dones)
        raise Failed(f"the {action} sent twice ended differently ({endings}): "
                     "it was executed twice")


async def _once_pick(device: MqttDevice) -> str:
    done_topic = device.topic(Channel.DONE)
    done_mark = device.probe.mark(done_topic)
    command_id = await device.send(Action.SHOW, SHOW)
    await device.accepted(command_id, "show")
    finished_first = bool(_dones(device, command_id))
    ack_mark = device.probe.mark(device.topic(Channel.ACK))
    await device.send(Action.SHOW, SHOW, command_id=command_id)
    await device.accepted(command_id, "the same show again", since=ack_mark)
    state, _ = await device.fresh_state("the state after the same show twice")
    if state.get("queued") not in (0, None):
        raise Failed(f"the same show sent twice left {state.get('queued')} pick(s) queued: it was executed "
                     "twice")
    if finished_first and state.get("display") is not None:
        raise Failed("the pick was confirmed, and the same show sent again lit it again")
    clear = await device.send(Action.CLEAR)
    await device.done(clear, "clear", device.ack_s)
    await device.silent(Channel.DONE, command_id, "after the clear", since=device.probe.mark(done_topic))
    _same_dones(device, command_id, "show")
    if not device.probe.heard(done_topic)[done_mark:]:
        raise Failed("the show got no done at all")
    return "the second show was acknowledged, not queued or shown again"


async def _once_print(device: MqttDevice) -> str:
    command_id = await _twice(device, Action.PRINT, {"zpl": LABEL})
    first = await device.done(command_id, "print", device.site.timeouts.print_s)
    await asyncio.sleep(device.options.quiet_s)  # a second execution would end meanwhile
    _same_dones(device, command_id, "print")
    status = await device.send(Action.HOST_STATUS)
    done = await device.done(status, "host_status", device.ack_s)
    remaining = done.get("result", {}).get("labels_remaining")
    if first.get("outcome") == "done" and remaining != first["result"]["labels_remaining"]:
        raise Failed(f"labels_remaining is {remaining} after the label's done said "
                     f"{first['result']['labels_remaining']}: the same print sent twice printed twice")
    return "one label for two prints with the same id"


async def _once_pack(device: MqttDevice) -> str:
    command_id = await _twice(device, Action.PACK, PACK)
    finished = bool(_dones(device, command_id))
    state, _ = await device.fresh_state("the state after the same pack twice")
    if state.get("queued") not in (0, None):
        raise Failed(f"the same pack sent twice left {state.get('queued')} pack(s) queued: it was executed "
                     "twice")
    if not finished and state.get("order_id") != PACK["order_id"]:
        raise Failed(f"the station must show the pack in hand, its state says {_show(state)}")
    await device.done(command_id, "pack (confirm it on the station)", device.site.timeouts.pack_s)
    await asyncio.sleep(device.options.quiet_s)
    _same_dones(device, command_id, "pack")
    return "the second pack was acknowledged, not queued"


@CHECKS.add("last_will", kinds=EVERY_KIND, motion=True)
async def last_will(device: MqttDevice) -> str:
    """When its link dies the broker publishes the device's last-will (CONNECTIONBROKEN); it comes back
    with its birth."""
    settings = device.site.broker
    if settings.simulators is not None:
        settings = settings.for_device(device.device_id)
    elif settings.username is not None:
        raise Skipped("the broker has accounts: knocking the device off needs the device's own account")
    client_id = device.options.client_ids.get(device.device_id, f"{device.site.site}-sim-{device.device_id}")
    topic = device.topic(Channel.STATE)
    mark = device.probe.mark(topic)
    # Connecting with the device's client id makes the broker drop the device's link without a
    # DISCONNECT, as a pulled cable would: the broker then publishes its last-will.
    intruder = MqttProbe(device.probe.url, settings, client_id=client_id)
    try:
        await intruder.connect()
    except Unreachable as exc:
        raise Failed(f"could not connect as the device's client id {client_id!r}: {exc}") from None
    try:
        heard = await device.probe.wait(topic, _says(Connection.CONNECTIONBROKEN), device.ack_s * 2, mark)
    finally:
        await intruder.close()
    if heard is None:
        raise Failed(f"no CONNECTIONBROKEN on {topic} after the device's client id {client_id!r} was taken "
                     "over: the device sets no last-will, or uses another client id (give it with "
                     "--client-id)")
    will = _message(heard)
    problems = _qos(heard) + check_header(will, device.device_id)
    if will.get("state") != "unknown" or will.get("fault") is not None:
        problems.append(f"the last-will must say state unknown and fault null, it says {_show(will)}")
    _raise(problems, "the last-will")
    # The device may be back before the will is read: its birth is whatever ONLINE follows the will.
    back = await device.probe.wait(topic, _says(Connection.ONLINE), COME_BACK_S, _position(device, heard) + 1)
    if back is None:
        raise Failed(f"the device did not come back (no ONLINE state within {COME_BACK_S:g} s of its link "
                     "dying)")
    birth = _message(back)
    _raise(check_header(birth, device.device_id) + check_state(birth, device.kind),
           "the birth after the link died")
    return "CONNECTIONBROKEN (state unknown), then a birth state ONLINE"


@CHECKS.add("wire.topics_headers_qos", kinds=EVERY_KIND)
async def wire_audit(device: MqttDevice) -> str:
    """Everything the device published during the checks: its own topics, QoS 1, a header, nothing retained
    but state."""
    problems: list[str] = []
    prefix = f"{device.topics.root}/"
    count = 0
    for topic in device.probe.topics():
        parsed = device.topics.parse(topic)
        rest = topic[len(prefix):].split("/") if topic.startswith(prefix) else []
        if parsed is None:
            if len(rest) >= 2 and rest[1] == device.device_id and rest[0] not in ("sim", "controller"):
                problems.append(f"published on {topic}, which is not a contract topic")
            continue
        kind, device_id, channel = parsed
        if device_id != device.device_id or channel == Channel.CMD:
            continue
        if kind != device.kind:
            problems.append(f"published under kind {kind!r} ({topic}); the site file says {device.kind}")
            continue
        if channel not in CHANNELS[device.kind]:
            problems.append(f"published on channel {channel!r} ({topic}), which a {device.kind} lacks")
            continue
        last_id = 0
        for heard in device.probe.heard(topic):
            count += 1
            message = _lenient(heard)
            if message is None:
                problems.append(f"{topic}: not a contract message: {heard.payload[:80]!r}")
                continue
            problems += [f"{topic}: {p}" for p in _qos(heard) + check_header(message, device.device_id)]
            message_id = message["header"].get("message_id")
            if channel != Channel.STATE and type(message_id) is int:
                if message_id <= last_id:
                    problems.append(f"{topic}: message_id {message_id} after {last_id}: it must count up")
                last_id = message_id
    for channel in sorted(CHANNELS[device.kind] - {Channel.STATE}):
        topic = device.topic(channel)
        mark = device.probe.mark(topic)
        await device.probe.subscribe(topic)
        if await device.probe.wait(topic, lambda h: h.retain, 0.2, mark) is not None:
            problems.append(f"{topic}: the broker holds a retained message: {channel} must not be retained")
    _raise(problems[:10], "the messages published")
    return f"{count} messages on the device's topics"


# --- message checks ------------------------------------------------------------------------------------

def check_header(message: dict[str, Any], device_id: str) -> list[str]:
    header = message.get("header")
    if type(header) is not dict:
        return ["no header object"]
    problems = []
    message_id = header.get("message_id")
    if type(message_id) is not int or message_id < 1:
        problems.append(f"header.message_id must be an integer from 1, got {message_id!r}")
    timestamp = header.get("timestamp")
    if type(timestamp) is not str or not TIMESTAMP.match(timestamp):
        problems.append(f"header.timestamp must be ISO-8601 UTC with milliseconds and Z, got {timestamp!r}")
    if header.get("device_id") != device_id:
        problems.append(f"header.device_id must be {device_id!r}, got {header.get('device_id')!r}")
    version = header.get("version")
    if type(version) is not str or not VERSION.match(version):
        problems.append(f"header.version must be \"1.x\", got {version!r}")
    return problems


def check_state(message: dict[str, Any], kind: str) -> list[str]:
    connection = message.get("connection")
    if connection not in set(Connection):
        return [f"connection must be ONLINE, OFFLINE or CONNECTIONBROKEN, got {connection!r}"]
    state, fault = message.get("state"), message.get("fault")
    if connection == Connection.CONNECTIONBROKEN:
        return [] if state == "unknown" and fault is None else [
            f"a CONNECTIONBROKEN state must say state unknown and fault null, got {state!r}, {fault!r}"]
    problems = []
    if state not in STATES:
        problems.append(f"state must be idle, busy or faulted, got {state!r}")
    if fault is not None and (type(fault) is not str or not fault):
        problems.append(f"fault must be null or a code, got {fault!r}")
    if (state == "faulted") != (fault is not None):
        problems.append(f"state {state!r} with fault {fault!r}: faulted exactly when a fault is set")
    problems += _kind_fields(message, kind)
    return problems


def _kind_fields(message: dict[str, Any], kind: str) -> list[str]:
    problems = []

    def count(key: str) -> None:
        if type(message.get(key)) is not int or message[key] < 0:
            problems.append(f"{key} must be an integer from 0, got {message.get(key)!r}")

    if kind == PICK_LIGHT:
        count("queued")
        display = message.get("display", "missing")
        shape = ({k: type(v) for k, v in display.items() if k in ("location", "qty", "colour")}
                 if type(display) is dict else None)
        if display is not None and shape != {"location": str, "qty": int, "colour": str}:
            problems.append(f"display must be null or {{location, qty, colour}}, got {display!r}")
    elif kind == PACK_STATION:
        count("queued")
        for key in ("order_id", "tote_id"):
            if key not in message or (message[key] is not None and type(message[key]) is not str):
                problems.append(f"{key} must be a string or null, got {message.get(key, 'nothing')!r}")
    else:
        count("labels_remaining")
        for key in PRINTER_FLAGS:
            if type(message.get(key)) is not bool:
                problems.append(f"{key} must be true or false, got {message.get(key)!r}")
    return problems


def check_done(done: dict[str, Any], action: str, params: dict[str, Any]) -> list[str]:
    outcome, result = done.get("outcome"), done.get("result")
    if outcome not in ("done", "failed"):
        return [f"outcome must be done or failed, got {outcome!r}"]
    if type(result) is not dict:
        return [f"result must be an object, got {result!r}"]
    if outcome == "failed":
        return [] if type(done.get("reason")) is str else ["a failed done must carry a reason"]
    try:
        check_result(action, params, result)
    except WireError as exc:
        return [f"done of {action}: {exc}"]
    return []


def _qos(heard: Heard) -> list[str]:
    return [] if heard.qos == 1 else [f"{heard.topic} arrived at QoS {heard.qos}: every message is QoS 1"]


def _raise(problems: list[str], what: str) -> None:
    if problems:
        raise Failed(f"{what}: " + "; ".join(problems))


def _message(heard: Heard) -> dict[str, Any]:
    try:
        return decode(heard.payload)
    except WireError as exc:
        raise Failed(f"{heard.topic}: not a contract message ({exc}): {heard.payload[:120]!r}") from None


def _lenient(heard: Heard) -> dict[str, Any] | None:
    try:
        return decode(heard.payload)
    except WireError:
        return None


def _for(command_id: str) -> Callable[[Heard], bool]:
    def match(heard: Heard) -> bool:
        message = _lenient(heard)
        return message is not None and message.get("command_id") == command_id

    return match


def _says(connection: str) -> Callable[[Heard], bool]:
    def match(heard: Heard) -> bool:
        message = _lenient(heard)
        return message is not None and message.get("connection") == connection

    return match


def _body(message: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k != "header"}


def _show(message: Any) -> str:
    text = json.dumps(_body(message) if isinstance(message, dict) else message, ensure_ascii=False)
    return text if len(text) <= 160 else text[:157] + "..."


def _position(device: MqttDevice, heard: Heard) -> int:
    return device.probe.heard(heard.topic).index(heard)


LABEL = shipping_label(order_id=1, external_id="CONFORMANCE", carrier="DHL", tote="CONF-T1", lane="lane-1",
                       items=1)
