#!/usr/bin/python
# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""Ansible module: a muninet member (municipality, school, ...) and its package."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: muninet_member
short_description: Ensure a member and its package exist on a muninet appliance
description:
  - Creates a member (a municipality, school, library, ...) through muninet's JSON API
    (C(/api/v1/members)), or brings its package (mailboxes, mail quota, subscriber lines)
    to the given limits.
  - Idempotent. The member is read first and written only when a field the task sets differs.
  - Options left out are not managed.
  - Needs a superadmin's token to create a member or change its package.
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
  slug:
    description:
      - The member's short name (lower-case ASCII letters, digits and hyphens), e.g. V(glusk).
    type: str
    required: true
  state:
    description:
      - Only V(present). The API does not remove members; suspend or remove them in the admin.
    type: str
    choices: [present]
    default: present
  name:
    description:
      - The member's full name. Required when the member is created.
    type: str
  kind:
    description:
      - What the member is.
    type: str
    choices: [municipality, county, school, library, culture, association, other]
  max_mailboxes:
    description:
      - How many mailboxes the package allows.
    type: int
  mail_quota_bytes:
    description:
      - The package's total mail quota, in bytes or as a size such as V(50G) (binary units).
    type: raw
  max_lines:
    description:
      - How many subscriber lines (RADIUS logins) the package allows.
    type: int
  contact_name:
    description:
      - The contact person.
    type: str
  contact_email:
    description:
      - The contact's e-mail address.
    type: str
  contact_phone:
    description:
      - The contact's telephone number.
    type: str
  contract_number:
    description:
      - The contract's number.
    type: str
  contract_start:
    description:
      - The contract's first day (V(2026-01-01)); an empty string for none.
    type: raw
  contract_end:
    description:
      - The contract's last day; an empty string for none.
    type: raw
notes:
  - The API sets the name, kind, contact and contract only when it creates the member.
    When an existing member differs in one of them the task fails and names the field,
    rather than reporting a state it did not reach.
  - A package cannot be lowered below what the member already uses; the task fails with
    the API's explanation.
seealso:
  - module: muninet_domain
"""

EXAMPLES = r"""
- name: Ensure the municipality of Alfa is a member with its package
  muninet_member:
    slug: alfa
    name: Gmina Alfa
    kind: municipality
    max_mailboxes: 50
    mail_quota_bytes: 100G
    max_lines: 20
    contact_email: sekretariat@gmina-alfa.pl
    contract_start: "2026-01-01"
    api_url: https://admin.example.org
    api_token: "{{ vault_muninet_token }}"
"""

RETURN = r"""
member:
  description:
    - The member as the API returns it, with its package and what it uses; in check mode
      the fields the task would set.
  returned: success
  type: dict
  sample:
    slug: alfa
    name: Gmina Alfa
    kind: municipality
    package: {max_mailboxes: 50, mail_quota_bytes: 107374182400, max_lines: 20}
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
    parse_size,
    slug,
    text_or_none,
)

PACKAGE = ("max_mailboxes", "mail_quota_bytes", "max_lines")
TEXTS = ("contact_name", "contact_email", "contact_phone", "contract_number")


class Member(Resource):
    kind = "member"
    collection = "members"
    key_field = "slug"
    create_only = ("name", "kind", *TEXTS, "contract_start", "contract_end")

    def key(self) -> str:
        return slug(self.params["slug"])

    def view(self, current: JSON) -> JSON:
        contact = current.get("contact") or {}
        contract = current.get("contract") or {}
        package = current.get("package") or {}
        return {
            "slug": current["slug"],
            "name": current["name"],
            "kind": current["kind"],
            **{name: package.get(name) for name in PACKAGE},
            "contact_name": contact.get("name", ""),
            "contact_email": contact.get("email", ""),
            "contact_phone": contact.get("phone", ""),
            "contract_number": contract.get("number", ""),
            "contract_start": contract.get("start"),
            "contract_end": contract.get("end"),
        }

    def desired(self) -> JSON:
        p = self.params
        wanted: JSON = {}
        if p["name"] is not None:
            wanted["name"] = p["name"].strip()
        if p["kind"] is not None:
            wanted["kind"] = p["kind"]
        for name in ("max_mailboxes", "max_lines"):
            if p[name] is not None:
                wanted[name] = p[name]
        if p["mail_quota_bytes"] is not None:
            wanted["mail_quota_bytes"] = parse_size(p["mail_quota_bytes"], "mail_quota_bytes")
        for name in TEXTS:
            if p[name] is not None:
                wanted[name] = p[name].strip()
        for name in ("contract_start", "contract_end"):
            if p[name] is not None:
                wanted[name] = text_or_none(p[name])
        return wanted

    def check_create(self, desired: JSON) -> None:
        if not desired.get("name"):
            self.fail(f"{self.label()} does not exist: give its name to create it")

    def create(self, client: Client, desired: JSON) -> JSON:
        return client.send("POST", "/members", {"slug": self.key(), **desired})

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        package = {name: changes[name] for name in PACKAGE if name in changes}
        return client.send("PATCH", f"{self.path()}/package", package)


def main() -> None:
    spec = {
        "slug": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present"]},
        "name": {"type": "str"},
        "kind": {
            "type": "str",
            "choices": [
                "municipality",
                "county",
                "school",
                "library",
                "culture",
                "association",
                "other",
            ],
        },
        "max_mailboxes": {"type": "int"},
        "mail_quota_bytes": {"type": "raw"},
        "max_lines": {"type": "int"},
        "contact_name": {"type": "str"},
        "contact_email": {"type": "str"},
        "contact_phone": {"type": "str"},
        "contract_number": {"type": "str"},
        "contract_start": {"type": "raw"},
        "contract_end": {"type": "raw"},
        **connection_argument_spec(),
    }
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    ensure(module, Member(module))


if __name__ == "__main__":
    main()
