#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a muninet mailbox through the JSON API."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_mailbox
short_description: Ensure a mailbox exists (or not) on a muninet appliance
description:
  - Creates, changes or removes a mailbox through muninet's JSON API (C(/api/v1/mailboxes)).
  - Idempotent. The mailbox is read first and written only when a field the task sets differs.
  - Options left out are not managed; the mailbox keeps what it has.
  - Passwords are never printed, logged or shown in diffs; the API stores only a hash.
author: muninet developers
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - muninet_api
attributes:
  check_mode:
    support: full
    details: A password under O(update_password=always) cannot be compared without writing
      it, so check mode does not report it as a change.
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  address:
    description:
      - The mailbox address, in a hosted domain. A Unicode domain may be given as such or
        in punycode.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the mailbox, V(absent) removes its record.
    type: str
    choices: [present, absent]
    default: present
  password:
    description:
      - The password. Required when the mailbox is created.
      - Set on an existing mailbox only with O(update_password=always).
    type: str
  update_password:
    description:
      - V(on_create) sets the password only when the mailbox is created, so that users may
        change their own password afterwards.
      - V(always) makes the mailbox's password O(password); the API changes it only when
        it differs, so a matching password reports no change.
    type: str
    choices: [on_create, always]
    default: on_create
  member:
    description:
      - The owning member's slug. Needed for an address on the shared domain; otherwise
        the domain's member (or the token's member) owns it.
      - Cannot be changed on an existing mailbox.
    type: str
  display_name:
    description:
      - The name shown in the directory. Set when the mailbox is created; the API cannot
        change it afterwards.
    type: str
  quota_bytes:
    description:
      - The mailbox's quota, in bytes or as a size such as V(500M) or V(2G) (binary units).
      - Must fit the member's package.
    type: raw
  enabled:
    description:
      - Whether the mailbox may log in and receive mail.
    type: bool
notes:
  - Removing a mailbox removes its record (and its logins); muninet's own maintenance
    removes the stored mail.
seealso:
  - module: muninet_alias
  - module: muninet_domain
"""

EXAMPLES = r"""
- name: Ensure the office mailbox exists with a 2 GiB quota
  muninet_mailbox:
    address: biuro@gmina-alfa.pl
    password: "{{ vault_biuro_password }}"
    display_name: Biuro Gminy
    quota_bytes: 2G
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Keep a service mailbox's password as the vault says
  muninet_mailbox:
    address: skaner@gmina-alfa.pl
    password: "{{ vault_scanner_password }}"
    update_password: always
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Disable a mailbox
  muninet_mailbox:
    address: stary@gmina-alfa.pl
    enabled: false
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Remove a mailbox
  muninet_mailbox:
    address: stary@gmina-alfa.pl
    state: absent
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
mailbox:
  description:
    - The mailbox as the API returns it (after the change); in check mode the fields the
      task would set. Null when the mailbox is absent.
  returned: always
  type: dict
  sample:
    address: biuro@gmina-alfa.pl
    login: biuro@gmina-alfa.pl
    member: alfa
    display_name: Biuro Gminy
    quota_bytes: 2147483648
    enabled: true
    password_scheme: ARGON2ID
    created_at: "2026-03-01T10:00:00+00:00"
    updated_at: "2026-03-01T10:00:00+00:00"
status:
  description: The HTTP status of a refused request.
  returned: failure
  type: int
  sample: 409
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
    parse_size,
    slug,
)


class Mailbox(Resource):
    kind = "mailbox"
    collection = "mailboxes"
    key_field = "address"
    create_only = ("member", "display_name")

    def key(self) -> str:
        return str(self.params["address"]).strip()

    def view(self, current: JSON) -> JSON:
        return {
            "address": current["address"],
            "member": current["member"],
            "display_name": current["display_name"],
            "quota_bytes": current["quota_bytes"],
            "enabled": current["enabled"],
        }

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["member"] is not None:
            wanted["member"] = slug(p["member"])
        if p["display_name"] is not None:
            wanted["display_name"] = p["display_name"].strip()
        if p["quota_bytes"] is not None:
            wanted["quota_bytes"] = parse_size(p["quota_bytes"], "quota_bytes")
        if p["enabled"] is not None:
            wanted["enabled"] = p["enabled"]
        return wanted

    def check_create(self, desired: JSON) -> None:
        if not self.params["password"]:
            self.fail(f"{self.label()} does not exist: give a password to create it")

    def create(self, client: Client, desired: JSON) -> JSON:
        body = {**desired, "password": self.params["password"]}
        return client.send("PUT", self.path(), body)

    def must_send(self) -> bool:
        always = self.params["update_password"] == "always"  # noqa: S105 - a choice, not a secret
        return always and bool(self.params["password"])

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        body = dict(changes)
        if self.must_send():
            body["password"] = self.params["password"]
        return client.send("PUT", self.path(), body)


def main() -> None:
    spec = {
        "address": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "password": {"type": "str", "no_log": True},
        "update_password": {
            "type": "str",
            "default": "on_create",
            "choices": ["on_create", "always"],
            "no_log": False,
        },
        "member": {"type": "str"},
        "display_name": {"type": "str"},
        "quota_bytes": {"type": "raw"},
        "enabled": {"type": "bool"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Mailbox(module))


if __name__ == "__main__":
    main()
