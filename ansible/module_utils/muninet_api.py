# Copyright: muninet developers
# GNU Affero General Public License v3.0 or later (see https://www.gnu.org/licenses/agpl-3.0.txt)
"""What the muninet_* modules share: the API client, value parsing and the ensure loop.

The modules run wherever Ansible runs them (often the control node with
`connection: local`, or the appliance itself), so this file uses only the standard
library (urllib, json, ssl) and Ansible's own `AnsibleModule`.

Every module follows one path, `ensure()`: read the object (GET), compare the fields the
task names with what the API returned, then write only the difference (PUT, PATCH or
POST) or nothing at all. Check mode stops before the write; `--diff` shows the managed
fields before and after, never a password (the API never returns one).
"""

from __future__ import annotations

import json
import re
import ssl
from typing import Any, Dict, NoReturn  # noqa: UP035 - see JSON below
from urllib.error import HTTPError, URLError
from urllib.parse import quote
from urllib.request import HTTPRedirectHandler, HTTPSHandler, Request, build_opener

from ansible.module_utils.basic import AnsibleModule, env_fallback

# typing.Dict, not dict[...]: targets may run Python 3.8, where dict is not subscriptable.
JSON = Dict[str, Any]  # noqa: UP006
API_PREFIX = "/api/v1"


def connection_argument_spec() -> JSON:
    """The options every muninet module takes to reach the API."""
    return {
        "api_url": {
            "type": "str",
            "required": True,
            "fallback": (env_fallback, ["MUNINET_API_URL"]),
        },
        "api_token": {
            "type": "str",
            "required": True,
            "no_log": True,
            "fallback": (env_fallback, ["MUNINET_API_TOKEN"]),
        },
        "validate_certs": {"type": "bool", "default": True},
        "ca_path": {"type": "path"},
        "timeout": {"type": "int", "default": 30},
    }


# -- the HTTP client ------------------------------------------------------------------------


class ApiError(Exception):
    """An answer that is not a success, with the API's RFC 9457 problem document."""

    def __init__(self, method: str, path: str, status: int, problem: JSON) -> None:
        super().__init__(f"{method} {path}: {status}")
        self.method = method
        self.path = path
        self.status = status
        self.problem = problem

    def message(self) -> str:
        """One line for the task's `msg`: what was refused, and every field's reason."""
        title = self.problem.get("title") or f"HTTP {self.status}"
        text = f"muninet API refused {self.method} {self.path}: {title} ({self.status})"
        errors = self.problem.get("errors")
        if isinstance(errors, list) and errors:
            details = "; ".join(
                f"{e.get('field') or '(body)'}: {e.get('detail', '')}"
                for e in errors
                if isinstance(e, dict)
            )
            return f"{text}: {details}"
        detail = self.problem.get("detail")
        return f"{text}: {detail}" if detail else text


class TaskError(Exception):
    """The task cannot be carried out as written; the message says why."""


class Unreachable(Exception):
    """No HTTP answer at all (DNS, refused connection, TLS, timeout)."""


