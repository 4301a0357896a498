#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a muninet subscriber line (a RADIUS login with a plan)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_subscriber
short_description: Ensure a subscriber line exists (or not) on a muninet appliance
description:
  - Creates, changes, suspends, resumes or removes a subscriber line (a dial-up, PPPoE
    or wireless login) through muninet's JSON API (C(/api/v1/subscribers)).
  - Idempotent. The line is read first and only the fields that differ are sent.
  - Options left out are not managed. The password is never printed, logged or shown in diffs.
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
  username:
    description:
      - The login (letters, digits, C(.), C(-), C(_), C(@)).
    type: str
    required: true
  state:
    description:
      - V(present) creates or changes the line, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  password:
    description:
      - The line's password, set when the line is created (required then).
      - The API does not change the password of an existing line; use the admin for that.
    type: str
  member:
    description:
      - The slug of the member whose package the line counts against; default the token's
        member. Cannot be changed on an existing line.
    type: str
  plan:
    description:
      - The service plan's name. Required when the line is created.
    type: str
  status:
    description:
      - V(suspended) refuses the line's logins (and disconnects its sessions); V(active)
        resumes it. A line past its O(expires_on) stays refused while active; move the date.
    type: str
    choices: [active, suspended]
  reason:
    description:
      - Why the line is suspended; recorded when O(status) changes.
    type: str
  chap:
    description:
      - Keep the password so that CHAP logins work. Set only when the line is created.
    type: bool
  static_ip:
    description:
      - A fixed IPv4 address for the line; an empty string for none.
    type: str
  pool:
    description:
      - The address pool the line's address comes from. Set only when the line is created.
    type: str
  calling_station_id:
    description:
      - Bind the line to this Calling-Station-Id (a MAC address or a phone number); an
        empty string for none.
    type: str
  expires_on:
    description:
      - The last day the line works (V(2026-12-31)); an empty string for never.
    type: raw
  notes:
    description:
      - Free notes. Set only when the line is created.
    type: str
notes:
  - The API sets O(member), O(chap), O(pool) and O(notes) only when it creates the line.
    When an existing line differs in one of them the task fails and names the field.
  - A new line must fit the member's package (its number of lines).
seealso:
  - module: muninet_plan
"""

EXAMPLES = r"""
- name: Ensure Jan Kowalski's DSL line
  muninet_subscriber:
    username: jan.kowalski
    member: alfa
    plan: dsl-2m
    password: "{{ vault_line_passwords['jan.kowalski'] }}"
    static_ip: 192.0.2.10
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Suspend an unpaid line
  muninet_subscriber:
    username: jan.kowalski
    status: suspended
    reason: unpaid since March
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
subscriber:
  description:
    - The line as the API returns it; in check mode the fields the task would set.
      Null when the line is absent.
  returned: success
  type: dict
  sample:
    username: jan.kowalski
    member: alfa
    plan: dsl-2m
    status: active
    static_ip: 192.0.2.10
    expires_on: null
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
    slug,
    text_or_none,
)

OPTIONAL_TEXTS = ("static_ip", "calling_station_id", "expires_on")


class Subscriber(Resource):
    kind = "subscriber"
    collection = "subscribers"
    key_field = "username"
    create_only = ("member", "chap", "pool", "notes")

    def key(self) -> str:
        return str(self.params["username"]).strip().lower()

    def view(self, current: JSON) -> JSON:
        # "expired" and "member-suspended" are derived from an active line's expiry and
        # its member; the status this module sets is the stored one.
        stored = "suspended" if current["status"] == "suspended" else "active"
        return {
            "username": current["username"],
            "member": current["member"],
            "plan": current["plan"],
            "status": stored,
            "chap": current["chap"],
            "static_ip": current["static_ip"],
            "pool": current["pool"],
            "calling_station_id": current["calling_station_id"],
            "expires_on": current["expires_on"],
            "notes": current["notes"],
        }

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["member"] is not None:
            wanted["member"] = slug(p["member"])
        if p["plan"] is not None:
            wanted["plan"] = p["plan"].strip().lower()
        for name in ("status", "chap"):
            if p[name] is not None:
                wanted[name] = p[name]
        if p["pool"] is not None:
            wanted["pool"] = text_or_none(p["pool"])
        for name in OPTIONAL_TEXTS:
            if p[name] is not None:
                wanted[name] = text_or_none(p[name])
        if p["notes"] is not None:
            wanted["notes"] = p["notes"].strip()
        return wanted

    def check_create(self, desired: JSON) -> None:
        missing = [name for name in ("password", "plan") if not self.params[name]]
        if missing:
            self.fail(f"{self.label()} does not exist: give {' and '.join(missing)} to create it")

    def create(self, client: Client, desired: JSON) -> JSON:
        body = {
            name: value for name, value in desired.items() if name != "status" and value is not None
        }
        body.update(username=self.key(), password=self.params["password"])
        created = client.send("POST", "/subscribers", body)
        if desired.get("status") == "suspended":
            created = client.send("PATCH", self.path(), self._status_change("suspended"))
        return created

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        body = dict(changes)
        if "status" in body:
            body.update(self._status_change(body["status"]))
        return client.send("PATCH", self.path(), body)

    def _status_change(self, status: str) -> JSON:
        change: JSON = {"status": status}
        if self.params["reason"] is not None:
            change["reason"] = self.params["reason"]
        return change


def main() -> None:
    spec = {
        "username": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "password": {"type": "str", "no_log": True},
        "member": {"type": "str"},
        "plan": {"type": "str"},
        "status": {"type": "str", "choices": ["active", "suspended"]},
        "reason": {"type": "str"},
        "chap": {"type": "bool"},
        "static_ip": {"type": "str"},
        "pool": {"type": "str"},
        "calling_station_id": {"type": "str"},
        "expires_on": {"type": "raw"},
        "notes": {"type": "str"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Subscriber(module))


if __name__ == "__main__":
    main()
