"""The options every muninet module shares: how to reach muninet's JSON API.

Each module's DOCUMENTATION names this fragment (`extends_documentation_fragment:
[muninet_api]`); ansible.cfg points `doc_fragment_plugins` here. The options' argument
spec is in module_utils/muninet_api.py.
"""


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  api_url:
    description:
      - The muninet admin's base URL, for example V(https://admin.example.org);
        C(/api/v1) is added.
      - Read from E(MUNINET_API_URL) when not given.
    type: str
    required: true
  api_token:
    description:
      - A token from C(muninet token create --admin USERNAME --name ansible).
        A superadmin's token reaches every member, a member admin's only its own.
      - Read from E(MUNINET_API_TOKEN) when not given.
    type: str
    required: true
  validate_certs:
    description:
      - Verify the server's TLS certificate. V(false) only for tests.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify the server with, instead of the system's.
    type: path
  timeout:
    description:
      - Seconds to wait for each answer of the API.
    type: int
    default: 30
"""