class Client:
    """A bearer-token JSON client for /api/v1 on urllib."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        validate_certs: bool = True,
        ca_path: str | None = None,
        timeout: int = 30,
    ) -> None:
        base = url.strip().rstrip("/")
        if base.endswith(API_PREFIX):
            base = base[: -len(API_PREFIX)]
        if not re.match(r"^https?://", base):
            raise ValueError(f"api_url must start with https:// or http://, not {url!r}")
        self.base = base + API_PREFIX
        self.token = token
        self.timeout = timeout
        handlers: list[Any] = [_NoRedirect()]
        if base.startswith("https://"):
            try:
                context = ssl.create_default_context(cafile=ca_path)
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"ca_path {ca_path!r}: cannot use it: {error}") from None
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            handlers.append(HTTPSHandler(context=context))
        self.opener = build_opener(*handlers)

    def request(self, method: str, path: str, body: JSON | None = None) -> JSON | None:
        """The decoded JSON answer (None for 204); ApiError for any 4xx/5xx."""
        data = None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        # The URL is the configured API, checked to be http(s) in __init__: no file: or ftp:.
        request = Request(self.base + path, data=data, headers=headers, method=method)  # noqa: S310
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except HTTPError as error:
            raise ApiError(method, API_PREFIX + path, error.code, _problem(error)) from None
        except (URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise Unreachable(f"cannot reach the muninet API at {self.base}: {reason}") from None
        if not raw:
            return None
        try:
            decoded = json.loads(raw.decode("utf-8"))
        except ValueError:
            raise Unreachable(
                f"{self.base}{path} answered with something other than JSON: is api_url the "
                "muninet admin?"
            ) from None
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    def send(self, method: str, path: str, body: JSON | None = None) -> JSON:
        """A write that answers with the object it wrote."""
        answer = self.request(method, path, body)
        if answer is None:
            raise Unreachable(f"the muninet API answered {method} {path} without a body")
        return answer

    def get(self, path: str) -> JSON | None:
        """The object, or None when the API answers 404 (absent, or out of the token's reach)."""
        try:
            return self.request("GET", path)
        except ApiError as error:
            if error.status != 404:
                raise
            if not str(error.problem.get("type", "")).startswith("urn:muninet:problem:"):
                # Not the API's own answer: a wrong api_url must not look like "absent".
                error.problem["detail"] = f"no muninet API at {self.base}: check api_url"
                raise
            return None


class _NoRedirect(HTTPRedirectHandler):
    """Never follow a redirect: it would carry the token elsewhere, and drop a PUT's body."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


def _problem(error: HTTPError) -> JSON:
    try:
        body = json.loads(error.read().decode("utf-8"))
    except (ValueError, OSError):
        body = None
    if isinstance(body, dict):
        return body
    problem: JSON = {"title": str(error.reason or "error"), "status": error.code}
    location = error.headers.get("Location") if error.headers else None
    if 300 <= error.code < 400 and location:
        problem["detail"] = f"the server redirects to {location}: give that as api_url"
    return problem


def path_for(collection: str, key: str) -> str:
    """`/mailboxes/j%C3%B3zef@gmina.pl`: the key percent-encoded, '@' kept readable."""
    return f"/{collection}/{quote(key.strip(), safe='@+')}"


# -- values as the API understands them ----------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:bps|bit/s|b/s)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}


class BadValue(ValueError):
    """An option value the module can tell is wrong before asking the API."""


def parse_size(value: Any, option: str) -> int:
    """Bytes from 1073741824, "1G" or "512M" (binary units, as muninet and Dovecot count)."""
    if isinstance(value, bool):
        raise BadValue(f"{option}: not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise BadValue(f"{option}: a size must not be negative")
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise BadValue(f"{option}: not a size: {value!r} (use e.g. 500M, 2G)")
    number, unit = match.groups()
    return int(float(number) * _SIZE_UNITS[unit.upper()])


def parse_rate(value: Any, option: str) -> int:
    """Bit/s from 2000000, "2M" or "512k" (decimal units, as links are sold)."""
    if isinstance(value, bool):
        raise BadValue(f"{option}: not a rate: {value!r}")
    if isinstance(value, int):
        bps = value
    else:
        match = _RATE.match(str(value))
        if not match:
            raise BadValue(f"{option}: not a rate: {value!r} (use e.g. 512k, 2M)")
        number, unit = match.groups()
        bps = round(float(number) * _RATE_UNITS[unit.lower()])
    if bps < 0:
        raise BadValue(f"{option}: a rate must not be negative")
    return bps


def text_or_none(value: Any) -> str | None:
    """An optional text or date option: '' (or 'none') clears it, a YAML date becomes ISO."""
    text = str(value).strip()
    return None if text.lower() in {"", "none", "null"} else text


def slug(value: Any) -> str:
    return str(value).strip().lower()


# -- the ensure loop -----------------------------------------------------------------------


class Resource:
    """One kind of muninet object as a module manages it.

    A subclass names its API collection, the fields it shows in diffs and compares, the
    fields the API can set only when it creates the object, and how to create, update
    and delete. `view()` and `desired()` must speak the same normal form, so that an
    object that already matches compares equal and nothing is written.
    """

    kind = "object"  # the result key, e.g. "mailbox"
    collection = ""  # the API collection, e.g. "mailboxes"
    key_field = ""  # the field that names the object, e.g. "address"
    create_only: tuple[str, ...] = ()  # fields the API takes only on creation

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params: JSON = module.params

    # What a subclass provides -------------------------------------------------------------
    def key(self) -> str:
        raise NotImplementedError

    def view(self, current: JSON) -> JSON:
        """The managed fields of an API object, in the module's normal form."""
        raise NotImplementedError

    def desired(self) -> JSON:
        """The fields the task sets (options left out are not managed), normalised."""
        raise NotImplementedError

    def create(self, client: Client, desired: JSON) -> JSON:
        raise NotImplementedError

    def update(self, client: Client, current: JSON, changes: JSON) -> JSON:
        raise NotImplementedError

    def delete(self, client: Client, current: JSON) -> None:
        client.request("DELETE", self.path())

    def check_create(self, desired: JSON) -> None:
        """Fail before anything is written when a new object lacks what creation needs."""

    def same(self, name: str, current: Any, wanted: Any) -> bool:
        """Whether a stored value already is what the task asks for."""
        return bool(current == wanted)

    def must_send(self) -> bool:
        """True when an update must reach the API even though no compared field differs
        (a password with update_password=always: only the API can compare it)."""
        return False

    # Shared ---------------------------------------------------------------------------------
    def path(self) -> str:
        return path_for(self.collection, self.key())

    def label(self) -> str:
        return f"{self.kind} {self.key()!r}"

    def fail(self, msg: str) -> NoReturn:
        raise TaskError(msg)


def client_from(module: AnsibleModule) -> Client:
    params = module.params
    try:
        return Client(
            params["api_url"],
            params["api_token"],
            validate_certs=params["validate_certs"],
            ca_path=params.get("ca_path"),
            timeout=params["timeout"],
        )
    except ValueError as error:
        raise TaskError(str(error)) from None


def ensure(module: AnsibleModule, resource: Resource) -> None:
    """Bring one object to the task's state and exit the module with the result."""
    try:
        result = _ensure(module, resource, client_from(module))
    except ApiError as error:
        module.fail_json(msg=error.message(), status=error.status, problem=error.problem)
    except (TaskError, Unreachable, BadValue) as error:
        module.fail_json(msg=str(error))
    else:
        module.exit_json(**result)


def _ensure(module: AnsibleModule, resource: Resource, client: Client) -> JSON:
    """The module's result: changed, the diff and the object (None when absent)."""
    current = client.get(resource.path())
    if (module.params.get("state") or "present") == "absent":
        return _remove(module.check_mode, resource, client, current)
    desired = resource.desired()
    if current is None:
        return _create(module.check_mode, resource, client, desired)
    return _update(module.check_mode, resource, client, current, desired)


def _remove(check_mode: bool, resource: Resource, client: Client, current: JSON | None) -> JSON:
    if current is None:
        return {"changed": False, resource.kind: None}
    before = resource.view(current)
    if not check_mode:
        resource.delete(client, current)
    return {"changed": True, "diff": {"before": before, "after": {}}, resource.kind: None}


def _create(check_mode: bool, resource: Resource, client: Client, desired: JSON) -> JSON:
    resource.check_create(desired)
    if check_mode:
        preview = {resource.key_field: resource.key(), **desired}
        return {"changed": True, "diff": {"before": {}, "after": preview}, resource.kind: preview}
    created = resource.create(client, desired)
    diff = {"before": {}, "after": resource.view(created)}
    return {"changed": True, "diff": diff, resource.kind: created}


def _update(
    check_mode: bool, resource: Resource, client: Client, current: JSON, desired: JSON
) -> JSON:
    before = resource.view(current)
    changes = {
        name: value
        for name, value in desired.items()
        if not resource.same(name, before.get(name), value)
    }
    fixed = sorted(name for name in changes if name in resource.create_only)
    if fixed:
        shown = ", ".join(f"{name} (is {before.get(name)!r})" for name in fixed)
        raise TaskError(
            f"{resource.label()} exists and the API cannot change {shown}: change it in the "
            "admin, or make the task match"
        )
    if not changes and not resource.must_send():
        return {"changed": False, resource.kind: current}
    if check_mode:
        # A password under update_password=always cannot be compared without writing it.
        after = {**before, **changes}
        diff = {"before": before, "after": after}
        return {"changed": bool(changes), "diff": diff, resource.kind: after}
    updated = resource.update(client, current, changes)
    return {
        # The API's answer decides: a password that matched, or a value that the API
        # normalises to what was there, is no change.
        "changed": _stable(updated) != _stable(current),
        "diff": {"before": before, "after": resource.view(updated)},
        resource.kind: updated,
    }


def _stable(obj: JSON) -> JSON:
    """An object without the counters that other writers may move meanwhile."""
    return {
        k: v for k, v in obj.items() if k not in {"usage", "mailboxes", "aliases", "subscribers"}
    }
