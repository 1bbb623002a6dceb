"""`floorctl conformance`: one device, or every device of a site file, checked against the wire contract
(docs/devices.md) over the real protocols, with floorctl playing the controller. `checks` is what a
check is and how one runs; `mqtt` and `opcua` are the checks of each protocol, over the plain clients
of `mqtt_probe` and `opcua_probe`; `run` picks the devices and runs them; `report` prints the lines and
writes JUnit XML; `command` is the command line. docs/conformance.md says what each check asks.
"""
