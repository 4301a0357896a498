#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a muninet alias (or a domain's catch-all)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_alias
short_description: Ensure a mail alias forwards to the given destinations on a muninet appliance
description:
  - Creates an alias, sets its destinations or removes it through muninet's JSON API
    (C(/api/v1/aliases)). V(@domain) as the source is the domain's catch-all.
  - Idempotent. The alias is read first and written only when its destinations differ
    (compared without regard to letter case, as muninet compares addresses).
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
  source:
    description:
      - The alias address in a hosted domain, or V(@domain) for the domain's catch-all.
    type: str
    required: true
  state:
    description:
      - V(present) creates the alias or sets its destinations, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  destinations:
    description:
      - Where mail to the alias goes, in this order. Hosted mailboxes or aliases (which
        must exist) and external addresses. Required when the alias is created.
    type: list
    elements: str
  member:
    description:
      - The owning member's slug, needed for an alias on the shared domain. Cannot be
        changed on an existing alias.
    type: str
notes:
  - The API refuses aliases that would loop back to themselves, and hosted destinations
    that do not exist; the task fails with its reason.
seealso:
  - module: muninet_mailbox
"""

EXAMPLES = r"""
- name: Forward the contact address to the office and the mayor
  muninet_alias:
    source: kontakt@gmina-alfa.pl
    destinations:
      - biuro@gmina-alfa.pl
      - wojt@gmina-alfa.pl
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"

- name: Catch everything else addressed to the domain
  muninet_alias:
    source: "@gmina-alfa.pl"
    destinations: [biuro@gmina-alfa.pl]
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
alias:
  description:
    - The alias as the API returns it; in check mode the fields the task would set.
      Null when the alias is absent.
  returned: success
  type: dict
  sample:
    source: kontakt@gmina-alfa.pl
    catch_all: false
    member: alfa
    destinations: [biuro@gmina-alfa.pl, wojt@gmina-alfa.pl]
    enabled: true
status:
  description: The HTTP status of a refused request.
  returned: failure
  type: int
problem:
  description: The API's RFC 9457 problem document of a refused request.
  returned: failure
  type: dict
"""

from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible.module_utils.muninet_api import (
    JSON,
    Client,
    Resource,
    connection_argument_spec,
    ensure,
    slug,
)


class Alias(Resource):
    kind = "alias"
    collection = "aliases"
    key_field = "source"
    create_only = ("member",)

    def key(self) -> str:
        return str(self.params["source"]).strip()

    def view(self, current: JSON) -> JSON:
        return {
            "source": current["source"],
            "member": current["member"],
            "destinations": list(current["destinations"]),
        }

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["member"] is not None:
            wanted["member"] = slug(p["member"])
        if p["destinations"] is not None:
            wanted["destinations"] = [d.strip() for d in p["destinations"]]
        return wanted

    def same(self, name: str, current: Any, wanted: Any) -> bool:
        if name == "destinations" and isinstance(current, list):
            return _folded(current) == _folded(wanted)
        return bool(current == wanted)

    def check_create(self, desired: JSON) -> None:
        if not desired.get("destinations"):
            self.fail(f"{self.label()} does not exist: give its destinations to create it")

    def create(self, client: Client, desired: JSON) -> JSON:
        return client.send("PUT", self.path(), desired)

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        return client.send("PUT", self.path(), {"destinations": changes["destinations"]})


def _folded(addresses: list[str]) -> list[str]:
    """The destinations as muninet keeps them: case-insensitive, first occurrence wins."""
    seen: list[str] = []
    for address in addresses:
        folded = address.strip().lower()
        if folded not in seen:
            seen.append(folded)
    return seen


def main() -> None:
    spec = {
        "source": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "destinations": {"type": "list", "elements": "str"},
        "member": {"type": "str"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Alias(module))


if __name__ == "__main__":
    main()
