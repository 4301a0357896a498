#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a muninet service plan for subscriber lines."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_plan
short_description: Ensure a service plan (speeds, caps, limits) exists on a muninet appliance
description:
  - Creates, changes or removes a service plan for subscriber lines through muninet's
    JSON API (C(/api/v1/plans)). muninet makes the plan's RADIUS reply attributes for
    every NAS vendor itself.
  - Idempotent. The plan is read first and only the fields that differ are sent.
  - Options left out are not managed. Needs a superadmin's token to write.
author: muninet developers
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - muninet_api
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  name:
    description:
      - The plan's name (lower-case letters, digits, C(.), C(-), C(_)), e.g. V(dsl-2m).
    type: str
    required: true
  state:
    description:
      - V(present) creates or changes the plan, V(absent) removes it. The API refuses to
        remove a plan that subscriber lines still use.
    type: str
    choices: [present, absent]
    default: present
  description:
    description:
      - A line of text about the plan.
    type: str
  kind:
    description:
      - The access technology.
    type: str
    choices: [dialup, pppoe, wireless]
  download_bps:
    description:
      - The download rate, in bit/s or as V(512k), V(2M), V(1G) (decimal units). V(0) is unlimited.
    type: raw
  upload_bps:
    description:
      - The upload rate, like O(download_bps).
    type: raw
  data_cap_bytes:
    description:
      - The monthly data cap, in bytes or as a size such as V(50G). V(0) for none.
    type: raw
  time_cap_seconds:
    description:
      - The monthly online time cap in seconds. V(0) for none.
    type: int
  cap_action:
    description:
      - What happens at the cap; V(reject) new sessions or V(throttle) them to the fair-use rates.
    type: str
    choices: [reject, throttle]
  fair_use_download_bps:
    description:
      - The download rate past the cap (with O(cap_action=throttle)).
    type: raw
  fair_use_upload_bps:
    description:
      - The upload rate past the cap.
    type: raw
  session_timeout:
    description:
      - The longest session, in seconds. V(0) for none.
    type: int
  idle_timeout:
    description:
      - Seconds without traffic before a session ends. V(0) for none.
    type: int
  simultaneous_use:
    description:
      - How many sessions one login may have at once.
    type: int
  port_limit:
    description:
      - The RADIUS Port-Limit (channels of a multilink session). V(0) for none.
    type: int
seealso:
  - module: muninet_subscriber
"""

EXAMPLES = r"""
- name: Ensure the 2 Mbit/s DSL plan with a 50 GiB cap, throttled past it
  muninet_plan:
    name: dsl-2m
    description: DSL 2 Mbit/s
    kind: pppoe
    download_bps: 2M
    upload_bps: 512k
    data_cap_bytes: 50G
    cap_action: throttle
    fair_use_download_bps: 256k
    fair_use_upload_bps: 128k
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
plan:
  description:
    - The plan as the API returns it, with its generated reply attributes; in check mode
      the fields the task would set. Null when the plan is absent.
  returned: success
  type: dict
  sample:
    name: dsl-2m
    kind: pppoe
    download_bps: 2000000
    upload_bps: 512000
    data_cap_bytes: 53687091200
    cap_action: throttle
status:
  description: The HTTP status of a refused request.
  returned: failure
  type: int
problem:
  description: The API's RFC 9457 problem document of a refused request.
  returned: failure
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.muninet_api import (
    JSON,
    Client,
    Resource,
    connection_argument_spec,
    ensure,
    parse_rate,
    parse_size,
)

RATES = ("download_bps", "upload_bps", "fair_use_download_bps", "fair_use_upload_bps")
# Limits where 0 means none: the API stores null for them.
OPTIONAL_LIMITS = ("time_cap_seconds", "session_timeout", "idle_timeout", "port_limit")
FIELDS = (
    "description",
    "kind",
    *RATES,
    "data_cap_bytes",
    "cap_action",
    "simultaneous_use",
    *OPTIONAL_LIMITS,
)


class Plan(Resource):
    kind = "plan"
    collection = "plans"
    key_field = "name"

    def key(self) -> str:
        return str(self.params["name"]).strip().lower()

    def view(self, current: JSON) -> JSON:
        return {"name": current["name"], **{name: current.get(name) for name in FIELDS}}

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["description"] is not None:
            wanted["description"] = p["description"].strip()
        for name in ("kind", "cap_action", "simultaneous_use"):
            if p[name] is not None:
                wanted[name] = p[name]
        for name in RATES:
            if p[name] is not None:
                wanted[name] = parse_rate(p[name], name)
        if p["data_cap_bytes"] is not None:
            wanted["data_cap_bytes"] = parse_size(p["data_cap_bytes"], "data_cap_bytes") or None
        for name in OPTIONAL_LIMITS:
            if p[name] is not None:
                wanted[name] = p[name] or None
        return wanted

    def create(self, client: Client, desired: JSON) -> JSON:
        return client.send("POST", "/plans", {"name": self.key(), **desired})

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        return client.send("PATCH", self.path(), changes)


def main() -> None:
    spec = {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "description": {"type": "str"},
        "kind": {"type": "str", "choices": ["dialup", "pppoe", "wireless"]},
        "download_bps": {"type": "raw"},
        "upload_bps": {"type": "raw"},
        "data_cap_bytes": {"type": "raw"},
        "time_cap_seconds": {"type": "int"},
        "cap_action": {"type": "str", "choices": ["reject", "throttle"]},
        "fair_use_download_bps": {"type": "raw"},
        "fair_use_upload_bps": {"type": "raw"},
        "session_timeout": {"type": "int"},
        "idle_timeout": {"type": "int"},
        "simultaneous_use": {"type": "int"},
        "port_limit": {"type": "int"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Plan(module))


if __name__ == "__main__":
    main()
