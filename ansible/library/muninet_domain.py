#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a mail domain hosted by muninet."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_domain
short_description: Ensure a mail domain is hosted (or not) on a muninet appliance
description:
  - Hosts a domain for a member, or as the shared domain, through muninet's JSON API
    (C(/api/v1/domains)); or stops hosting an empty one.
  - Idempotent. The domain is read first and created only when it is missing.
  - Needs a superadmin's token to add or remove a domain.
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
      - The domain, in Unicode or punycode (V(gmina-alfa.pl), V(żółw.pl)).
    type: str
    required: true
  state:
    description:
      - V(present) hosts the domain, V(absent) stops hosting it. The API refuses to remove
        a domain that still holds mailboxes or aliases.
    type: str
    choices: [present, absent]
    default: present
  member:
    description:
      - The slug of the member that owns the domain.
      - Creating a domain needs either O(member) or O(shared=true).
    type: str
  shared:
    description:
      - V(true) for the association's shared domain, where members get addresses such as
        C(slug@shared.example); no owning member.
    type: bool
  utf8_local_parts:
    description:
      - Allow non-ASCII local parts (C(józef@...)) in this domain (SMTPUTF8).
    type: bool
notes:
  - The API sets the owner and O(utf8_local_parts) only when it adds the domain. When an
    existing domain differs the task fails and names the field.
seealso:
  - module: muninet_member
  - module: muninet_mailbox
"""

EXAMPLES = r"""
- name: Host the municipality's own domain
  muninet_domain:
    name: gmina-alfa.pl
    member: alfa
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Host the association's shared domain
  muninet_domain:
    name: zwiazek.example.org
    shared: true
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
domain:
  description:
    - The domain as the API returns it; in check mode the fields the task would set.
      Null when the domain is absent.
  returned: success
  type: dict
  sample:
    name: gmina-alfa.pl
    ascii_name: gmina-alfa.pl
    shared: false
    member: alfa
    utf8_local_parts: false
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
)


class Domain(Resource):
    kind = "domain"
    collection = "domains"
    key_field = "name"
    create_only = ("member", "shared", "utf8_local_parts")

    def key(self) -> str:
        return str(self.params["name"]).strip()

    def view(self, current: JSON) -> JSON:
        return {
            "name": current["name"],
            "member": current["member"],
            "shared": current["shared"],
            "utf8_local_parts": current["utf8_local_parts"],
        }

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["member"] is not None:
            wanted["member"] = slug(p["member"])
        if p["shared"] is not None:
            wanted["shared"] = p["shared"]
        if p["utf8_local_parts"] is not None:
            wanted["utf8_local_parts"] = p["utf8_local_parts"]
        return wanted

    def check_create(self, desired: JSON) -> None:
        shared = desired.get("shared")
        if shared and desired.get("member"):
            self.fail("a shared domain has no member: give member or shared=true, not both")
        if not shared and not desired.get("member"):
            self.fail(
                f"{self.label()} is not hosted: give the member that owns it, "
                "or shared=true for the shared domain"
            )

    def create(self, client: Client, desired: JSON) -> JSON:
        body: JSON = {"name": self.key(), "member": desired.get("member")}
        if "utf8_local_parts" in desired:
            body["utf8_local_parts"] = desired["utf8_local_parts"]
        return client.send("POST", "/domains", body)

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        # Every managed field is create-only: ensure() fails before it gets here.
        return current


def main() -> None:
    spec = {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "member": {"type": "str"},
        "shared": {"type": "bool"},
        "utf8_local_parts": {"type": "bool"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Domain(module))


if __name__ == "__main__":
    main()
