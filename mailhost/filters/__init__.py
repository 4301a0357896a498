"""Content filters run on every message after DATA and before `250`: ClamAV, rspamd.

pipeline = build_pipeline(settings)          # once per process, after any fork
result = await pipeline.run(MessageInfo(...))
if not result.accepted:
    return result.reply                      # "554 5.7.1 Virus found: ..." / "451 ..."
data = result.apply(data)                    # our headers on top, forged ones removed
"""

from __future__ import annotations

from mailhost.filters.base import (
    Action,
    DomainFiltersLookup,
    Filter,
    MessageInfo,
    Pipeline,
    PipelineResult,
    SocketAddress,
    Verdict,
)
from provisioning.settings import Settings

__all__ = [
    "Action",
    "DomainFiltersLookup",
    "Filter",
    "MessageInfo",
    "Pipeline",
    "PipelineResult",
    "SocketAddress",
    "Verdict",
    "build_pipeline",
]


def build_pipeline(
    settings: Settings,
    *,
    concurrent: bool = True,
    domain_filters: DomainFiltersLookup | None = None,
) -> Pipeline:
    """The filters the settings enable: antivirus, sender authentication, spam.

    Makes no connection: a daemon that is down shows up per message, as its
    `on_error` setting says. Build it in the process (and event loop) that uses it.
    `domain_filters` looks up the recipient domains' own spam thresholds and virus
    action (the engine's `Engine.domain_filters`); without it the global ones apply.
    The filters run at once on each message (`concurrent`), with the answer of the
    sequential pipeline (see `Pipeline`).
    """
    from mailhost.filters.auth import SenderAuthFilter
    from mailhost.filters.clamav import ClamavFilter
    from mailhost.filters.spam import SpamFilter

    filters: list[Filter] = []
    strip: list[str] = []
    if settings.antivirus.enabled:
        filters.append(ClamavFilter.from_settings(settings, domain_filters=domain_filters))
        strip += ClamavFilter.OWNED_HEADERS
    if settings.sender_auth.enabled:
        filters.append(SenderAuthFilter.from_settings(settings))
        strip += SenderAuthFilter.OWNED_HEADERS
    if settings.spam.enabled:
        filters.append(SpamFilter.from_settings(settings, domain_filters=domain_filters))
        strip += SpamFilter.OWNED_HEADERS
    return Pipeline(filters, concurrent=concurrent, strip_headers=strip)
