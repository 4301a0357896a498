"""Local delivery through Dovecot's LMTP socket (delivery.method = "lmtp").

Dovecot answers each recipient separately after DATA (RFC 2033) and only after it
has stored the message, so its 250 is as durable as our own Maildir commit.
"""

from __future__ import annotations

import smtplib

from mailhost.errors import DeliveryError, PermanentFailure, TemporaryFailure


def _failure(code: int, text: bytes) -> DeliveryError:
    message = text.decode(errors="replace")
    enhanced, _, rest = message.partition(" ")
    if not (enhanced[:1].isdigit() and enhanced.count(".") == 2):
        enhanced, rest = "", message
    kind = PermanentFailure if code >= 500 else TemporaryFailure
    return kind(code, rest, enhanced=enhanced)


def deliver(
    socket_path: str, mail_from: str, keys: list[str], data: bytes, timeout: float = 60
) -> dict[str, DeliveryError | None]:
    """Hand one message to Dovecot for several mailboxes; the outcome for each key."""
    outcome: dict[str, DeliveryError | None] = {}
    try:
        client = smtplib.LMTP(socket_path, timeout=timeout)
    except OSError as exc:
        failure = TemporaryFailure(451, f"LMTP unavailable: {exc}", enhanced="4.3.0")
        return dict.fromkeys(keys, failure)
    try:
        client.ehlo_or_helo_if_needed()
        utf8 = not all(k.isascii() for k in keys) or not mail_from.isascii()
        options = ["SMTPUTF8"] if utf8 and client.has_extn("smtputf8") else []
        code, text = client.mail(mail_from, options)
        if code != 250:
            return dict.fromkeys(keys, _failure(code, text))
        accepted = []
        for key in keys:
            code, text = client.rcpt(key)
            if code in (250, 251):
                accepted.append(key)
            else:
                outcome[key] = _failure(code, text)
        if not accepted:
            return outcome
        code, text = client.data(data)
        replies = [(code, text)] + [client.getreply() for _ in accepted[1:]]
        for key, (code, text) in zip(accepted, replies, strict=True):
            outcome[key] = None if code == 250 else _failure(code, text)
    except (OSError, smtplib.SMTPException, UnicodeEncodeError) as exc:
        failure = TemporaryFailure(451, f"LMTP delivery failed: {exc}", enhanced="4.3.0")
        for key in keys:
            outcome.setdefault(key, failure)
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()
    return outcome
